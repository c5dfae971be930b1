"""What a training run is made of: its config, data, model, optimizer, parts, callbacks and final metrics.

Single-phase training (training.trainer), multi-phase training (training.phases) and tuner trials
(training.tuning) all assemble a run with ``assemble`` (the model from the config's builder options,
the parts from its part specs, the compiled wrapper) and take its callbacks from ``run_callbacks``;
the first two fit it with ``training.fit.fit_into_run``. Every way of training lives in the config as
builder options (``model_options``) or part specs (``parts``): the config has no field of its own.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import pathlib

import keras

import data
import models
from data.pipeline import make_dataset
from common.run_folder import read_history, write_json
from training import callbacks as fit_callbacks
from training.distribute import is_chief, make_strategy
from training.parts import RunContext, make_parts
from training.recipes import Recipe, get_recipe
from training.wrapper import wrap

OPTIMIZERS = ("adam", "adamw", "rmsprop", "adadelta", "sgd", "nadam")


@dataclasses.dataclass
class TrainConfig:
    model: str
    recipe: Recipe
    dataset: str = "tiny-imagenet"
    data: str | None = None
    classes: int | None = None
    per_class: int | None = None
    image_size: int | None = None  # None: the recipe's size on Tiny ImageNet, else the dataset's own
    seed: int = 0
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: str = "default"
    tensorboard: bool = False
    parts: list = dataclasses.field(default_factory=list)  # part specs: {"kind", "name", **options}
    model_options: dict = dataclasses.field(default_factory=dict)  # builder options, e.g. weights, norm_layer
    phases: str | None = None  # which phases of a multi-phase recipe to run, e.g. "2-4" (None: all)
    verbose: int | str = "auto"
    command: str = ""

    def to_dict(self) -> dict:
        payload = dataclasses.asdict(self)
        payload["recipe"] = self.recipe.to_dict()
        return payload

    @classmethod
    def from_dict(cls, payload: dict) -> "TrainConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        payload = {key: value for key, value in upgrade_config(payload).items() if key in fields}
        recipe = payload.pop("recipe", None)
        if not isinstance(recipe, dict):
            raise ValueError(f"the run's config has no recipe object. Received: recipe={recipe!r}")
        known = {f.name for f in dataclasses.fields(Recipe)}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise ValueError(f"the run's recipe has unknown fields: {', '.join(unknown)}")
        recipe = {**recipe, "chosen": tuple(recipe.get("chosen", ()))}
        return cls(recipe=Recipe(**recipe), **payload)

    @property
    def resolved_image_size(self) -> int | None:
        if self.image_size:
            return self.image_size
        return self.recipe.image_size if self.dataset == "tiny-imagenet" else None


def upgrade_config(payload: dict) -> dict:
    """A config.json of an earlier run in today's terms: its "adversarial" options become the attack mix's
    (and logit pairing's) part specs, its "save_bn": "adv" the part that saves model-adv-bn.keras."""
    payload = dict(payload)
    adversarial, save_bn = payload.pop("adversarial", None), payload.pop("save_bn", "main")
    parts = list(payload.get("parts") or [])
    if adversarial:
        from training.adversarial import adversarial_parts

        parts = [*adversarial_parts(adversarial), *parts]
    if save_bn == "adv":
        parts.append({"kind": "hook", "name": "auxiliary_bn_model"})
    payload["parts"] = parts
    return payload


def default_config(model: str, **changes) -> TrainConfig:
    models.get_builder(model)  # an unknown name fails here, before any data is read
    return TrainConfig(model=model, recipe=get_recipe(model, changes.get("dataset", "tiny-imagenet")), **changes)


def load_splits(config: TrainConfig) -> tuple[data.Split, data.Split]:
    size = config.resolved_image_size
    image_size = (size, size) if size else None
    common = dict(root=config.data, classes=config.classes, image_size=image_size)
    train_split = data.load_dataset(config.dataset, "train", per_class=config.per_class, **common)
    val_split = data.load_dataset(config.dataset, "val", **common)
    return train_split, val_split


def make_optimizer(recipe: Recipe) -> keras.optimizers.Optimizer:
    if recipe.optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {recipe.optimizer!r}. Known optimizers: {', '.join(OPTIMIZERS)}")
    return keras.optimizers.get({"class_name": recipe.optimizer, "config": {"learning_rate": recipe.learning_rate}})


def accuracy_metrics() -> list:
    return [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
    ]


def compile_for_training(model: keras.Model, recipe: Recipe, jit_compile: bool = False) -> None:
    model.compile(
        optimizer=make_optimizer(recipe),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=accuracy_metrics(),
        jit_compile=jit_compile,
    )


class StepDecay:
    """Learning rate ``initial * factor ** (epoch // every)``: a per-epoch step schedule."""

    def __init__(self, initial: float, every: int, factor: float):
        self.initial, self.every, self.factor = initial, every, factor

    def __call__(self, epoch: int, learning_rate=None) -> float:
        return self.initial * self.factor ** (epoch // self.every)


def _schedule_callbacks(recipe: Recipe) -> list:
    """The recipe's schedule and plateau callbacks."""
    result = []
    if recipe.step_decay_epochs > 0:
        result.append(keras.callbacks.LearningRateScheduler(
            StepDecay(recipe.learning_rate, recipe.step_decay_epochs, recipe.step_decay_factor)))
    if recipe.early_stopping_patience > 0:
        result.append(fit_callbacks.ResumableEarlyStopping(
            "val_accuracy", mode="max", patience=recipe.early_stopping_patience))
    if recipe.reduce_lr_factor < 1.0:
        result.append(fit_callbacks.ResumableReduceLROnPlateau(
            "val_accuracy", mode="max", factor=recipe.reduce_lr_factor, patience=recipe.reduce_lr_patience))
    return result


def start(config: TrainConfig):
    """Seed, precision policy and distribution strategy of a run."""
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = make_strategy(config.strategy)
    if config.strategy != "default":
        print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas in sync")
    return strategy


def builder_options(config: TrainConfig) -> dict:
    """The config's builder options with a serialized constraint (a dict in config.json) made an object again."""
    options = dict(config.model_options)
    if isinstance(options.get("conv_constraint"), dict):
        options["conv_constraint"] = keras.constraints.get(options["conv_constraint"])
    return options


def build_model(config: TrainConfig, train_split: data.Split) -> keras.Model:
    return models.build(config.model, num_classes=train_split.num_classes, input_shape=train_split.image_shape,
                        **builder_options(config))


def check_parts(config: TrainConfig) -> None:
    """Build every part the config names once, so a bad option fails before any data is read."""
    make_parts(config.parts)


@dataclasses.dataclass
class Assembly:
    """A run's pieces: the base model (what is saved), its parts, and the compiled wrapper that trains."""

    base: keras.Model
    parts: dict
    model: keras.Model


def assemble(config: TrainConfig, train_split: data.Split, *, base: keras.Model | None = None, parts=None,
             recipe: Recipe | None = None, strategy=None) -> Assembly:
    """Build ``config``'s model (unless ``base`` is given) and parts (``parts``: other specs than the config's),
    wrap and compile them with ``recipe`` (default: the config's), inside ``strategy``'s scope if given."""
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        base = base if base is not None else build_model(config, train_split)
        built = make_parts(config.parts if parts is None else parts)
        model = wrap(base, built)
        compile_for_training(model, recipe or config.recipe, config.jit_compile)
    return Assembly(base, built, model)


def run_callbacks(config: TrainConfig, assembly: Assembly, run: RunContext) -> list:
    """The callbacks the way of training brings: the Parseval deviation log for a Parseval network, then every
    part's own (the attack mix's overfitting guard, a monitor's writer)."""
    from models.parseval import ParsevalConstraint

    callbacks = []
    if isinstance(builder_options(config).get("conv_constraint"), ParsevalConstraint):
        callbacks.append(fit_callbacks.ParsevalDeviation())
    return [*callbacks, *(callback for kind in assembly.parts.values() for part in kind
                          for callback in part.callbacks(run))]


def checkpoints(assembly: Assembly, prefix: str = "model") -> list:
    """model.keras, a plain Keras model (``models.plain``: no constraint, one set of BN statistics), saved when
    val accuracy improves, and whatever further model files the parts save."""
    from models.plain import plain_model
    from training.fit import Checkpoint

    return [Checkpoint(assembly.base, f"{prefix}.keras", export=plain_model),
            *(checkpoint for kind in assembly.parts.values() for part in kind
              for checkpoint in part.checkpoints(assembly.base))]


def open_run_dir(config: TrainConfig, run_dir: pathlib.Path, strategy, train_split: data.Split,
                 resume: bool) -> pathlib.Path:
    """Make the run folder (a worker's own subfolder off the chief) and write config.json for a new run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not is_chief(strategy):  # other workers train in step but keep their files to themselves
        run_dir = run_dir / f".worker-{strategy.cluster_resolver.task_id}"
        run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_json(run_dir / "config.json", {**config.to_dict(), "input_shape": train_split.image_shape,
                                             "num_classes": train_split.num_classes})
    return run_dir


def make_datasets(recipe: Recipe, train_split: data.Split, val_split: data.Split, seed: int):
    """(train stream, val data, steps per epoch) with the recipe's augmentation and batch size.

    The train stream is a function of ``start_batch`` (``make_dataset``'s), so ``fit_into_run`` starts a
    resumed run where its backup left the stream; ``train_stream(start_batch=0)`` is the whole one."""
    augment = None
    if recipe.augment != "none":
        from augment import make_augmenter

        augment = make_augmenter(recipe.augment)
    train_stream = functools.partial(make_dataset, train_split, recipe.batch_size, training=True, augment=augment,
                                     seed=seed, repeat=True)
    val_data = make_dataset(val_split, recipe.batch_size, training=False)
    return train_stream, val_data, math.ceil(len(train_split) / recipe.batch_size)


def schedule_callbacks(config: TrainConfig, recipe: Recipe, extra=(), tensorboard_dir=None) -> list:
    """The recipe's schedule, plateau and TensorBoard callbacks, then ``extra``."""
    callbacks = [*_schedule_callbacks(recipe), *extra]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(tensorboard_dir)))
    return callbacks


def final_metrics(run_dir: pathlib.Path, val_data, parameter_count: int, *,
                  history_path: pathlib.Path | None = None) -> dict:
    """Top-1/3/5 of the best saved model, and what the history (default history.csv) says about the run."""
    best_model = keras.models.load_model(run_dir / "model.keras", safe_mode=True, compile=False)
    best_model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=accuracy_metrics())
    scores = best_model.evaluate(val_data, return_dict=True, verbose=0)
    history = read_history(history_path or run_dir / "history.csv")
    best_row = max(history, key=lambda row: row.get("val_accuracy", -1.0))
    seconds = [row["epoch_seconds"] for row in history if "epoch_seconds" in row]
    return {
        "val_top1": scores["accuracy"],
        "val_top3": scores["top3"],
        "val_top5": scores["top5"],
        "val_loss": scores["loss"],
        "best_epoch": best_row["epoch"] + 1,
        "epochs": len(history),
        "final_train_accuracy": history[-1]["accuracy"],
        "train_val_gap": best_row["accuracy"] - best_row["val_accuracy"],
        "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
        "total_seconds": sum(seconds),
        "parameters": int(parameter_count),
    }
