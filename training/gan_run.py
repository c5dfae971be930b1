"""A GAN run folder: its config, its data, and the fit that fills it.

    config = GANConfig(kind="cgan", dataset="digits").resolved()   # per-dataset defaults filled in
    train_gan(config, run_dir, score=None)              # or resume=True on an interrupted run

The folder afterwards: config.json, generator.keras and discriminator.keras (after every epoch),
history.csv (d_loss, g_loss, d_real, d_fake, sample_change, epoch_seconds, and the scorer's numbers
such as fid, kid, gan_test and diversity), samples-epochNNN.png per epoch and samples.png (the last),
metrics.json and curves.png; with ``judge`` the judging classifier's own run folder in judge/.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable

import keras

import data
from common import checks
from common.run_folder import read_json, write_json
from training.fit import Checkpoint, fit_into_run
from training.gan import CollapseWatch, EpochScores, GANTrainer, SampleGrid, StopOnNonFiniteLoss, fixed_inputs

KINDS = ("dcgan", "cgan")
JUDGE_FOLDER = "judge"
# What a field left unset (None) becomes. Digits are 8x8 drawings: 32x32 (the size digits classifiers
# use) and narrow networks learn them in minutes on a CPU, and the run trains its own judge.
DEFAULTS = {"epochs": 5, "batch_size": 64, "latent_dim": 100, "generator_width": 64, "discriminator_width": 64,
            "dense_units": 1024, "learning_rate": 2e-4, "beta_1": 0.5, "label_smoothing": 0.0,
            "instance_noise": 0.0, "spectral_norm": False, "discriminator_steps": 1, "generator_steps": 1,
            "grid_columns": 8, "grid_rows": 8, "seed": 0, "score_samples": 500, "score_every": 1, "image_size": 64,
            "judge": False, "collapse_threshold": 0.5}
DATASET_DEFAULTS = {"digits": {"image_size": 32, "epochs": 50, "generator_width": 16, "discriminator_width": 16,
                               "dense_units": 256, "grid_rows": 10, "judge": True, "score_every": 2}}
# Upper bounds that keep a mistyped or tampered value from reaching an allocation.
_LIMITS = {"epochs": 100_000, "batch_size": 4096, "latent_dim": 4096, "generator_width": 1024,
           "discriminator_width": 1024, "dense_units": 65_536, "discriminator_steps": 100, "generator_steps": 100,
           "grid_columns": 64, "grid_rows": 64, "score_samples": 100_000, "score_every": 100_000}


@dataclasses.dataclass
class GANConfig:
    """Everything a GAN run needs to be repeated or resumed; written as the run's config.json.
    None means "the dataset's default" (``resolved()``)."""

    kind: str
    dataset: str = "tiny-imagenet"
    data: str | None = None
    classes: int | None = None
    per_class: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    latent_dim: int | None = None
    generator_width: int | None = None
    discriminator_width: int | None = None
    dense_units: int | None = None
    learning_rate: float | None = None
    beta_1: float | None = None
    label_smoothing: float | None = None
    instance_noise: float | None = None
    spectral_norm: bool | None = None
    discriminator_steps: int | None = None
    generator_steps: int | None = None
    grid_columns: int | None = None
    grid_rows: int | None = None
    seed: int | None = None
    image_size: int | None = None  # 16, 32 or 64
    classifier: str | None = None  # the run whose penultimate features FID/KID use; None: no per-epoch scores
    judge: bool | None = None  # train a judging classifier into judge/ when no classifier is named
    score_samples: int | None = None
    score_every: int | None = None  # epochs between scores (scoring can cost more than a small GAN's epoch)
    collapse_threshold: float | None = None  # warn when generated diversity / real diversity falls below it
    num_classes: int | None = None  # filled in from the data
    command: str = ""
    verbose: int | str = "auto"

    def resolved(self) -> "GANConfig":
        """A copy with every unset field at its dataset's default, checked."""
        defaults = {**DEFAULTS, **DATASET_DEFAULTS.get(self.dataset, {})}
        changes = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        return dataclasses.replace(self, **changes).check()

    def check(self) -> "GANConfig":
        """Types, ranges and cross-checks of every field; ValueError naming the field. Returns self."""
        if self.kind not in KINDS:
            raise ValueError(f"Unknown GAN kind {self.kind!r}. Known kinds: {', '.join(KINDS)}")
        if self.dataset not in data.DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r}. Known datasets: {', '.join(data.DATASETS)}")
        for name, limit in _LIMITS.items():
            if checks.positive_int(name, getattr(self, name)) > limit:
                raise ValueError(f"`{name}` must be at most {limit}. Received: {name}={getattr(self, name)}")
        for name in ("classes", "per_class", "num_classes"):
            if getattr(self, name) is not None:
                checks.positive_int(name, getattr(self, name))
        checks.non_negative_int("seed", self.seed)
        checks.real_in_range("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        checks.real_in_range("beta_1", self.beta_1, 0.0, 1.0, high_open=True)
        checks.real_in_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        checks.real_in_range("instance_noise", self.instance_noise, 0.0, 10.0)
        checks.real_in_range("collapse_threshold", self.collapse_threshold, 0.0, 1.0)
        for name in ("spectral_norm", "judge"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be true or false. Received: {name}={getattr(self, name)!r}")
        if self.image_size not in (16, 32, 64):
            raise ValueError(f"`image_size` must be 16, 32 or 64. Received: image_size={self.image_size!r}")
        if self.image_size == 64 and self.generator_width % 2:
            raise ValueError(f"`generator_width` must be even at 64x64. Received: {self.generator_width}")
        for name in ("data", "classifier"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"`{name}` must be a path. Received: {name}={getattr(self, name)!r}")
        if self.verbose not in (0, 1, 2, "auto"):
            raise ValueError(f"`verbose` must be 0, 1, 2 or 'auto'. Received: verbose={self.verbose!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> "GANConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ValueError(f"config.json has fields a GAN run does not know: {', '.join(unknown)}")
        return cls(**payload)


def load_train_split(config: GANConfig) -> data.Split:
    """The training images at the GAN's size (Lanczos-resized when the dataset's differ, e.g. digits)."""
    return data.load_dataset(config.dataset, "train", root=config.data, classes=config.classes,
                             per_class=config.per_class, image_size=(config.image_size, config.image_size))


def build_trainer(config: GANConfig) -> GANTrainer:
    """The generator, discriminator and compiled trainer the config describes (weights seeded)."""
    from models.gan import build_pair

    keras.utils.set_random_seed(config.seed)
    conditional = config.kind == "cgan"
    generator, discriminator = build_pair(
        config.kind, num_classes=config.num_classes if conditional else None, latent_dim=config.latent_dim,
        generator_width=config.generator_width, discriminator_width=config.discriminator_width,
        dense_units=config.dense_units, spectral_norm=config.spectral_norm, image_size=config.image_size)
    trainer = GANTrainer(generator, discriminator, latent_dim=config.latent_dim, conditional=conditional,
                         label_smoothing=config.label_smoothing, instance_noise=config.instance_noise,
                         discriminator_steps=config.discriminator_steps, generator_steps=config.generator_steps,
                         seed=config.seed)
    # Adam with beta_1 = 0.5 and lr 2e-4: DCGAN's setting, which the momentum of 0.9 destabilises.
    trainer.compile(d_optimizer=keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1),
                    g_optimizer=keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1))
    return trainer


def grid_inputs(config: GANConfig):
    """The fixed grid inputs: one row per class (up to ``grid_rows``) for the conditional GAN."""
    rows = min(config.grid_rows, config.num_classes) if config.kind == "cgan" else config.grid_rows
    return fixed_inputs(config.latent_dim, num_classes=config.num_classes if config.kind == "cgan" else None,
                        rows=rows, columns=config.grid_columns, seed=config.seed), rows


def judge_of(config: GANConfig, run_dir) -> str | None:
    """The classifier run that scores this GAN: the named one, else the run's own judge/, else None."""
    if config.classifier:
        return config.classifier
    return str(pathlib.Path(run_dir) / JUDGE_FOLDER) if config.judge else None


def train_judge(config: GANConfig, run_dir, *, epochs: int = 3, model: str = "alphanet_v4") -> pathlib.Path:
    """Train the judging classifier (``model`` on the GAN's training data, at the GAN's image size) into
    ``run_dir``/judge, or finish an interrupted one; its folder."""
    from training import trainer
    from training.recipes import override

    folder = pathlib.Path(run_dir) / JUDGE_FOLDER
    if (folder / "metrics.json").is_file():
        return folder
    judge = trainer.default_config(model, dataset=config.dataset, data=config.data, classes=config.classes,
                                   image_size=config.image_size, seed=config.seed, verbose=config.verbose,
                                   command=f"judge of {config.command}")
    judge.recipe = override(judge.recipe, epochs=epochs)
    trainer.train(judge, folder, resume=(folder / "config.json").is_file())
    return folder


def load_data(config: GANConfig, run_dir) -> data.Split:
    """The run's training split; fills in ``config.num_classes`` (a resumed run's must match its data)."""
    split = load_train_split(config)
    if config.num_classes not in (None, split.num_classes):
        raise ValueError(f"{pathlib.Path(run_dir) / 'config.json'}: num_classes is {config.num_classes} but its "
                         f"data have {split.num_classes} classes")
    config.num_classes = split.num_classes
    return split


def write_config(config: GANConfig, run_dir) -> None:
    pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(pathlib.Path(run_dir) / "config.json", config.to_dict())


def train_gan(config: GANConfig, run_dir, *, resume: bool = False, score: Callable[[keras.Model], dict] | None = None,
              callbacks=(), split: data.Split | None = None) -> list[dict]:
    """Train into ``run_dir`` (a new folder, or an interrupted run with ``resume=True``); the history rows.

    ``config`` is resolved (``GANConfig.resolved``); ``split`` is ``load_data``'s when the caller has it.
    ``score(generator) -> {name: float}`` runs after scored epochs (FID/KID/GAN-test/diversity from
    analysis.gan_metrics); ``callbacks`` are added to the fit's."""
    from data.pipeline import make_dataset

    run_dir = pathlib.Path(run_dir)
    split = split or load_data(config, run_dir)  # a bad --data fails before the folder is made
    if not resume:
        write_config(config, run_dir)
    trainer = build_trainer(config)
    inputs, _ = grid_inputs(config)
    callbacks = [StopOnNonFiniteLoss(), SampleGrid(trainer.generator, run_dir, inputs, config.grid_columns),
                 *callbacks, CollapseWatch(config.collapse_threshold)]
    if score is not None:
        callbacks.insert(1, EpochScores(trainer.generator, score, every=config.score_every))
    dataset = make_dataset(split, config.batch_size, training=True, seed=config.seed)
    plot_metrics = ("d_loss", "g_loss", "d_real", "d_fake", "sample_change") + (
        ("fid", "gan_test", "diversity") if score is not None else ())
    return fit_into_run(
        trainer, run_dir, dataset, epochs=config.epochs, resume=resume, verbose=config.verbose,
        checkpoints=[Checkpoint(trainer.generator, "generator.keras", monitor=None),
                     Checkpoint(trainer.discriminator, "discriminator.keras", monitor=None)],
        callbacks=callbacks, plot_title=f"{config.kind} on {config.dataset}", plot_metrics=plot_metrics,
        finish=lambda rows: {**(rows[-1] if rows else {}), "epochs": len(rows),
                             "total_seconds": sum(_finite(row.get("epoch_seconds")) for row in rows)})


def _finite(value) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def load_config(run_dir) -> GANConfig:
    """The resolved, checked GANConfig of an existing run folder; a tampered value is one ValueError
    naming the file."""
    path = pathlib.Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a GAN run folder: it has no config.json")
    payload = read_json(path)
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a JSON object")
    try:
        return GANConfig.from_dict(payload).resolved()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None
