"""Parts that only save: further model files a run writes beside model.keras.

"auxiliary_bn_model" (train.py ``--save-bn adv``): with dual BN, model-adv-bn.keras, a plain model with
the auxiliary (adversarial) batch-norm statistics, saved whenever model.keras is.
"""
from __future__ import annotations

from training.parts import Hook, register_part


@register_part("hook", "auxiliary_bn_model")
class AuxiliaryBatchNormModel(Hook):
    """Saves ``filename``: the model with dual BN's auxiliary statistics, as plain Keras."""

    after_update = False  # takes no part in the step

    def __init__(self, filename: str = "model-adv-bn.keras"):
        if not isinstance(filename, str) or not filename.endswith(".keras") or "/" in filename:
            raise ValueError(f"`filename` is a .keras file name in the run folder. Received: filename={filename!r}")
        self.filename = filename

    def checkpoints(self, base) -> list:
        from models.plain import plain_model
        from models.routes import has_routes, to_single_bn
        from training.fit import Checkpoint

        if not has_routes(base):
            raise ValueError(f"{self.filename} holds dual BN's auxiliary statistics: the model needs --dual-bn "
                             "(or --advprop)")
        return [Checkpoint(base, self.filename, export=lambda model: plain_model(to_single_bn(model, "auxiliary")))]
