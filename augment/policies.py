"""Augmentation policies by name, and the random draw of their per-image parameters.

A `Policy` uses the keyword names and meanings of the legacy Keras `ImageDataGenerator`
(pixel scale 0..255): shear in degrees, x and y zoom drawn independently, one channel offset per
image, multiplicative (PIL) brightness. `draw_params` is the batched, seeded twin of
`ImageDataGenerator.get_random_transform`; `augment.transforms.apply_transform` applies its output.
"""
from __future__ import annotations

import dataclasses
import numbers

import keras

FILL_MODES = ("reflect", "nearest")  # the modes whose TF kernel equals scipy.ndimage's (tested)


@dataclasses.dataclass(frozen=True)
class Policy:
    """ImageDataGenerator settings plus `channel_shuffle_probability` (our addition).

    Shift ranges follow the legacy rules: a float below 1 is a fraction of the image size, a float
    of 1 or more is pixels drawn uniformly, an int n draws integer pixels from {-(n-1), ..., n-1}.
    `zoom_range` may be a float z, meaning (1 - z, 1 + z).
    """

    rotation_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    shear_range: float = 0.0
    zoom_range: tuple[float, float] = (1.0, 1.0)
    channel_shift_range: float = 0.0
    brightness_range: tuple[float, float] | None = None
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "reflect"
    channel_shuffle_probability: float = 0.0

    def __post_init__(self):
        for name in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range",
                     "channel_shift_range"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Policy.{name} must be a number >= 0. Received: {name}={value!r}")
        zoom = self.zoom_range
        if isinstance(zoom, numbers.Real):
            zoom = (1.0 - zoom, 1.0 + zoom)
        if len(zoom) != 2 or not 0 < zoom[0] <= zoom[1]:
            raise ValueError(f"Policy.zoom_range must be z or (lo, hi) with 0 < lo <= hi. "
                             f"Received: zoom_range={self.zoom_range!r}")
        # Frozen dataclass: normalise through object.__setattr__ so equal policies compare equal.
        object.__setattr__(self, "zoom_range", (float(zoom[0]), float(zoom[1])))
        if self.brightness_range is not None:
            if len(self.brightness_range) != 2 or self.brightness_range[0] > self.brightness_range[1]:
                raise ValueError(f"Policy.brightness_range must be (lo, hi) or None. "
                                 f"Received: brightness_range={self.brightness_range!r}")
            object.__setattr__(self, "brightness_range", tuple(float(v) for v in self.brightness_range))
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"Policy.fill_mode must be one of {FILL_MODES}. "
                             f"Received: fill_mode={self.fill_mode!r}")
        if not 0.0 <= self.channel_shuffle_probability <= 1.0:
            raise ValueError(f"Policy.channel_shuffle_probability must be in [0, 1]. Received: "
                             f"channel_shuffle_probability={self.channel_shuffle_probability!r}")


_POLICIES: dict[str, Policy] = {}


def register_policy(name: str, policy: Policy) -> Policy:
    """Registers `policy` under `name` (re-registering the same name replaces it)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"A policy name must be a non-empty string. Received: name={name!r}")
    if not isinstance(policy, Policy):
        raise ValueError(f"register_policy expects a Policy. Received: policy={policy!r}")
    _POLICIES[name] = policy
    return policy


def get_policy(name: str | Policy) -> Policy:
    """The registered policy called `name` (a Policy passes through)."""
    if isinstance(name, Policy):
        return name
    if name not in _POLICIES:
        raise ValueError(f"Unknown augmentation policy {name!r}; known policies: {policy_names()}")
    return _POLICIES[name]


def policy_names() -> list[str]:
    return sorted(_POLICIES)


register_policy("none", Policy())
register_policy("A", Policy(width_shift_range=0.2, height_shift_range=0.2, channel_shift_range=60.0,
                            channel_shuffle_probability=1.0))
register_policy("B", Policy(rotation_range=30.0, brightness_range=(0.3, 0.7), shear_range=0.2,
                            zoom_range=0.2, horizontal_flip=True, width_shift_range=0.2,
                            height_shift_range=0.2, channel_shift_range=90.0,
                            channel_shuffle_probability=1.0))
register_policy("C", Policy(shear_range=20.0, zoom_range=0.4, horizontal_flip=True,
                            width_shift_range=0.2, height_shift_range=0.2, channel_shift_range=90.0,
                            channel_shuffle_probability=0.2))
# The CIS680 preprocessing ablation: horizontal flips, then flips and shifts of up to 10% (3 px at 32x32).
register_policy("flip", Policy(horizontal_flip=True))
register_policy("flip_shift", Policy(horizontal_flip=True, width_shift_range=0.1, height_shift_range=0.1))

# Columns of the one uniform draw per image (one stateless call keeps draws reproducible by seed).
(_THETA, _TX, _TX_SIGN, _TY, _TY_SIGN, _SHEAR, _ZX, _ZY, _FLIP_H, _FLIP_V, _CHANNEL_SHIFT,
 _BRIGHTNESS, _SHUFFLE) = range(13)
_PERMUTATION_KEYS = slice(13, 16)
_NUM_DRAWS = 16


def _uniform(shape, seed):
    if isinstance(seed, keras.random.SeedGenerator):
        return keras.random.uniform(shape, seed=seed)  # backend-neutral path used by the layer
    import tensorflow as tf  # tf.data hands us a (2,) seed tensor, which keras.random rejects

    return tf.random.stateless_uniform(shape, seed=tf.cast(seed, "int64"))


def _symmetric(u, limit):
    return (2.0 * u - 1.0) * limit


def _shift(uniforms, column, limit, size):
    """get_random_transform's shift draw for one axis, in pixels."""
    ops = keras.ops
    if isinstance(limit, numbers.Integral):
        # Legacy np.random.choice(n) * choice([-1, 1]): an integer in [0, n) with a random sign.
        magnitude = ops.minimum(ops.floor(uniforms[:, column] * limit), limit - 1)
        return magnitude * ops.where(uniforms[:, column + 1] < 0.5, -1.0, 1.0)
    shift = _symmetric(uniforms[:, column], float(limit))
    return shift * ops.cast(size, "float32") if limit < 1 else shift


def draw_params(policy: str | Policy, batch_size, height, width, seed) -> dict:
    """Per-image parameters (vectors of length batch_size) for `apply_transform`.

    The same seed (a (2,) int tensor, or a keras.random.SeedGenerator) gives the same parameters.
    Like get_random_transform, "tx" comes from height_shift_range x height and "ty" from
    width_shift_range x width (apply_transform then moves columns by tx and rows by ty; the policies
    here use equal ranges on square images, so the swap is immaterial). Keys a policy leaves
    unused are absent (identity). Our addition: "channel_shuffle" (bool, the draw) and
    "channel_permutation" (int32 (B, 3), the identity where the draw was False; a drawn
    permutation may itself be the identity, 1 time in 6).
    """
    ops = keras.ops
    policy = get_policy(policy)
    u = _uniform((batch_size, _NUM_DRAWS), seed)
    params = {}
    if policy.rotation_range:
        params["theta"] = _symmetric(u[:, _THETA], policy.rotation_range)
    if policy.height_shift_range:
        params["tx"] = _shift(u, _TX, policy.height_shift_range, height)
    if policy.width_shift_range:
        params["ty"] = _shift(u, _TY, policy.width_shift_range, width)
    if policy.shear_range:
        params["shear"] = _symmetric(u[:, _SHEAR], policy.shear_range)
    low, high = policy.zoom_range
    if (low, high) != (1.0, 1.0):
        params["zx"] = low + (high - low) * u[:, _ZX]
        params["zy"] = low + (high - low) * u[:, _ZY]
    if policy.horizontal_flip:
        params["flip_horizontal"] = u[:, _FLIP_H] < 0.5
    if policy.vertical_flip:
        params["flip_vertical"] = u[:, _FLIP_V] < 0.5
    if policy.channel_shift_range:
        params["channel_shift_intensity"] = _symmetric(u[:, _CHANNEL_SHIFT], policy.channel_shift_range)
    if policy.brightness_range is not None:
        low, high = policy.brightness_range
        params["brightness"] = low + (high - low) * u[:, _BRIGHTNESS]
    if policy.channel_shuffle_probability:
        shuffle = u[:, _SHUFFLE] < policy.channel_shuffle_probability
        # argsort of i.i.d. uniform keys is a uniformly random permutation.
        drawn = ops.cast(ops.argsort(u[:, _PERMUTATION_KEYS], axis=-1), "int32")
        identity = ops.zeros_like(drawn) + ops.arange(3, dtype="int32")
        params["channel_shuffle"] = shuffle
        params["channel_permutation"] = ops.where(shuffle[:, None], drawn, identity)
    return params
