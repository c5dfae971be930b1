"""The seeds' recipes: how each model in the zoo was trained, by model name.

A recipe is the full set of hyper-parameters `train.py` needs; every field can be
overridden from the command line. Where a seed report is silent the value chosen here
is listed in the recipe's ``chosen`` tuple, so a comparison table can say which numbers
come from the report and which from this project.
"""
from __future__ import annotations

import dataclasses

from common import checks


@dataclasses.dataclass(frozen=True)
class Recipe:
    model: str
    augment: str = "none"
    image_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 100
    # EarlyStopping on val_accuracy; 0 turns it off.
    early_stopping_patience: int = 10
    # ReduceLROnPlateau on val_accuracy; factor 1.0 turns it off.
    reduce_lr_factor: float = 0.316
    reduce_lr_patience: int = 5
    # Step decay: the learning rate is multiplied by step_decay_factor every step_decay_epochs epochs (0: off).
    step_decay_epochs: int = 0
    step_decay_factor: float = 0.1
    # A multi-phase schedule from training.phases (e.g. "marvel5"); None trains in one phase.
    phases: str | None = None
    # The seed's reported result, for side-by-side tables (None: not reported).
    reported_val_accuracy: float | None = None
    reported_train_hours: float | None = None
    source: str = ""
    chosen: tuple = ()

    def __post_init__(self):
        # A recipe from a flag, an --hparams file or a run's config.json: nonsense fails here, before anything
        # is written (a NaN learning rate would train a NaN model and exit 0).
        checks.positive_int("image_size", self.image_size)
        checks.positive_real("learning_rate", self.learning_rate)
        checks.positive_int("batch_size", self.batch_size)
        checks.positive_int("epochs", self.epochs)
        checks.non_negative_int("early_stopping_patience", self.early_stopping_patience)
        checks.real_in_range("reduce_lr_factor", self.reduce_lr_factor, 0.0, 1.0, low_open=True)
        checks.non_negative_int("reduce_lr_patience", self.reduce_lr_patience)
        checks.non_negative_int("step_decay_epochs", self.step_decay_epochs)
        checks.real_in_range("step_decay_factor", self.step_decay_factor, 0.0, 1.0, low_open=True)
        if not isinstance(self.optimizer, str) or not isinstance(self.augment, str):
            raise ValueError(f"optimizer and augment are names. Received: optimizer={self.optimizer!r}, "
                             f"augment={self.augment!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CS182 = "CS182 Tiny ImageNet report"
_CONVENGERS = "Convengers Tiny ImageNet report"
# Convengers' fine-tuning recipe: Adam, 20 epochs, learning rate /10 every 7 epochs, batch 64.
_TRANSFER = dict(optimizer="adam", learning_rate=1e-4, batch_size=64, epochs=20, early_stopping_patience=0,
                 reduce_lr_factor=1.0, step_decay_epochs=7, step_decay_factor=0.1, source=_CONVENGERS,
                 chosen=("learning_rate",))

_RECIPES = {
    recipe.model: recipe
    for recipe in (
        Recipe("alphanet_v1", augment="A", epochs=300, early_stopping_patience=0, reduce_lr_factor=1.0,
               source=_CS182, chosen=("augment", "batch_size")),
        Recipe("alphanet_v2", augment="B", early_stopping_patience=15, reduce_lr_factor=0.1,
               reduce_lr_patience=10, source=_CS182, chosen=("augment", "batch_size", "epochs")),
        Recipe("alphanet_v3", augment="C", image_size=72, early_stopping_patience=15, reduce_lr_factor=0.1,
               reduce_lr_patience=10, source=_CS182, chosen=("augment", "batch_size", "epochs")),
        Recipe("alphanet_v4", augment="C", early_stopping_patience=10, reduce_lr_factor=0.316,
               reduce_lr_patience=5, source=_CS182, chosen=("augment", "batch_size", "epochs")),
        Recipe("bravonet_v1", augment="C", image_size=72, early_stopping_patience=15, reduce_lr_factor=0.1,
               reduce_lr_patience=10, source=_CS182, chosen=("augment", "batch_size", "epochs")),
        Recipe("bravonet_v2", augment="C", early_stopping_patience=10, reduce_lr_factor=0.316,
               reduce_lr_patience=5, source=_CS182, chosen=("augment", "batch_size", "epochs")),
        Recipe("bravonet_v3", augment="C", early_stopping_patience=10, reduce_lr_factor=0.316,
               reduce_lr_patience=5, source=_CS182,
               chosen=("augment", "batch_size", "epochs", "early_stopping_patience", "reduce_lr_factor")),
        Recipe("resnet18_maxpool", augment="none", epochs=50, reported_val_accuracy=0.62,
               source="IMT report (ResNet-18 with a max-pool after the first conv; 0.42 without it)",
               chosen=("augment", "optimizer", "learning_rate", "batch_size", "epochs")),
        *(Recipe(name, augment="none", epochs=50, source="deeper ResNets for Xie & Yuille's depth finding",
                 chosen=("augment", "optimizer", "learning_rate", "batch_size", "epochs"))
          for name in ("resnet34", "resnet50", "resnet101", "resnet152")),
        Recipe("resnet18_cifar", augment="none", image_size=32, epochs=50, source="CIFAR-style ResNet-18",
               chosen=("augment", "optimizer", "learning_rate", "batch_size", "epochs")),
        Recipe("cis680_allconv", epochs=30, batch_size=64, early_stopping_patience=0, reduce_lr_factor=1.0,
               source="CIS680 report", chosen=("optimizer", "learning_rate", "batch_size", "epochs")),
        Recipe("cis680_deep_plain", epochs=30, batch_size=64, early_stopping_patience=0, reduce_lr_factor=1.0,
               source="CIS680 report", chosen=("optimizer", "learning_rate", "batch_size", "epochs")),
        Recipe("cis680_deep_residual", epochs=30, batch_size=64, early_stopping_patience=0,
               reduce_lr_factor=1.0, source="CIS680 report",
               chosen=("optimizer", "learning_rate", "batch_size", "epochs")),
        Recipe("resnet101_transfer", **_TRANSFER),
        Recipe("inception_v3_transfer", **_TRANSFER),
        Recipe("vgg19_transfer", **_TRANSFER),
        # Learning rates and epochs live in each phase (training.phases); epochs caps every phase and
        # the step decay and learning rate here are phase 5's.
        Recipe("convengers", optimizer="adam", learning_rate=1e-5, batch_size=64, epochs=15,
               early_stopping_patience=0, reduce_lr_factor=1.0, step_decay_epochs=7, step_decay_factor=0.1,
               phases="marvel5", source=_CONVENGERS, chosen=("head learning rate", "phase 1-4 epochs")),
    )
}


# The recipes are for Tiny ImageNet. The offline digits demo has 1,437 8x8 glyphs: flips, shears
# and channel shuffles turn a digit into another or into noise, and a batch of 128 would leave 12
# steps an epoch, so there the recipe trains without augmentation at batch 64.
DATASET_ADJUSTMENTS = {"digits": {"augment": "none", "batch_size": 64}}


def get_recipe(model: str, dataset: str = "tiny-imagenet") -> Recipe:
    """The model's recipe, adjusted for ``dataset``. Every registered model has exactly one (a test keeps it so)."""
    if model not in _RECIPES:
        raise ValueError(f"No recipe for model {model!r}. Models with recipes: {', '.join(sorted(_RECIPES))}")
    return dataclasses.replace(_RECIPES[model], **DATASET_ADJUSTMENTS.get(dataset, {}))


def recipe_names() -> list[str]:
    return sorted(_RECIPES)


def override(recipe: Recipe, **changes) -> Recipe:
    """A copy of ``recipe`` with the non-None ``changes`` applied (unknown fields raise ValueError)."""
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"Unknown recipe fields: {', '.join(unknown)}. Known: {', '.join(sorted(known))}")
    try:
        return dataclasses.replace(recipe, **{k: v for k, v in changes.items() if v is not None})
    except TypeError as error:  # a wrongly typed value from a JSON file
        raise ValueError(f"Bad recipe value: {error}") from None
