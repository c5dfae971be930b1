"""The GAN trainer: a ``keras.Model`` whose ``train_step`` alternates discriminator and generator updates
(the keras-io DCGAN idiom), so ``fit()`` keeps its callbacks, progress bar, history and BackupAndRestore.

    trainer = GANTrainer(generator, discriminator, latent_dim=100, conditional=True)
    trainer.compile(d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
                    g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
    trainer.fit(dataset_of_images_and_labels, epochs=5)

The data are batches of (float32 (B, 64, 64, 3) in [0, 1], int32 (B,)); the unconditional GAN ignores
the labels, the conditional one generates each batch for the real batch's labels, so generated
classes follow the data's class frequencies. Logged per epoch: ``d_loss``, ``g_loss``, ``d_real``
(mean D(x), a probability) and ``d_fake`` (mean D(G(z)) at the discriminator step).

Stability aids, all off by default (the report's plain DCGAN):
- ``label_smoothing`` s: real targets are 1 - s, fakes stay 0 (one-sided, Salimans et al., 2016);
- ``instance_noise`` sigma: Gaussian noise of that std on every image the discriminator sees, real
  and generated (Sønderby et al., 2017), so the two distributions overlap early in training;
- ``discriminator_steps`` / ``generator_steps``: updates of each per batch (e.g. 2 and 1 for 2:1);
- spectral normalisation is a discriminator option (``models.gan``), not a trainer one.
"""
from __future__ import annotations

import pathlib

import keras
import numpy as np
import tensorflow as tf

from common.checks import non_negative_int, positive_int, real_in_range
from common.run_folder import atomic_path


class GANTrainer(keras.Model):
    """Trains ``generator`` and ``discriminator``; calling it runs the generator."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, *, latent_dim: int,
                 conditional: bool = False, label_smoothing: float = 0.0, instance_noise: float = 0.0,
                 discriminator_steps: int = 1, generator_steps: int = 1, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.conditional = bool(conditional)
        self.label_smoothing = real_in_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        self.instance_noise = real_in_range("instance_noise", instance_noise, 0.0, 10.0)
        self.discriminator_steps = positive_int("discriminator_steps", discriminator_steps)
        self.generator_steps = positive_int("generator_steps", generator_steps)
        # Its state goes into the run's backup (AtomicBackupAndRestore), so a resumed run draws new noise, not a replay.
        self.seed_generator = keras.random.SeedGenerator(non_negative_int("seed", seed), name="gan_noise_seed")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("d_loss", "g_loss", "d_real", "d_fake")}
        self.built = True  # both networks arrive built; BackupAndRestore refuses an unbuilt model

    def compile(self, d_optimizer, g_optimizer, loss_fn=None, **kwargs):
        # d_optimizer doubles as Keras' own ``optimizer`` (its iterations count the steps), so no unused
        # default optimizer is built, saved and mismatched on restore.
        super().compile(optimizer=d_optimizer, **kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn or keras.losses.BinaryCrossentropy(from_logits=True)
        # Slots made now, so a resume restores the optimizers' moments before the first step.
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def _generate(self, labels, batch_size, training):
        noise = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        return self.generator([noise, labels] if self.conditional else noise, training=training)

    def _discriminate(self, images, labels, training):
        if self.instance_noise > 0:
            images = images + self.instance_noise * keras.random.normal(tf.shape(images), seed=self.seed_generator)
        return self.discriminator([images, labels] if self.conditional else images, training=training)

    def _discriminator_step(self, real_images, labels, batch_size):
        fake_images = self._generate(labels, batch_size, training=True)
        with tf.GradientTape() as tape:
            # Real and generated images go through separate forward passes, as DCGAN does: each
            # BatchNorm batch is all real or all fake.
            real_logits = self._discriminate(real_images, labels, training=True)
            fake_logits = self._discriminate(fake_images, labels, training=True)
            real_targets = tf.fill(tf.shape(real_logits), 1.0 - self.label_smoothing)
            loss = (self.loss_fn(real_targets, real_logits)
                    + self.loss_fn(tf.zeros_like(fake_logits), fake_logits)) / 2.0
        variables = self.discriminator.trainable_variables
        self.d_optimizer.apply(tape.gradient(loss, variables), variables)
        return loss, tf.reduce_mean(tf.sigmoid(real_logits)), tf.reduce_mean(tf.sigmoid(fake_logits))

    def _generator_step(self, labels, batch_size):
        with tf.GradientTape() as tape:
            fake_logits = self._discriminate(self._generate(labels, batch_size, training=True), labels,
                                             training=True)
            # The non-saturating loss: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
            loss = self.loss_fn(tf.ones_like(fake_logits), fake_logits)
        variables = self.generator.trainable_variables
        self.g_optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def train_step(self, data):
        real_images, labels = data
        labels = tf.cast(labels, tf.int32)
        batch_size = tf.shape(real_images)[0]
        for _ in range(self.discriminator_steps):
            d_loss, d_real, d_fake = self._discriminator_step(real_images, labels, batch_size)
        for _ in range(self.generator_steps):
            g_loss = self._generator_step(labels, batch_size)
        for name, value in (("d_loss", d_loss), ("g_loss", g_loss), ("d_real", d_real), ("d_fake", d_fake)):
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def fixed_inputs(latent_dim: int, *, num_classes: int | None, rows: int, columns: int, seed: int):
    """The grid's inputs, the same for every epoch and every resume: noise float32 (rows*columns,
    latent_dim) from a stateless draw of ``seed``, and for a conditional GAN labels int32 with row r
    asking for class r (rows <= num_classes)."""
    noise = keras.random.normal((rows * columns, latent_dim), seed=seed)
    if num_classes is None:
        return noise
    labels = keras.ops.repeat(keras.ops.arange(rows, dtype="int32"), columns)
    return [noise, labels]


def tile(images: np.ndarray, columns: int, gap: int = 2) -> np.ndarray:
    """float (N, H, W, 3) in [0, 1] -> one uint8 (rows*(H+gap)-gap, columns*(W+gap)-gap, 3) image."""
    count, height, width, _ = images.shape
    rows = -(-count // columns)
    grid = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    pixels = np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
    for index, image in enumerate(pixels):
        row, column = divmod(index, columns)
        grid[row * (height + gap):row * (height + gap) + height,
             column * (width + gap):column * (width + gap) + width] = image
    return grid


class SampleGrid(keras.callbacks.Callback):
    """After every epoch, the generator's images for fixed inputs as ``samples-epochNNN.png`` (epochs
    counted from 1, continuing across resumes) and the latest as ``samples.png``; logs
    ``sample_change``, the mean absolute change of the grid's pixels (in [0, 1]) since the previous
    epoch's samples.png (NaN for the first epoch), which falls to zero when the generator stops learning."""

    def __init__(self, generator: keras.Model, folder, inputs, columns: int):
        super().__init__()
        self.generator, self.folder, self.inputs, self.columns = generator, pathlib.Path(folder), inputs, columns

    def on_epoch_end(self, epoch, logs=None):
        from PIL import Image

        grid = tile(keras.ops.convert_to_numpy(self.generator(self.inputs, training=False)), self.columns)
        previous = self.folder / "samples.png"
        change = float("nan")
        if previous.is_file():
            with Image.open(previous) as image:
                before = np.asarray(image.convert("RGB"))
            if before.shape == grid.shape:
                change = float(np.mean(np.abs(grid.astype(np.float32) - before)) / 255.0)
        if logs is not None:
            logs["sample_change"] = change
        for name in (f"samples-epoch{epoch + 1:03d}.png", "samples.png"):
            with atomic_path(self.folder / name) as temporary:
                Image.fromarray(grid).save(temporary, format="PNG")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops a diverged run with a ValueError (one line from the CLI, exit status 2) at the end of the
    epoch whose d_loss or g_loss is NaN or infinite, rather than finishing with NaN weights. Put first:
    the diverged epoch is then neither scored, logged nor backed up (as ``training.callbacks``' check of
    a classifier's loss, which a GAN does not log)."""

    def on_epoch_end(self, epoch, logs=None):
        for name in ("d_loss", "g_loss"):
            value = float((logs or {}).get(name, 0.0))
            if not np.isfinite(value):
                raise ValueError(f"training diverged: {name} is {value} after epoch {epoch + 1}; start a new run "
                                 "with a lower learning rate or stability aids")


class CollapseWatch(keras.callbacks.Callback):
    """Prints a warning when an epoch's ``diversity`` (generated over real, from the scorer) is below
    ``threshold`` (mode collapse: few distinct images per class) or its ``sample_change`` is below
    ``still`` (the fixed-noise samples no longer change: the generator has stopped learning)."""

    def __init__(self, threshold: float = 0.5, still: float = 1e-3):
        super().__init__()
        self.threshold, self.still = threshold, still

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        diversity, change = logs.get("diversity", float("nan")), logs.get("sample_change", float("nan"))
        if diversity < self.threshold:
            print(f"warning: epoch {epoch + 1}: mode collapse? generated images are {diversity:.2f} as diverse "
                  f"as real ones in the judge's features (threshold {self.threshold:g})", flush=True)
        if change < self.still:
            print(f"warning: epoch {epoch + 1}: the samples stopped changing (mean pixel change {change:.5f} "
                  f"< {self.still:g}): the generator is no longer learning", flush=True)


class EpochScores(keras.callbacks.Callback):
    """Adds ``score(generator) -> {name: float}`` (e.g. FID and KID) to the epoch logs, so the numbers land
    in history.csv: on the first epoch of every fit, every ``every``-th epoch and the last; other epochs
    log NaN (CSVLogger fixes its columns at a fit's first epoch). The scorer comes from the caller:
    training/ imports no analysis."""

    def __init__(self, generator: keras.Model, score, every: int = 1):
        super().__init__()
        self.generator, self.score, self.every = generator, score, positive_int("every", every)
        self.names: list[str] = []

    def on_train_begin(self, logs=None):
        self.first = True

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        last = epoch + 1 == (self.params or {}).get("epochs")
        if getattr(self, "first", True) or (epoch + 1) % self.every == 0 or last:
            scores = {name: float(value) for name, value in self.score(self.generator).items()}
            self.names = list(scores)
        else:
            scores = dict.fromkeys(self.names, float("nan"))
        self.first = False
        logs.update(scores)
