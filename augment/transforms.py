"""Batched twin of the legacy `ImageDataGenerator.apply_transform`, one resample per batch.

Legacy semantics kept (images on the 0..255 scale):
- rotation, shift, shear and zoom form one matrix R @ S @ Sh @ Z about the centre, mapping output
  to input coordinates; legacy builds it on (x, y) = (column, row) after its axis swap, so "tx"
  moves columns and "ty" rows, and its centring uses height/2 for the column and width/2 for the
  row (identical on square images; kept for parity). Flips act on the affine output, so they are
  folded into the same matrix: bilinear resampling commutes with mirroring the output grid.
- the resample is bilinear with scipy.ndimage's "reflect" fill (dcba|abcd|dcba, edge repeated),
  like legacy's order=1. keras.ops.image.affine_transform(fill_mode="reflect") computes the same
  thing (TF's REFLECT maps u < 0 to -u - 1, then clamps; the tests check it against scipy and
  against `resample`), but its kernel has no XLA lowering and ran ~3x slower on our 2-core CPU
  than `resample`'s four gathers compiled by XLA, so we use `resample`.
- channel shift adds one offset per image to every channel, then clips to that image's own min and
  max (taken after the affine step).
- brightness goes through PIL's Brightness on uint8 in legacy: floor, multiply, clip to 0..255,
  floor. We reproduce that arithmetic, so the output is integer-valued like legacy's.
Our addition, "channel_permutation" (B, 3): output channel j takes input channel perm[j]. All the
other steps treat channels alike, so where it happens in the chain does not matter.
"""
from __future__ import annotations

import math

import keras

ops = keras.ops

AFFINE_KEYS = ("theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal", "flip_vertical")
KNOWN_KEYS = AFFINE_KEYS + ("channel_shift_intensity", "brightness", "channel_permutation",
                            "channel_shuffle")


def _matrices(rows):
    """Stacks a 3x3 nested list of (B,) vectors into (B, 3, 3)."""
    return ops.stack([ops.stack(row, axis=-1) for row in rows], axis=-2)


def _vector(params, key, default, batch_size):
    if key not in params or params[key] is None:
        return ops.full((batch_size,), default, dtype="float32")
    return ops.reshape(ops.cast(params[key], "float32"), (batch_size,))


def affine_matrices(params: dict, batch_size, height, width):
    """(B, 8) output->input transforms, keras.ops.image.affine_transform's convention."""
    one = ops.ones((batch_size,), dtype="float32")
    zero = ops.zeros((batch_size,), dtype="float32")

    def get(key, default):
        return _vector(params, key, default, batch_size)

    theta = get("theta", 0.0) * (math.pi / 180.0)
    shear = get("shear", 0.0) * (math.pi / 180.0)
    tx, ty, zx, zy = get("tx", 0.0), get("ty", 0.0), get("zx", 1.0), get("zy", 1.0)
    rotation = _matrices([[ops.cos(theta), -ops.sin(theta), zero],
                          [ops.sin(theta), ops.cos(theta), zero], [zero, zero, one]])
    shift = _matrices([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
    shearing = _matrices([[one, -ops.sin(shear), zero], [zero, ops.cos(shear), zero],
                          [zero, zero, one]])
    zoom = _matrices([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]])
    height = ops.cast(height, "float32")
    width = ops.cast(width, "float32")
    # transform_matrix_offset_center(matrix, h, w): o_x from h on the first (column) coordinate.
    centre_x, centre_y = height / 2.0 - 0.5, width / 2.0 - 0.5
    to_centre = _matrices([[one, zero, one * centre_x], [zero, one, one * centre_y],
                           [zero, zero, one]])
    from_centre = _matrices([[one, zero, -one * centre_x], [zero, one, -one * centre_y],
                             [zero, zero, one]])
    # Flipping the output grid: x -> (W - 1) - x, y -> (H - 1) - y, applied before the affine map.
    flip_x = ops.where(ops.cast(get("flip_horizontal", 0.0), "bool"), -1.0, 1.0)
    flip_y = ops.where(ops.cast(get("flip_vertical", 0.0), "bool"), -1.0, 1.0)
    flips = _matrices([[flip_x, zero, (1.0 - flip_x) / 2.0 * (width - 1.0)],
                       [zero, flip_y, (1.0 - flip_y) / 2.0 * (height - 1.0)], [zero, zero, one]])
    matrix = to_centre
    for factor in (rotation, shift, shearing, zoom, from_centre, flips):
        matrix = ops.matmul(matrix, factor)
    flat = ops.reshape(matrix, (batch_size, 9))
    return ops.concatenate([flat[:, :6], ops.zeros((batch_size, 2), dtype="float32")], axis=-1)


def _reflect(index, size):
    """scipy "reflect" on the integer grid: period 2n, mirrored about -0.5 and n - 0.5."""
    index = ops.mod(index, 2 * size)  # floor-mod: non-negative for negative indices too
    return ops.where(index < size, index, 2 * size - 1 - index)


def _nearest(index, size):
    return ops.clip(index, 0, size - 1)


def resample(images, transforms, fill_mode="reflect"):
    """Bilinear resampling of (B, H, W, C) through (B, 8) output->input affine transforms.

    Same convention as keras.ops.image.affine_transform (x = column; the projective terms must be
    0). Pure keras.ops, so it runs under XLA and on every backend.
    """
    fold = _reflect if fill_mode == "reflect" else _nearest
    shape = ops.shape(images)
    batch_size, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    rows = ops.cast(ops.arange(height), "float32")[None, :, None]
    columns = ops.cast(ops.arange(width), "float32")[None, None, :]
    t = [transforms[:, index][:, None, None] for index in range(6)]
    # Clipping keeps the int32 cast defined for absurd transforms; the fold is periodic anyway.
    x = ops.clip(t[0] * columns + t[1] * rows + t[2], -1e6, 1e6)
    y = ops.clip(t[3] * columns + t[4] * rows + t[5], -1e6, 1e6)
    x0, y0 = ops.floor(x), ops.floor(y)
    weight_x, weight_y = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    left, right = fold(x0, width), fold(x0 + 1, width)
    image_start = (ops.arange(batch_size, dtype="int32") * (height * width))[:, None, None]
    top, bottom = image_start + fold(y0, height) * width, image_start + fold(y0 + 1, height) * width
    pixels = ops.reshape(images, (-1, channels))

    def at(index):
        return ops.take(pixels, index, axis=0)

    upper = at(top + left) * (1.0 - weight_x) + at(top + right) * weight_x
    lower = at(bottom + left) * (1.0 - weight_x) + at(bottom + right) * weight_x
    return upper * (1.0 - weight_y) + lower * weight_y


def channel_shift(images, intensity):
    """apply_channel_shift per image: + one offset, clipped to the image's own min/max."""
    low = ops.min(images, axis=(1, 2, 3), keepdims=True)
    high = ops.max(images, axis=(1, 2, 3), keepdims=True)
    shifted = images + ops.reshape(ops.cast(intensity, images.dtype), (-1, 1, 1, 1))
    return ops.minimum(ops.maximum(shifted, low), high)


def brightness(images, factor):
    """apply_brightness_shift(x, factor, scale=False) on 0..255 data: PIL Brightness on uint8."""
    factor = ops.reshape(ops.cast(factor, images.dtype), (-1, 1, 1, 1))
    return ops.floor(ops.clip(ops.floor(images) * factor, 0.0, 255.0))


def permute_channels(images, permutation):
    """Output channel j = input channel permutation[:, j], per image (an exact one-hot product)."""
    one_hot = ops.one_hot(ops.cast(permutation, "int32"), 3, dtype=images.dtype)  # (B, j, k)
    # A broadcast multiply-and-sum rather than einsum: XLA fuses it; a batched 3x3 matmul is slow.
    return ops.sum(images[:, :, :, None, :] * one_hot[:, None, None, :, :], axis=-1)


def apply_transform(images, params: dict, fill_mode: str = "reflect"):
    """Applies ImageDataGenerator.apply_transform's parameters to a batch (B, H, W, 3), 0..255.

    `params` holds per-image vectors under the legacy keys (theta, tx, ty, shear, zx, zy,
    flip_horizontal, flip_vertical, channel_shift_intensity, brightness) plus our
    channel_permutation; a missing key is the identity ("channel_shuffle", draw_params' flag, is
    accepted and ignored). Works eagerly, in graph mode and under XLA.
    """
    unknown = sorted(set(params) - set(KNOWN_KEYS))
    if unknown:
        raise ValueError(f"Unknown transform parameters {unknown}; known: {list(KNOWN_KEYS)}")
    if fill_mode not in ("reflect", "nearest"):
        raise ValueError(f"fill_mode must be 'reflect' or 'nearest'. Received: fill_mode={fill_mode!r}")
    images = ops.convert_to_tensor(images, dtype="float32")
    if len(images.shape) != 4:
        raise ValueError(f"apply_transform expects (B, H, W, C) images. Received shape {images.shape}")
    shape = ops.shape(images)
    batch_size, height, width = shape[0], shape[1], shape[2]
    if any(params.get(key) is not None for key in AFFINE_KEYS):
        transforms = affine_matrices(params, batch_size, height, width)
        images = resample(images, transforms, fill_mode)
    if params.get("channel_shift_intensity") is not None:
        images = channel_shift(images, params["channel_shift_intensity"])
    if params.get("brightness") is not None:
        images = brightness(images, params["brightness"])
    if params.get("channel_permutation") is not None:
        images = permute_channels(images, params["channel_permutation"])
    return images
