"""Policy augmentation for tf.data (`make_augmenter`) and inside a model (`PolicyAugmentation`)."""
from __future__ import annotations

import dataclasses

import keras

from augment.policies import Policy, draw_params, get_policy
from augment.transforms import apply_transform


def augment_batch(images, policy: str | Policy, seed, apply=None):
    """Draws one set of parameters per image from `seed` and applies them; [0, 1] in and out.

    The legacy parameters are defined on the 0..255 scale (channel shift in grey levels, PIL
    brightness on uint8), so the batch is scaled up, transformed once and scaled back.
    """
    policy = get_policy(policy)
    images = keras.ops.convert_to_tensor(images, dtype="float32")
    shape = keras.ops.shape(images)
    params = draw_params(policy, shape[0], shape[1], shape[2], seed)
    if not params:
        return images
    params.pop("channel_shuffle", None)  # the draw flag; channel_permutation carries its effect
    if apply is None:
        return apply_transform(images * 255.0, params, fill_mode=policy.fill_mode) / 255.0
    return apply(images * 255.0, params) / 255.0


def make_augmenter(policy: str | Policy):
    """callable(images float32 [0, 1] (B, H, W, 3), seed int (2,)) -> augmented images in [0, 1].

    For data.pipeline.make_dataset, which calls it on whole batches inside a tf.data map; the same
    seed gives the same output.
    """
    policy = get_policy(policy)  # fail on an unknown name now, not inside a tf.data trace
    import tensorflow as tf  # tf.data is TensorFlow's; the layer below stays backend-neutral

    # XLA fuses the coordinate arithmetic, the four gathers and the pointwise steps into a few
    # loops: about 3x the throughput of the unfused graph on a 2-core CPU (benchmarks/augment.py).
    # The draw stays outside it: XLA's Philox yields other numbers than TF's kernel for one seed.
    @tf.function(jit_compile=True)
    def apply(images, params):
        return apply_transform(images, params, fill_mode=policy.fill_mode)

    def augment(images, seed):
        return augment_batch(images, policy, seed, apply)

    return augment


@keras.saving.register_keras_serializable(package="zoo")
class PolicyAugmentation(keras.layers.Layer):
    """Applies a named (or given) policy when training=True; the identity otherwise.

    Draws from its own keras.random.SeedGenerator, so a seeded layer repeats its sequence. Inside a
    model it redraws on every call: for adversarial training, augment once before the attack.
    """

    def __init__(self, policy: str | Policy | dict = "none", seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(policy, dict):
            policy = Policy(**{key: tuple(value) if isinstance(value, list) else value
                               for key, value in policy.items()})
        self.policy = policy
        self._policy = get_policy(policy)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        augmented = augment_batch(inputs, self._policy, self.seed_generator)
        return keras.ops.cast(augmented, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        # A registered name round-trips by name; an unregistered Policy by its fields.
        policy = self.policy if isinstance(self.policy, str) else dataclasses.asdict(self._policy)
        config.update({"policy": policy, "seed": self.seed})
        return config

