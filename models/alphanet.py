"""AlphaNet v1-v4: the CS182 Tiny ImageNet report's AlexNet-inspired networks.

The report describes them only in words (AlexNet-like stacks of convolution, batch
normalisation, LeakyReLU, max-pooling and dropout, with dense heads); it gives no layer table.
The table below is this project's reading of those words (AlexNet: Krizhevsky et al., 2012),
scaled to 64x64 inputs:

    input normalisation
    block1: conv 5x5x64   -> BN -> LeakyReLU -> max-pool 2x2/2 (block1_out) -> dropout(conv_dropout)
    block2: conv 3x3x128  -> BN -> LeakyReLU -> max-pool 2x2/2 -> dropout(conv_dropout)
    block3: conv 3x3x256  -> BN -> LeakyReLU -> max-pool 2x2/2 -> dropout(conv_dropout)
    block4: conv 3x3x256  -> BN -> LeakyReLU -> max-pool 2x2/2 -> dropout(conv_dropout)
    block5: conv 3x3x512  -> BN -> LeakyReLU -> max-pool 2x2/2 -> dropout(conv_dropout)
    flatten (2x2x512 at 64x64, 3x3x512 at 72x72, 1x1x512 at 32x32)
    dense(dense_units) -> LeakyReLU -> dropout(dense_dropout)   (x2)
    dense(num_classes) -> logits

Five stride-2 pools shrink 64x64 to a modest 2x2x512 flatten, which keeps the dense head
(and the parameter count) mid-sized and lets the network learn within a few epochs.
All convolutions and pools use ``padding="same"``, so every input size down to 1x1 builds
(32x32 inputs reach the head as 1x1x512).

Versions (from the report, unless marked as chosen here):

| model       | default input | dense_units | conv_dropout | dense_dropout |
| ----------- | ------------- | ----------- | ------------ | ------------- |
| alphanet_v1 | 64x64         | 2048        | 0.4          | 0.5           |
| alphanet_v2 | 64x64         | 2048        | 0.2          | 0.2           |
| alphanet_v3 | 72x72 (a)     | 1024        | 0.2 (b)      | 0.2 (b)       |
| alphanet_v4 | 64x64         | 1024        | 0.2          | 0.2           |

(a) v3 trained on Lanczos-upscaled 72x72 images; (b) the report gives no rate for v3: the
v2/v4 value is used.

Every builder takes the injectable options of models.options: ``norm_layer`` (the five BN layers)
and ``conv_constraint`` (every Conv2D and Dense kernel); ``residual_merge`` is accepted too but
changes nothing (no residual merges here).
"""
from __future__ import annotations

import keras

from common import checks
from models.layers import check_common_arguments, check_rate, normalized_input
from models.options import batch_norm, injected
from models.registry import register_model

# (filters, kernel size) per convolution block.
_BLOCKS = ((64, 5), (128, 3), (256, 3), (256, 3), (512, 3))
_LEAKY_SLOPE = 0.1


def _alphanet(name, num_classes, input_shape, *, normalization, dense_units, conv_dropout, dense_dropout,
              norm_layer, conv_constraint, residual_merge):
    input_shape = check_common_arguments(num_classes, input_shape, normalization)
    conv_dropout = check_rate("conv_dropout", conv_dropout)
    dense_dropout = check_rate("dense_dropout", dense_dropout)
    checks.positive_int("dense_units", dense_units)
    options = injected(norm_layer, conv_constraint, residual_merge)
    constraint = options["conv_constraint"]

    inputs, x = normalized_input(input_shape, normalization)
    for index, (filters, kernel_size) in enumerate(_BLOCKS, start=1):
        prefix = f"block{index}"
        # No bias: the batch normalisation that follows has its own offset.
        x = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                                kernel_constraint=constraint, name=f"{prefix}_conv")(x)
        x = options["norm_layer"](name=f"{prefix}_bn")(x)
        x = keras.layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"{prefix}_leaky_relu")(x)
        # "_out": the block's output, which the smoothness term reads by default (dropout is training noise).
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"{prefix}_out")(x)
        x = keras.layers.Dropout(conv_dropout, name=f"{prefix}_dropout")(x)
    x = keras.layers.Flatten(name="head_flatten")(x)
    for index in (1, 2):
        prefix = f"dense{index}"
        x = keras.layers.Dense(dense_units, kernel_constraint=constraint, name=prefix)(x)
        x = keras.layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=f"{prefix}_leaky_relu")(x)
        x = keras.layers.Dropout(dense_dropout, name=f"{prefix}_dropout")(x)
    outputs = keras.layers.Dense(num_classes, kernel_constraint=constraint, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model
def alphanet_v1(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet",
                dense_units=2048, conv_dropout=0.4, dense_dropout=0.5, norm_layer=batch_norm,
                conv_constraint=None, residual_merge="add") -> keras.Model:
    """AlphaNet v1: heavy dropout (0.4 on conv blocks, 0.5 on the dense head), dense 2048."""
    return _alphanet("alphanet_v1", num_classes, input_shape, normalization=normalization,
                     dense_units=dense_units, conv_dropout=conv_dropout, dense_dropout=dense_dropout,
                     norm_layer=norm_layer, conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def alphanet_v2(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet",
                dense_units=2048, conv_dropout=0.2, dense_dropout=0.2, norm_layer=batch_norm,
                conv_constraint=None, residual_merge="add") -> keras.Model:
    """AlphaNet v2: dropout 0.2 everywhere, dense 2048."""
    return _alphanet("alphanet_v2", num_classes, input_shape, normalization=normalization,
                     dense_units=dense_units, conv_dropout=conv_dropout, dense_dropout=dense_dropout,
                     norm_layer=norm_layer, conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def alphanet_v3(num_classes=200, input_shape=(72, 72, 3), *, normalization="imagenet",
                dense_units=1024, conv_dropout=0.2, dense_dropout=0.2, norm_layer=batch_norm,
                conv_constraint=None, residual_merge="add") -> keras.Model:
    """AlphaNet v3: 72x72 (Lanczos-upscaled) inputs, dense 1024."""
    return _alphanet("alphanet_v3", num_classes, input_shape, normalization=normalization,
                     dense_units=dense_units, conv_dropout=conv_dropout, dense_dropout=dense_dropout,
                     norm_layer=norm_layer, conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def alphanet_v4(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet",
                dense_units=1024, conv_dropout=0.2, dense_dropout=0.2, norm_layer=batch_norm,
                conv_constraint=None, residual_merge="add") -> keras.Model:
    """AlphaNet v4: 64x64 inputs, dense 1024, dropout 0.2."""
    return _alphanet("alphanet_v4", num_classes, input_shape, normalization=normalization,
                     dense_units=dense_units, conv_dropout=conv_dropout, dense_dropout=dense_dropout,
                     norm_layer=norm_layer, conv_constraint=conv_constraint, residual_merge=residual_merge)
