"""GAN train-step throughput: this project's GANTrainer against the keras-io DCGAN, at the same sizes.

    python benchmarks/gan.py [--batch-size 32] [--steps 6] [--repeats 3]

Rows (64x64x3 images, the same random batches for every row):
  (a) keras-io's DCGAN ("DCGAN to generate face images": its GAN class and train_step, one discriminator
      pass over real and fake concatenated, its layout: D conv 64-128-128, G dense 8x8x128 then
      transposed conv 128-256-512, latent 128);
  (b) GANTrainer (this project) training that same keras-io layout (logits instead of a sigmoid);
  (c) GANTrainer with the report's DCGAN (models.gan) at the committed run's widths (16) and
  (d) at the default widths (64).
(b) against (a) is the trainer's cost at equal networks; it should be no slower. Each repeat times
``steps`` train steps per row after a warm-up, rows interleaved (in alternating order) so load from
other processes hits each alike. Prints a Markdown table of medians and writes results/benchmarks/gan.json.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from common.cli import positive_int, run_cli  # noqa: E402
from common.run_folder import write_json  # noqa: E402
from models.gan import build_pair  # noqa: E402
from training.gan import GANTrainer  # noqa: E402

OUTPUT = REPO / "results" / "benchmarks" / "gan.json"
KERAS_IO_LATENT = 128


def keras_io_discriminator(sigmoid: bool) -> keras.Model:
    layers = keras.layers
    return keras.Sequential([
        keras.Input((64, 64, 3)),
        layers.Conv2D(64, 4, strides=2, padding="same"), layers.LeakyReLU(0.2),
        layers.Conv2D(128, 4, strides=2, padding="same"), layers.LeakyReLU(0.2),
        layers.Conv2D(128, 4, strides=2, padding="same"), layers.LeakyReLU(0.2),
        layers.Flatten(), layers.Dropout(0.2), layers.Dense(1, activation="sigmoid" if sigmoid else None)],
        name="keras_io_discriminator")


def keras_io_generator() -> keras.Model:
    layers = keras.layers
    return keras.Sequential([
        keras.Input((KERAS_IO_LATENT,)), layers.Dense(8 * 8 * 128), layers.Reshape((8, 8, 128)),
        layers.Conv2DTranspose(128, 4, strides=2, padding="same"), layers.LeakyReLU(0.2),
        layers.Conv2DTranspose(256, 4, strides=2, padding="same"), layers.LeakyReLU(0.2),
        layers.Conv2DTranspose(512, 4, strides=2, padding="same"), layers.LeakyReLU(0.2),
        layers.Conv2D(3, 5, padding="same", activation="sigmoid")], name="keras_io_generator")


class KerasIoGAN(keras.Model):
    """keras-io's GAN class as published (TensorFlow backend): labels with noise, one D pass on both."""

    def __init__(self, discriminator, generator, latent_dim):
        super().__init__()
        self.discriminator, self.generator, self.latent_dim = discriminator, generator, latent_dim
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer, self.g_optimizer, self.loss_fn = d_optimizer, g_optimizer, loss_fn
        self.d_loss_metric = keras.metrics.Mean(name="d_loss")
        self.g_loss_metric = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self):
        return [self.d_loss_metric, self.g_loss_metric]

    def train_step(self, data):
        real_images = data[0] if isinstance(data, tuple) else data
        batch_size = tf.shape(real_images)[0]
        noise = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        generated = self.generator(noise)
        combined = tf.concat([generated, real_images], axis=0)
        labels = tf.concat([tf.ones((batch_size, 1)), tf.zeros((batch_size, 1))], axis=0)
        labels += 0.05 * tf.random.uniform(tf.shape(labels))
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(combined))
        gradients = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_weights))
        noise = keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((batch_size, 1)), self.discriminator(self.generator(noise)))
        gradients = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {"d_loss": self.d_loss_metric.result(), "g_loss": self.g_loss_metric.result()}


def adam():
    return keras.optimizers.Adam(2e-4, beta_1=0.5)


def make_rows() -> dict:
    keras.utils.set_random_seed(0)
    keras_io = KerasIoGAN(keras_io_discriminator(sigmoid=True), keras_io_generator(), KERAS_IO_LATENT)
    keras_io.compile(adam(), adam(), keras.losses.BinaryCrossentropy())
    ours_same = GANTrainer(keras_io_generator(), keras_io_discriminator(sigmoid=False), latent_dim=KERAS_IO_LATENT)
    ours_same.compile(d_optimizer=adam(), g_optimizer=adam())
    rows = {"a_keras_io": ("(a) keras-io DCGAN, its layout", keras_io),
            "b_ours_keras_io_layout": ("(b) GANTrainer, keras-io layout", ours_same)}
    for key, width in (("c_ours_dcgan_width16", 16), ("d_ours_dcgan_width64", 64)):
        generator, discriminator = build_pair("dcgan", generator_width=width, discriminator_width=width,
                                              dense_units=256 if width == 16 else 1024)
        trainer = GANTrainer(generator, discriminator, latent_dim=100)
        trainer.compile(d_optimizer=adam(), g_optimizer=adam())
        rows[key] = (f"({key[0]}) GANTrainer, report's DCGAN, widths {width}", trainer)
    return rows


def machine_info() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": platform.processor() or "",
            "cpu_count": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU")), "load_average_at_start": os.getloadavg()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per step (default: 32)")
    parser.add_argument("--steps", type=positive_int, default=6, help="timed train steps per repeat (default: 6)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed passes per row; the median is reported")
    parser.add_argument("--out", default=str(OUTPUT), help="JSON output (default: results/benchmarks/gan.json)")
    args = parser.parse_args(argv)
    images = tf.random.uniform((args.steps * args.batch_size, 64, 64, 3), seed=0)
    labels = tf.zeros((args.steps * args.batch_size,), tf.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(args.batch_size).cache()
    rows = make_rows()
    for _, model in rows.values():  # warm-up: trace each train step once
        model.fit(dataset.take(1), epochs=1, verbose=0)
    rates = {key: [] for key in rows}
    for repeat in range(args.repeats):
        # Alternate the order, so a row never always runs right after the same one (allocator, load).
        order = list(rows.items()) if repeat % 2 == 0 else list(rows.items())[::-1]
        for key, (label, model) in order:
            start = time.perf_counter()
            model.fit(dataset, epochs=1, verbose=0)
            rates[key].append(args.steps * args.batch_size / (time.perf_counter() - start))
            print(f"repeat {repeat + 1}/{args.repeats} {label}: {rates[key][-1]:.1f} images/s", flush=True)
    medians = {key: statistics.median(values) for key, values in rates.items()}
    print(f"\n| row | images/s (median of {args.repeats}) | / (a) |\n| --- | ---: | ---: |")
    for key, (label, _) in rows.items():
        print(f"| {label} | {medians[key]:,.1f} | {medians[key] / medians['a_keras_io']:.2f} |")
    result = {"benchmark": "gan", "machine": machine_info(),
              "settings": {"batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
                           "image_shape": [64, 64, 3], "command": "python benchmarks/gan.py " + " ".join(argv or
                                                                                                      sys.argv[1:])},
              "rows": {key: {"label": label, "images_per_second": rates[key], "median_images_per_second": medians[key]}
                       for key, (label, _) in rows.items()},
              "b_over_a": medians["b_ours_keras_io_layout"] / medians["a_keras_io"]}
    out = pathlib.Path(args.out)
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
