"""Keras Tuner searches over a zoo model's recipe, and the trial table they leave.

Two search spaces, both on top of the model's recipe (`training.recipes.get_recipe`):

- ``optimizer``: the optimizer (a choice) and its learning rate (log-uniform between two bounds),
  the CS182 study on BravoNet v3;
- ``augment``: the augmentation policy (none, A, B, C) and, when an attack mix is given, the
  adversarial training eps (1, 2, 4 or 8 / 255).

A trial is assembled like a training run (`training.run_setup.assemble`): the model with the
search's builder options (``model_options``: Parseval, dual BN), its parts (``parts``: smoothness,
monitors; ``adversarial``: the attack mix), the callbacks they bring, so every way of training
train.py knows can be searched. Each trial's epochs are written to
``keras_tuner/trial_<id>/history.csv``. With an adversary the objective is PGD-10 accuracy
(``val_robust_accuracy``), the attack looked up in the attack registry.

Every trial starts clean: `CleanTrials.run_trial` clears the Keras session and seeds every
generator with ``seed + trial index`` before the model is built, and each trial gets a new model,
optimizer and tf.data pipeline. Nothing (optimizer slots, graph, layer names, RNG state) carries
from one trial into the next, so a trial's score depends only on its hyper-parameters and its
index, and a resumed or distributed search scores a trial as an uninterrupted one would.

A search folder holds search.json (the settings; a resume must match them), keras_tuner/ (Keras
Tuner's oracle and trials, which is what makes a search resumable), trials.md and trials.json (the
table) and best.json (the best trial's recipe fields, for ``train.py --hparams``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import time

import keras
import keras_tuner

import data
import models
from models.registry import check_options
from attacks.accuracy import accuracy
from training import recipes, run_setup, trainer
from training.parts import RunContext
from training.tuning_table import best_fields, trial_rows, trial_table
from common.run_folder import hold_run_folder, read_json, write_json, write_text

SEARCHES = ("optimizer", "augment")
TUNERS = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization,
          "hyperband": keras_tuner.Hyperband}
POLICIES = ("none", "A", "B", "C")
EPS_CHOICES = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
PROJECT_NAME = "keras_tuner"
ROBUST_IMAGES = 256  # held-out images for the robust-accuracy objective
OUTPUT_FILES = ("search.json", "trials.md", "trials.json", "best.json")


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a search; all but ``trials`` must match to resume one."""

    model: str
    search: str = "optimizer"
    dataset: str = "tiny-imagenet"
    data: str | None = None
    classes: int | None = None
    per_class: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    optimizers: tuple = ("adam", "rmsprop", "adadelta", "sgd")
    lr_min: float = 1e-4
    lr_max: float = 1e-2
    adv: str | None = None  # an attack mix for AdversarialConfig; the augment search also tunes its eps
    adv_fraction: float = 0.5
    adversarial: dict | None = None  # every AdversarialConfig field (train.py's flags); default: adv, adv_fraction
    parts: tuple = ()  # further part specs, as in a run's config
    model_options: dict = dataclasses.field(default_factory=dict)  # builder options (JSON-friendly)
    eval_eps: float = 8 / 255  # the PGD radius of the objective when adv is set
    trials: int = 20
    epochs: int = 5
    tuner: str = "random"
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError on any bad setting, before data is read or a folder is made."""
        models.get_builder(self.model)
        if getattr(self.recipe(), "phases", None):  # learning rates then live in each phase
            raise ValueError(f"{self.model}'s recipe trains in phases: tune.py searches one-phase recipes")
        if self.search not in SEARCHES:
            raise ValueError(f"Unknown search {self.search!r}. Known searches: {', '.join(SEARCHES)}")
        if self.tuner not in TUNERS:
            raise ValueError(f"Unknown tuner {self.tuner!r}. Known tuners: {', '.join(TUNERS)}")
        if self.dataset not in data.DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r}. Known datasets: {', '.join(data.DATASETS)}")
        unknown = [name for name in self.optimizers if name not in trainer.OPTIMIZERS]
        if unknown or not self.optimizers:
            raise ValueError(f"Unknown optimizer {', '.join(map(repr, unknown)) or '(none given)'}. "
                             f"Known optimizers: {', '.join(trainer.OPTIMIZERS)}")
        if not 0 < self.lr_min < self.lr_max:
            raise ValueError(f"Need 0 < --lr-min < --lr-max. Received: lr_min={self.lr_min}, lr_max={self.lr_max}")
        for name, value in (("trials", self.trials), ("epochs", self.epochs), ("batch_size", self.batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
        if self.adversarial_options() is not None:
            self.part_specs(EPS_CHOICES[-1] if self.search == "augment" else None, seed=0)  # a bad mix fails here
            if not 0 < self.eval_eps <= 1:
                raise ValueError(f"`eval_eps` must be in (0, 1]. Received: eval_eps={self.eval_eps}")
        check_options(self.model, self.model_options)
        trainer.check_parts(self.train_config())  # a bad part option fails before any data is read

    @property
    def objective(self) -> str:
        # Ranked by clean accuracy, adversarial training would always pick the smallest eps.
        return "val_robust_accuracy" if self.adversarial_options() else "val_accuracy"

    def identity(self) -> dict:
        payload = dataclasses.asdict(self)
        payload.pop("trials")
        payload["optimizers"], payload["parts"] = list(self.optimizers), list(self.parts)
        return payload

    def adversarial_options(self) -> dict | None:
        if self.adversarial is not None:
            return dict(self.adversarial)
        return {"attacks": self.adv, "fraction": self.adv_fraction} if self.adv else None

    def part_specs(self, eps: float | None, seed: int) -> list[dict]:
        """A trial's parts: the attack mix (at ``eps`` when the search tunes it) and the search's other parts."""
        from training.adversarial import adversarial_parts

        options = self.adversarial_options()
        if options is None:
            return list(self.parts)
        options = {**options, "seed": seed, **({"eps": eps} if eps is not None else {})}
        return [*adversarial_parts(options), *self.parts]

    def train_config(self) -> trainer.TrainConfig:
        return trainer.default_config(self.model, dataset=self.dataset, data=self.data, classes=self.classes,
                                      per_class=self.per_class, image_size=self.image_size, seed=self.seed,
                                      parts=self.part_specs(None, self.seed), model_options=dict(self.model_options))

    def recipe(self) -> recipes.Recipe:
        return recipes.override(recipes.get_recipe(self.model, self.dataset), batch_size=self.batch_size)


class RobustAccuracy(keras.callbacks.Callback):
    """Adds ``val_robust_accuracy``, PGD-10 accuracy at a fixed eps on held-out images, to the epoch
    logs; put it before the callbacks that read them. Every trial is measured at the same eps."""

    def __init__(self, images, labels, eps: float, steps: int = 10):
        super().__init__()
        self.images, self.labels = images.astype("float32") / 255.0, labels
        self.eps, self.steps = eps, steps

    def on_epoch_end(self, epoch, logs=None):
        # One batch, one random start: every trial is attacked alike.
        robust = accuracy(self.model, self.images, self.labels, "pgd", batch_size=len(self.images), seed=0,
                          eps=self.eps, steps=self.steps)
        if logs is not None:
            logs["val_robust_accuracy"] = robust


class ZooHyperModel(keras_tuner.HyperModel):
    """A zoo model and its recipe with the searched fields as hyper-parameters.

    `fit` takes the train and val `data.Split`s (loaded once per search); the tf.data pipelines
    are made per trial, seeded with the trial's seed, with the trial's augmentation."""

    def __init__(self, settings: SearchSettings):
        super().__init__(name=settings.model)
        self.settings = settings
        self.base_recipe = settings.recipe()
        self.train_split = None  # set by `use_data`
        self.trial_seed = settings.seed
        self.trial_dir: pathlib.Path | None = None  # set by CleanTrials.run_trial
        self.assembly = None  # the trial's model and parts, made by `build`

    def use_data(self, train_split: data.Split) -> None:
        self.train_split = train_split

    def begin_trial(self, index: int) -> None:
        """A clean Keras state and seeds for trial ``index``: see the module docstring."""
        keras.backend.clear_session()
        self.trial_seed = self.settings.seed + index
        keras.utils.set_random_seed(self.trial_seed)

    def values(self, hp: keras_tuner.HyperParameters) -> dict:
        """Declares this search's hyper-parameters in ``hp``; returns their values as recipe fields."""
        settings = self.settings
        if settings.search == "optimizer":
            return {"optimizer": hp.Choice("optimizer", list(settings.optimizers)),
                    "learning_rate": hp.Float("learning_rate", settings.lr_min, settings.lr_max, sampling="log")}
        values = {"augment": hp.Choice("augment", list(POLICIES))}
        if settings.adversarial_options():
            values["eps"] = hp.Choice("eps", list(EPS_CHOICES), ordered=True)
        return values

    def declare_hyperparameters(self, hp):
        self.values(hp)

    def trial_recipe(self, values: dict) -> recipes.Recipe:
        return recipes.override(self.base_recipe, **{key: value for key, value in values.items() if key != "eps"})

    def trial_config(self, values: dict) -> trainer.TrainConfig:
        """The trial as a run's config: the search's model options and parts, the trial's recipe and seed."""
        return dataclasses.replace(self.settings.train_config(), recipe=self.trial_recipe(values), seed=self.trial_seed,
                                   parts=self.settings.part_specs(values.get("eps"), self.trial_seed))

    def build(self, hp):
        if self.train_split is None:
            raise RuntimeError("ZooHyperModel.use_data must be called before a model is built")
        # Keras Tuner clears the session again between run_trial and build, which forgets Keras'
        # seed; seeding here too makes the weights depend on the trial's seed alone.
        keras.utils.set_random_seed(self.trial_seed)
        self.assembly = run_setup.assemble(self.trial_config(self.values(hp)), self.train_split)
        return self.assembly.model

    def fit(self, hp, model, train_split, val_split, *, callbacks=(), **kwargs):
        recipe = self.trial_recipe(self.values(hp))
        train_stream, val_data, steps = trainer.make_datasets(recipe, train_split, val_split, self.trial_seed)
        config = self.trial_config(self.values(hp))
        extra = []
        if self.settings.adversarial_options():
            held_out = slice(0, min(ROBUST_IMAGES, len(val_split)))
            extra.append(RobustAccuracy(val_split.images[held_out], val_split.labels[held_out],
                                        self.settings.eval_eps))
        if self.assembly is not None and self.assembly.model is model:
            extra += run_setup.run_callbacks(config, self.assembly, RunContext(self.trial_dir, val_split,
                                                                               self.trial_seed))
        if self.trial_dir is not None:  # last of ours, so it logs what the callbacks before it added
            self.trial_dir.mkdir(parents=True, exist_ok=True)
            extra.append(keras.callbacks.CSVLogger(str(self.trial_dir / "history.csv")))
        # A trial trains at a constant learning rate: the recipe's plateau schedule and early
        # stopping need more epochs than a trial has, and would blur the comparison.
        kwargs["shuffle"] = False  # the dataset shuffles itself
        return model.fit(train_stream(start_batch=0), steps_per_epoch=steps,
                         validation_data=val_data, callbacks=[*extra, *callbacks], **kwargs)


class CleanTrials:
    """Mixed into a Keras Tuner tuner: clean, seeded trials that report their duration."""

    trials_run = 0

    def run_trial(self, trial, *args, **kwargs):
        self.hypermodel.begin_trial(int(trial.trial_id))
        self.hypermodel.trial_dir = pathlib.Path(self.get_trial_dir(trial.trial_id))
        started = time.perf_counter()
        histories = super().run_trial(trial, *args, **kwargs)
        seconds = time.perf_counter() - started
        self.trials_run += 1
        return [{**best_epoch_logs(history, self.oracle.objective.name), "seconds": seconds} for history in histories]

    def _populate_initial_space(self):
        # Keras Tuner's default builds a model to find conditional hyper-parameters; this space has
        # none, so declaring is enough, and a chief that only serves the oracle never needs data.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)


def best_epoch_logs(history: keras.callbacks.History, objective: str) -> dict:
    """The logs of the epoch with the highest ``objective`` (what Keras Tuner records for a History)."""
    logs = history.history
    best = max(range(len(logs[objective])), key=logs[objective].__getitem__)
    return {name: float(values[best]) for name, values in logs.items()}


def make_tuner(settings: SearchSettings, hypermodel: ZooHyperModel, directory, overwrite: bool = False):
    """A Keras Tuner tuner of kind ``settings.tuner`` with clean trials; ``overwrite=False`` reloads
    the oracle from ``directory`` so finished trials are not run again."""
    base = TUNERS[settings.tuner]
    tuner_class = type(f"Clean{base.__name__}", (CleanTrials, base), {})
    budget = {"max_epochs": settings.epochs} if settings.tuner == "hyperband" else {"max_trials": settings.trials}
    # The oracle's seed (Keras Tuner reads 0 as "unseeded", hence + 1) fixes the sequence of values tried.
    return tuner_class(hypermodel=hypermodel, objective=keras_tuner.Objective(settings.objective, "max"),
                       seed=settings.seed + 1, directory=str(directory), project_name=PROJECT_NAME,
                       overwrite=overwrite, **budget)


def distributed_role() -> str:
    """"chief" or "worker" under Keras Tuner's distributed mode (KERASTUNER_* variables), else "alone"."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "alone"
    if missing := [name for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if name not in os.environ]:
        raise ValueError(f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} is not")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def prepare_directory(settings: SearchSettings, directory: pathlib.Path, overwrite: bool, role: str) -> None:
    """Check a resumed search has the same settings, or clear the folder for ``overwrite``."""
    if overwrite and role == "worker":
        raise ValueError("--overwrite is for the chief only: a worker would delete the search under it")
    if overwrite:
        for name in OUTPUT_FILES:
            (directory / name).unlink(missing_ok=True)
        shutil.rmtree(directory / PROJECT_NAME, ignore_errors=True)
    saved_path = directory / "search.json"
    if saved_path.exists():
        # A search saved before a setting existed ran with its default.
        defaults = SearchSettings(settings.model).identity()
        saved = {**defaults, **read_json(saved_path)}
        changed = [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in settings.identity().items()
                   if saved.get(key) != value]
        if changed:
            raise ValueError(f"{directory} holds a search with other settings ({'; '.join(changed)}): "
                             "pass --overwrite to start anew or --dir for a new folder")
    directory.mkdir(parents=True, exist_ok=True)
    if role != "worker":
        write_json(saved_path, settings.identity())


@dataclasses.dataclass
class SearchOutcome:
    directory: pathlib.Path
    trials_run: int  # trials this call ran (0 for a chief, which only serves the oracle)
    rows: list | None = None  # None on a worker: the chief holds the table
    best: dict | None = None
    markdown: str | None = None


def run_search(settings: SearchSettings, directory=None, *, overwrite: bool = False, verbose: int = 1,
               command: str = "") -> SearchOutcome:
    """Run (or resume) a search; all but a worker write the table and best.json into ``directory``."""
    settings.validate()
    role = distributed_role()
    directory = pathlib.Path(directory or f"tuning/{settings.model}-{settings.search}")
    config = settings.train_config()
    if role != "chief":  # check first, write after: a bad --data must not leave a search.json behind
        train_split, val_split = trainer.load_splits(config)
    # A lone search holds its folder's writer lock, as a training run does; distributed processes share theirs.
    with hold_run_folder(directory, create=True) if role == "alone" else contextlib.nullcontext():
        prepare_directory(settings, directory, overwrite, role)
        hypermodel = ZooHyperModel(settings)
        tuner = make_tuner(settings, hypermodel, directory, overwrite=overwrite)
        if role == "chief":
            tuner.search(verbose=verbose)  # serves the oracle until the workers have run every trial
        else:
            hypermodel.use_data(train_split)
            tuner.search(train_split, val_split, epochs=settings.epochs, verbose=verbose)
        if role == "worker":
            return SearchOutcome(directory, tuner.trials_run)
        rows = trial_rows(tuner.oracle, settings)
        best_trials = [trial for trial in tuner.oracle.get_best_trials(1) if trial.score is not None]
        best = best_fields(settings, best_trials[0].hyperparameters.values) if best_trials else None
        markdown = trial_table(settings, rows, best_trials[0].trial_id if best_trials else None, command)
        write_json(directory / "trials.json", {"settings": settings.identity(), "command": command,
                                               "objective": settings.objective, "trials": rows})
        write_text(directory / "trials.md", markdown)
        if best is not None:
            write_json(directory / "best.json", best)
        return SearchOutcome(directory, tuner.trials_run, rows, best, markdown)
