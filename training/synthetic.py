"""Conditional-GAN images mixed into a classifier's training batches: the input transform "synthetic".

    {"kind": "transform", "name": "synthetic", "run_dir": "runs/cgan-tiny10", "fraction": 0.3, "seed": 0}

Each step, the leading ``fraction`` of the batch (rounded up) is replaced by images the run's
``generator.keras`` makes for uniformly drawn classes, labelled with those classes. The draws are
stateless in (seed, global step): a resumed run sees the same synthetic images a straight one would.
The generator is frozen (``training=False``, no gradients) and loaded with ``safe_mode=True``.
"""
from __future__ import annotations

import pathlib

import tensorflow as tf

from common.checks import non_negative_int, real_in_range
from training.parts import InputTransform, View, register_part


@register_part("transform", "synthetic")
class SyntheticImages(InputTransform):
    """Replaces ``fraction`` of each batch by generated images of uniformly drawn classes."""

    def __init__(self, run_dir: str, fraction: float, seed: int = 0):
        from loading.run_loader import load_model

        self.run_dir = pathlib.Path(run_dir)
        self.fraction = real_in_range("fraction", fraction, 0.0, 1.0)
        self.seed = non_negative_int("seed", seed)
        path = self.run_dir / "generator.keras"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: --synthetic takes a finished `gan.py cgan` run folder")
        self.generator = load_model(path)
        if len(self.generator.inputs) != 2:
            raise ValueError(f"{path} is an unconditional generator: synthetic training images need labels, "
                             "train one with `python gan.py cgan`")
        self.latent_dim = int(self.generator.inputs[0].shape[-1])
        self.num_classes = int(self.generator.get_layer("label_embedding").input_dim)

    def check_classifier(self, num_classes: int) -> None:
        """A generator must draw only classes the classifier has."""
        if self.num_classes > num_classes:
            raise ValueError(f"the generator in {self.run_dir} makes {self.num_classes} classes but the classifier "
                             f"has {num_classes}: train both on the same --classes")

    def check_model(self, model) -> None:
        """Before the run folder is written: the classifier has the generator's classes."""
        self.check_classifier(int(model.outputs[0].shape[-1]))

    def views(self, model, x, y, step):
        self.check_classifier(int(model.base.outputs[0].shape[-1]))
        batch = tf.shape(x)[0]
        count = tf.cast(tf.math.ceil(self.fraction * tf.cast(batch, tf.float32) - 1e-6), tf.int32)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        labels_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        labels = tf.random.stateless_uniform((count,), labels_seed, 0, self.num_classes, dtype=tf.int32)
        noise = tf.random.stateless_normal((count, self.latent_dim), noise_seed)
        images = tf.stop_gradient(self.generator([noise, labels], training=False))
        if images.shape[1:3] != x.shape[1:3]:  # a 64x64 generator feeding a 72x72 or 32x32 classifier
            images = tf.clip_by_value(tf.image.resize(images, tf.shape(x)[1:3]), 0.0, 1.0)
        return [View("synthetic", tf.cast(images, x.dtype), labels, route="clean", replaces=count)]

