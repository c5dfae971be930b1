"""GAN generators and discriminators for square images in [0, 1] (16, 32 or 64 pixels): the CS182
report's DCGAN and a class-conditional variant.

The report's DCGAN (after Nowozin's 2018 lecture model; DCGAN: Radford et al., 2016) is given in
words only; this module reads it as (w = ``width``, defaults in brackets; at 64x64):

    generator(noise (B, latent_dim [100]))
        dense 4x4x8w -> BN -> ReLU -> reshape (4, 4, 8w)
        4 x [transposed conv 4x4/2 -> BN -> ReLU]: 4w, 2w, w, w/2 channels, 8 -> 16 -> 32 -> 64 pixels
        conv 3x3x3 -> tanh -> rescale to [0, 1]                     width [64]
    discriminator(images (B, 64, 64, 3) in [0, 1])
        rescale to [-1, 1]
        4 x [conv 4x4/2 -> LeakyReLU 0.2]: w, 2w, 4w, 8w channels
        flatten -> dense(dense_units [1024]) -> LeakyReLU 0.2 -> dense(1): a logit   width [64]

At 32x32 (16x16) both drop their last (last two) stride-2 stages. The discriminator has no
BatchNormalization, unlike the report's reading (see ``_discriminator_features`` for why).

The conditional generator (``cgan_generator``) takes a second input, an int32 class label (B,), embeds
it into ``latent_dim`` numbers and concatenates them with the noise. The conditional discriminator
(``cgan_discriminator``) is a projection discriminator (Miyato & Koyama, "cGANs with Projection
Discriminator", ICLR 2018): logit = dense(h) + <embed(label), h>, with h the penultimate features,
instead of feeding 200 one-hot channels. ``spectral_norm=True`` wraps every discriminator convolution
and dense layer in ``keras.layers.SpectralNormalization`` (Miyato et al., ICLR 2018).

These are not classifiers, so they live in their own registry here (``build_gan``), not in the zoo's.
"""
from __future__ import annotations

import numbers
from typing import Callable

import keras

IMAGE_SIZES = (16, 32, 64)
_LEAKY_SLOPE = 0.2
_BATCH_NORM_MOMENTUM = 0.9  # DCGAN's; the zoo's default 0.99 lags behind a generator that keeps changing



_GAN_BUILDERS: dict[str, Callable[..., keras.Model]] = {}


def register_gan(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    """Register ``builder`` under its function name in the GAN registry."""
    if builder.__name__ in _GAN_BUILDERS:
        raise ValueError(f"A GAN model named {builder.__name__!r} is already registered.")
    _GAN_BUILDERS[builder.__name__] = builder
    return builder


def gan_names() -> list[str]:
    """The registered GAN builders, sorted."""
    return sorted(_GAN_BUILDERS)


def build_gan(name: str, **options) -> keras.Model:
    """Build the registered GAN model ``name`` (e.g. "dcgan_generator"), uncompiled."""
    if name not in _GAN_BUILDERS:
        raise ValueError(f"Unknown GAN model {name!r}. Known GAN models: {', '.join(gan_names())}")
    return _GAN_BUILDERS[name](**options)


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _check_width(width, image_size: int = 16) -> int:
    """A generator at 64x64 ends with w/2 channels, so there ``width`` must be even."""
    width = _check_positive("width", width)
    if image_size == 64 and width % 2:
        raise ValueError(f"`width` must be even for 64x64 images. Received: width={width!r}")
    return width


def _check_classes(num_classes) -> int:
    num_classes = _check_positive("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be at least 2. Received: num_classes={num_classes}")
    return num_classes


def _check_image_size(image_size) -> int:
    image_size = _check_positive("image_size", image_size)
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"`image_size` must be one of {', '.join(map(str, IMAGE_SIZES))}. "
                         f"Received: image_size={image_size}")
    return image_size


def _blocks(image_size: int) -> int:
    """Stride-2 stages between the 4x4 map and ``image_size``: 4 at 64x64, 3 at 32x32, 2 at 16x16."""
    return image_size.bit_length() - 3


def _generator_body(latent, width: int, image_size: int):
    """Dense to 4x4, one transposed convolution per doubling, a final convolution; [0, 1] out."""
    x = keras.layers.Dense(4 * 4 * 8 * width, use_bias=False, name="project")(latent)
    x = keras.layers.BatchNormalization(momentum=_BATCH_NORM_MOMENTUM, name="project_bn")(x)
    x = keras.layers.ReLU(name="project_relu")(x)
    x = keras.layers.Reshape((4, 4, 8 * width), name="project_reshape")(x)
    for index in range(1, _blocks(image_size) + 1):
        # 4x4 kernels with stride 2 cover every output pixel equally (no checkerboard from 5x5/2).
        x = keras.layers.Conv2DTranspose(8 * width >> index, 4, strides=2, padding="same", use_bias=False,
                                         name=f"up{index}_deconv")(x)
        x = keras.layers.BatchNormalization(momentum=_BATCH_NORM_MOMENTUM, name=f"up{index}_bn")(x)
        x = keras.layers.ReLU(name=f"up{index}_relu")(x)
    x = keras.layers.Conv2D(3, 3, padding="same", activation="tanh", name="to_rgb")(x)
    return keras.layers.Rescaling(0.5, offset=0.5, name="to_unit_range")(x)


@register_gan
def dcgan_generator(latent_dim: int = 100, width: int = 64, image_size: int = 64) -> keras.Model:
    """Noise float32 (B, latent_dim) -> images float32 (B, image_size, image_size, 3) in [0, 1]."""
    latent_dim = _check_positive("latent_dim", latent_dim)
    width, image_size = _check_width(width, image_size), _check_image_size(image_size)
    noise = keras.Input((latent_dim,), name="noise")
    return keras.Model(noise, _generator_body(noise, width, image_size), name="dcgan_generator")


@register_gan
def cgan_generator(num_classes: int = 200, latent_dim: int = 100, width: int = 64,
                   image_size: int = 64) -> keras.Model:
    """[noise float32 (B, latent_dim), label int32 (B,)] -> images float32 (B, S, S, 3) in [0, 1], S = image_size."""
    num_classes = _check_classes(num_classes)
    latent_dim = _check_positive("latent_dim", latent_dim)
    width, image_size = _check_width(width, image_size), _check_image_size(image_size)
    noise = keras.Input((latent_dim,), name="noise")
    label = keras.Input((), dtype="int32", name="label")
    embedded = keras.layers.Embedding(num_classes, latent_dim, name="label_embedding")(label)
    latent = keras.layers.Concatenate(name="noise_and_label")([noise, embedded])
    return keras.Model([noise, label], _generator_body(latent, width, image_size), name="cgan_generator")


def _maybe_spectral(layer: keras.layers.Layer, spectral_norm: bool) -> keras.layers.Layer:
    if not spectral_norm:
        return layer
    return keras.layers.SpectralNormalization(layer, name=f"{layer.name}_sn")


def _discriminator_features(images, width: int, dense_units: int, spectral_norm: bool, batch_norm: bool = False):
    """One strided convolution per halving down to 4x4, and a dense layer: the penultimate features h
    (B, dense_units).

    No BatchNormalization: the trainer shows the discriminator all-real and all-fake batches, and in
    training mode BN normalises each by its own statistics, so whatever a whole fake batch shares
    (its brightness, a colour cast, its noise texture's strength) is removed before the logit; on the
    hidden dense layer it fixed each batch's mean logit up to the shape of the feature distribution.
    The generator then got no gradient towards the data and learnt pixel noise. ``batch_norm=True``
    puts BN back where it was (after every convolution but the first and after the hidden layer), to
    show that failure (experiments/gan_batchnorm.py)."""
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_signed_range")(images)
    for index in range(1, _blocks(images.shape[1]) + 1):
        conv = keras.layers.Conv2D(width << (index - 1), 4, strides=2, padding="same",
                                   name=f"down{index}_conv")
        x = _maybe_spectral(conv, spectral_norm)(x)
        if batch_norm and index > 1:
            x = keras.layers.BatchNormalization(momentum=_BATCH_NORM_MOMENTUM, name=f"down{index}_bn")(x)
        x = keras.layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"down{index}_leaky_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _maybe_spectral(keras.layers.Dense(dense_units, name="hidden"), spectral_norm)(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(momentum=_BATCH_NORM_MOMENTUM, name="hidden_bn")(x)
    return keras.layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name="hidden_leaky_relu")(x)


@register_gan
def dcgan_discriminator(width: int = 64, dense_units: int = 1024, spectral_norm: bool = False,
                        image_size: int = 64, batch_norm: bool = False) -> keras.Model:
    """Images float32 (B, S, S, 3) in [0, 1], S = image_size -> real-vs-fake logits float32 (B, 1)."""
    width, image_size = _check_width(width), _check_image_size(image_size)
    dense_units = _check_positive("dense_units", dense_units)
    images = keras.Input((image_size, image_size, 3), name="images")
    features = _discriminator_features(images, width, dense_units, bool(spectral_norm), bool(batch_norm))
    logits = _maybe_spectral(keras.layers.Dense(1, name="logit"), bool(spectral_norm))(features)
    return keras.Model(images, logits, name="dcgan_discriminator")


@register_gan
def cgan_discriminator(num_classes: int = 200, width: int = 64, dense_units: int = 1024,
                       spectral_norm: bool = False, image_size: int = 64, batch_norm: bool = False) -> keras.Model:
    """[images float32 (B, S, S, 3) in [0, 1], label int32 (B,)] -> logits float32 (B, 1), projection-style."""
    num_classes = _check_classes(num_classes)
    width, image_size = _check_width(width), _check_image_size(image_size)
    dense_units = _check_positive("dense_units", dense_units)
    images = keras.Input((image_size, image_size, 3), name="images")
    label = keras.Input((), dtype="int32", name="label")
    features = _discriminator_features(images, width, dense_units, bool(spectral_norm), bool(batch_norm))
    unconditional = _maybe_spectral(keras.layers.Dense(1, name="logit"), bool(spectral_norm))(features)
    # The class term <embed(y), h>: how much h looks like class y, one embedding row per class.
    class_embedding = keras.layers.Embedding(num_classes, dense_units, name="class_embedding")(label)
    projection = keras.layers.Dot(axes=1, name="projection")([class_embedding, features])
    logits = keras.layers.Add(name="logit_with_projection")([unconditional, projection])
    return keras.Model([images, label], logits, name="cgan_discriminator")


def build_pair(kind: str, *, num_classes: int | None = None, latent_dim: int = 100, generator_width: int = 64,
               discriminator_width: int = 64, dense_units: int = 1024, spectral_norm: bool = False,
               image_size: int = 64, discriminator_batch_norm: bool = False):
    """(generator, discriminator) for ``kind`` "dcgan" or "cgan" (which needs ``num_classes``)."""
    networks = dict(spectral_norm=spectral_norm, image_size=image_size, batch_norm=discriminator_batch_norm)
    if kind == "dcgan":
        return (dcgan_generator(latent_dim=latent_dim, width=generator_width, image_size=image_size),
                dcgan_discriminator(width=discriminator_width, dense_units=dense_units, **networks))
    if kind == "cgan":
        return (cgan_generator(num_classes=num_classes, latent_dim=latent_dim, width=generator_width,
                               image_size=image_size),
                cgan_discriminator(num_classes=num_classes, width=discriminator_width, dense_units=dense_units,
                                   **networks))
    raise ValueError(f"Unknown GAN kind {kind!r}. Known kinds: cgan, dcgan")
