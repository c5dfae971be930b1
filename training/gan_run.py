"""A GAN run folder: its config, its data, and the fit that fills it.

    config = GANConfig(kind="cgan", dataset="tiny-imagenet", data=PATH, classes=10, epochs=5)
    train_gan(config, run_dir, score=None)              # or resume=True on an interrupted run

The folder afterwards: config.json, generator.keras and discriminator.keras (after every epoch),
history.csv (d_loss, g_loss, d_real, d_fake, epoch_seconds, and the scorer's numbers such as fid and
kid), samples-epochNNN.png per epoch and samples.png (the last), metrics.json and curves.png.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import keras

import data
from common.run_folder import read_json, write_json
from training.fit import Checkpoint, fit_into_run
from training.gan import EpochScores, GANTrainer, SampleGrid, fixed_inputs

IMAGE_SIZE = (64, 64)
KINDS = ("dcgan", "cgan")


@dataclasses.dataclass
class GANConfig:
    """Everything a GAN run needs to be repeated or resumed; written as the run's config.json."""

    kind: str
    dataset: str = "tiny-imagenet"
    data: str | None = None
    classes: int | None = None
    per_class: int | None = None
    epochs: int = 5
    batch_size: int = 64
    latent_dim: int = 100
    generator_width: int = 64
    discriminator_width: int = 64
    dense_units: int = 1024
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    label_smoothing: float = 0.0
    instance_noise: float = 0.0
    spectral_norm: bool = False
    discriminator_steps: int = 1
    generator_steps: int = 1
    grid_columns: int = 8
    grid_rows: int = 8
    seed: int = 0
    classifier: str | None = None  # the run whose penultimate features FID/KID use; None: no per-epoch scores
    score_samples: int = 500
    score_every: int = 1  # epochs between scores (scoring can cost more than a small GAN's epoch)
    num_classes: int | None = None  # filled in from the data
    command: str = ""
    verbose: int | str = "auto"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown GAN kind {self.kind!r}. Known kinds: {', '.join(KINDS)}")

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
    """The training images at 64x64 (Lanczos-resized when the dataset's differ, e.g. digits)."""
    return data.load_dataset(config.dataset, "train", root=config.data, classes=config.classes,
                             per_class=config.per_class, image_size=IMAGE_SIZE)


def build_trainer(config: GANConfig) -> GANTrainer:
    """The generator, discriminator and compiled trainer the config describes (weights seeded)."""
    from models.gan import build_pair

    keras.utils.set_random_seed(config.seed)
    conditional = config.kind == "cgan"
    generator, discriminator = build_pair(
        config.kind, num_classes=config.num_classes if conditional else None, latent_dim=config.latent_dim,
        generator_width=config.generator_width, discriminator_width=config.discriminator_width,
        dense_units=config.dense_units, spectral_norm=config.spectral_norm)
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


def train_gan(config: GANConfig, run_dir, *, resume: bool = False,
              score: Callable[[keras.Model], dict] | None = None, callbacks=()) -> list[dict]:
    """Train into ``run_dir`` (a new folder, or an interrupted run with ``resume=True``); the history rows.

    ``score(generator) -> {name: float}`` runs after every epoch (FID/KID from analysis.gan_metrics);
    ``callbacks`` are added to the fit's."""
    from data.pipeline import make_dataset

    run_dir = pathlib.Path(run_dir)
    split = load_train_split(config)  # a bad --data fails before the folder is made
    config.num_classes = split.num_classes
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config.to_dict())
    trainer = build_trainer(config)
    inputs, _ = grid_inputs(config)
    callbacks = [SampleGrid(trainer.generator, run_dir, inputs, config.grid_columns), *callbacks]
    if score is not None:
        callbacks.insert(0, EpochScores(trainer.generator, score, every=config.score_every))
    dataset = make_dataset(split, config.batch_size, training=True, seed=config.seed)
    scored_every_epoch = score is not None and config.score_every == 1  # a plot of FID needs no gaps
    plot_metrics = ("d_loss", "g_loss", "d_real", "d_fake") + (("fid",) if scored_every_epoch else ())
    return fit_into_run(
        trainer, run_dir, dataset, epochs=config.epochs, resume=resume, verbose=config.verbose,
        checkpoints=[Checkpoint(trainer.generator, "generator.keras", monitor=None),
                     Checkpoint(trainer.discriminator, "discriminator.keras", monitor=None)],
        callbacks=callbacks, plot_title=f"{config.kind} on {config.dataset}", plot_metrics=plot_metrics,
        finish=lambda rows: {**(rows[-1] if rows else {}), "epochs": len(rows),
                             "total_seconds": sum(row.get("epoch_seconds") or 0.0 for row in rows)})


def load_config(run_dir) -> GANConfig:
    """The GANConfig of an existing run folder."""
    path = pathlib.Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a GAN run folder: it has no config.json")
    return GANConfig.from_dict(read_json(path))
