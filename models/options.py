"""The injectable options every zoo builder takes: ``norm_layer``, ``conv_constraint``, ``residual_merge``.

As timm threads ``norm_layer`` through its models, a variant of a zoo model is a keyword, not a copy:

    models.build("resnet18_maxpool", norm_layer=DualBatchNormalization)        # dual BN (models.routes)
    models.build("bravonet_v3", conv_constraint=ParsevalConstraint(beta=0.01),
                 residual_merge="convex")                                       # a Parseval network

- ``norm_layer``: a factory ``norm_layer(name=...) -> keras.layers.Layer`` called once per norm layer,
  or a name from NORM_LAYERS (JSON-friendly, for run configs). The default, ``batch_norm``, is a
  BatchNormalization with the zoo's momentum 0.9; passing ``keras.layers.BatchNormalization`` itself
  gives Keras' default momentum 0.99 (see models.layers.BATCH_NORM_MOMENTUM for why the zoo avoids it).
- ``conv_constraint``: a ``keras.constraints.Constraint``, None, "parseval" (ParsevalConstraint()) or a
  serialized constraint (the dict ``keras.constraints.serialize`` gives, JSON-friendly), set as
  ``kernel_constraint`` of every Conv2D and Dense layer the builder makes.
- ``residual_merge``: "add" (keras.layers.Add) or "convex" (ConvexCombination) for residual merges.
Every builder takes all three, so one set of options (say, a Parseval network's constraint and convex
merges) applies to any zoo model; where a network has no norm layer or no residual merge of its own,
the option is checked and changes nothing (each module's docstring says which).
Every layer these create is a registered serializable class, so models reload with ``safe_mode=True``.
"""
from __future__ import annotations

import keras

from models.layers import BATCH_NORM_MOMENTUM
from models.parseval import ConvexCombination, ParsevalConstraint
from models.routes import DualBatchNormalization

RESIDUAL_MERGES = ("add", "convex")


def batch_norm(name=None) -> keras.layers.Layer:
    """The zoo's default norm layer: BatchNormalization with momentum 0.9."""
    return keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=name)


NORM_LAYERS = {"batch_norm": batch_norm, "dual_batch_norm": DualBatchNormalization}
CONSTRAINTS = {"parseval": ParsevalConstraint}


def norm_layer_factory(norm_layer):
    """``norm_layer`` as a factory ``(name=...) -> Layer``; a name from NORM_LAYERS is looked up."""
    if isinstance(norm_layer, str) and norm_layer in NORM_LAYERS:
        return NORM_LAYERS[norm_layer]
    if callable(norm_layer) and not isinstance(norm_layer, str):
        return norm_layer
    raise ValueError(f"norm_layer must be a layer factory or one of {tuple(NORM_LAYERS)}. "
                     f"Received: norm_layer={norm_layer!r}")


def kernel_constraint(conv_constraint):
    """``conv_constraint`` as a keras Constraint or None; "parseval" makes a ParsevalConstraint(), and a
    dict is read back with ``keras.constraints.get`` (the form run configs store)."""
    if conv_constraint is None or isinstance(conv_constraint, keras.constraints.Constraint):
        return conv_constraint
    if isinstance(conv_constraint, str) and conv_constraint in CONSTRAINTS:
        return CONSTRAINTS[conv_constraint]()
    if isinstance(conv_constraint, dict):
        try:
            return keras.constraints.get(conv_constraint)
        except (ValueError, TypeError):
            pass  # the one-line error below names the value
    raise ValueError(f"conv_constraint must be None, a keras.constraints.Constraint, its serialized dict or one "
                     f"of {tuple(CONSTRAINTS)}. Received: conv_constraint={conv_constraint!r}")


def check_residual_merge(residual_merge) -> str:
    if residual_merge not in RESIDUAL_MERGES:
        raise ValueError(f"residual_merge must be one of {RESIDUAL_MERGES}. "
                         f"Received: residual_merge={residual_merge!r}")
    return residual_merge


def merge(tensors, residual_merge, name):
    """Sum (``"add"``, layer ``{name}_add``) or convex combination (``"convex"``, ``{name}_convex``)."""
    if residual_merge == "convex":
        return ConvexCombination(name=f"{name}_convex")(tensors)
    return keras.layers.Add(name=f"{name}_add")(tensors)


def injected(norm_layer, conv_constraint, residual_merge) -> dict:
    """Validate the injectable options; return them resolved as keyword arguments for a builder's body."""
    return {"norm_layer": norm_layer_factory(norm_layer), "conv_constraint": kernel_constraint(conv_constraint),
            "residual_merge": check_residual_merge(residual_merge)}
