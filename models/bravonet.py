"""The ResNet-18 family: BravoNet v1-v3 (CS182 report), resnet18_maxpool (IMT report), resnet18_cifar.

ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", 2016): a stem, four
stages of two basic blocks (3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the shortcut,
-> ReLU) with 64, 128, 256, 512 filters, the first block of stages 2-4 downsampling by 2
(1x1 convolution + BN on the shortcut), global average pooling, optional dropout and a dense
layer giving logits. Every variant is the same body (`resnet_body`, which models.resnet
reuses for ResNet-34 to -152); they differ only in the stem and the dropout:

| model            | default input | stem conv   | stem max-pool | dropout before the head |
| ---------------- | ------------- | ----------- | ------------- | ----------------------- |
| bravonet_v1      | 72x72         | 7x7/2       | 3x3/2         | 0.0                     |
| bravonet_v2      | 64x64         | 7x7/2       | 3x3/2         | 0.5 (chosen)            |
| bravonet_v3      | 64x64         | 7x7/2       | 3x3/2         | 0.0                     |
| resnet18_maxpool | 64x64         | 3x3/1       | 3x3/2         | 0.0                     |
| resnet18_cifar   | 32x32         | 3x3/1       | none          | 0.0                     |

The CS182 report trains "ResNet-18 from scratch" and does not say how its three versions
differ beyond the input size (v1 on 72x72 upscaled images); here they are the standard
ImageNet ResNet-18, v2 adds dropout before the classifier (a regularisation choice made by
this project) and v3 is the plain network the report's optimizer study used.
The IMT report's change (42% -> 62% on Tiny ImageNet) was adding a 3x3/2 max-pool after the
first convolution of a CIFAR-style network: resnet18_maxpool is that network and
resnet18_cifar the one without it. All convolutions and pools use ``padding="same"``, so
every input size down to 1x1 builds (a 7x7/2 stem reaches stage 4 at 1x1 from 32x32).

Every builder takes the injectable options of models.options: ``norm_layer`` (every BN),
``conv_constraint`` (every Conv2D and the logits Dense) and ``residual_merge`` ("add" or "convex").
"""
from __future__ import annotations

import keras

from common import checks
from models.layers import check_common_arguments, check_rate, normalized_input
from models.options import batch_norm, injected, merge
from models.registry import register_model

STAGE_FILTERS = (64, 128, 256, 512)
_BLOCKS_PER_STAGE = (2, 2, 2, 2)


def conv_bn(x, filters, kernel_size, strides, name, *, norm_layer, conv_constraint):
    """Conv2D ``{name}_conv`` (no bias: the norm layer after it has its own offset) -> ``{name}_bn``."""
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                            kernel_initializer="he_normal", kernel_constraint=conv_constraint,
                            name=f"{name}_conv")(x)
    return norm_layer(name=f"{name}_bn")(x)


def basic_block(x, filters, strides, name, *, norm_layer, conv_constraint, residual_merge):
    """ResNet's basic block: two 3x3 conv-BN, the shortcut (1x1 conv-BN when the shape changes), ReLU."""
    layers = dict(norm_layer=norm_layer, conv_constraint=conv_constraint)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides, f"{name}_shortcut", **layers)
    x = conv_bn(x, filters, 3, strides, f"{name}_1", **layers)
    x = keras.layers.ReLU(name=f"{name}_1_relu")(x)
    x = conv_bn(x, filters, 3, 1, f"{name}_2", **layers)
    x = merge([shortcut, x], residual_merge, name)
    return keras.layers.ReLU(name=f"{name}_out")(x)


def resnet_body(name, num_classes, input_shape, *, normalization, stem_kernel_size, stem_strides,
                stem_max_pool, dropout, norm_layer, conv_constraint, residual_merge,
                blocks_per_stage=_BLOCKS_PER_STAGE, block=basic_block):
    """A ResNet: stem (conv-BN-ReLU, optional 3x3/2 max-pool), four stages of ``block`` with
    STAGE_FILTERS widths (the first block of stages 2-4 downsampling by 2), global average pool,
    dropout, Dense logits. ResNet-18 here, the deeper ones in models.resnet."""
    input_shape = check_common_arguments(num_classes, input_shape, normalization)
    dropout = check_rate("dropout", dropout)
    checks.positive_int("stem_kernel_size", stem_kernel_size)
    checks.positive_int("stem_strides", stem_strides)
    options = injected(norm_layer, conv_constraint, residual_merge)
    layers = {key: options[key] for key in ("norm_layer", "conv_constraint")}

    inputs, x = normalized_input(input_shape, normalization)
    x = conv_bn(x, STAGE_FILTERS[0], stem_kernel_size, stem_strides, "stem", **layers)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stem_max_pool:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (filters, blocks) in enumerate(zip(STAGE_FILTERS, blocks_per_stage), start=1):
        for index in range(1, blocks + 1):
            strides = 2 if stage > 1 and index == 1 else 1
            x = block(x, filters, strides, f"stage{stage}_block{index}", **options)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, kernel_constraint=options["conv_constraint"], name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model
def bravonet_v1(num_classes=200, input_shape=(72, 72, 3), *, normalization="imagenet", dropout=0.0,
                norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """BravoNet v1: ResNet-18 from scratch on 72x72 (Lanczos-upscaled) images."""
    return resnet_body("bravonet_v1", num_classes, input_shape, normalization=normalization, stem_kernel_size=7,
                       stem_strides=2, stem_max_pool=True, dropout=dropout, norm_layer=norm_layer,
                       conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def bravonet_v2(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", dropout=0.5,
                norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """BravoNet v2: ResNet-18 on 64x64 images with dropout before the classifier."""
    return resnet_body("bravonet_v2", num_classes, input_shape, normalization=normalization, stem_kernel_size=7,
                       stem_strides=2, stem_max_pool=True, dropout=dropout, norm_layer=norm_layer,
                       conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def bravonet_v3(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", dropout=0.0,
                norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """BravoNet v3: plain ResNet-18 on 64x64 images (the report's optimizer study)."""
    return resnet_body("bravonet_v3", num_classes, input_shape, normalization=normalization, stem_kernel_size=7,
                       stem_strides=2, stem_max_pool=True, dropout=dropout, norm_layer=norm_layer,
                       conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def resnet18_maxpool(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", dropout=0.0,
                     norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """ResNet-18 with a 3x3 stride-1 stem followed by a 3x3/2 max-pool (IMT report)."""
    return resnet_body("resnet18_maxpool", num_classes, input_shape, normalization=normalization,
                       stem_kernel_size=3, stem_strides=1, stem_max_pool=True, dropout=dropout, norm_layer=norm_layer,
                       conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def resnet18_cifar(num_classes=200, input_shape=(32, 32, 3), *, normalization="imagenet", dropout=0.0,
                   norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """CIFAR-style ResNet-18: 3x3 stride-1 stem and no max-pool, for 32x32 inputs."""
    return resnet_body("resnet18_cifar", num_classes, input_shape, normalization=normalization, stem_kernel_size=3,
                       stem_strides=1, stem_max_pool=False, dropout=dropout, norm_layer=norm_layer,
                       conv_constraint=conv_constraint, residual_merge=residual_merge)
