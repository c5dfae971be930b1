"""Deeper ResNets from scratch: ResNet-34, -50, -101 and -152 (He et al. 2016), for 64x64 images.

They are models.bravonet's ``resnet_body`` (the stem, four stages of 64, 128, 256, 512 filters, the first
block of stages 2-4 downsampling by 2, global average pool, dropout, Dense logits) with more blocks:

| model     | blocks per stage | block                      | default input |
| --------- | ---------------- | -------------------------- | ------------- |
| resnet34  | 3, 4, 6, 3       | basic (two 3x3)            | 64x64         |
| resnet50  | 3, 4, 6, 3       | bottleneck (1x1, 3x3, 1x1) | 64x64         |
| resnet101 | 3, 4, 23, 3      | bottleneck                 | 64x64         |
| resnet152 | 3, 8, 36, 3      | bottleneck                 | 64x64         |

The bottleneck block widens its output to 4x the stage's filters (256 ... 2048) and downsamples in
its 3x3 convolution (torchvision's "ResNet v1.5", which trains a little better than striding the first
1x1). The IMT report, whose ResNet-18 went from about 42% to 62% on Tiny ImageNet once a max-pool
followed the first convolution, ends by pointing to bottleneck blocks for more depth; so the stem is
that report's by default (``maxpool_stem=True``: 3x3 stride-1 convolution, BN, ReLU, 3x3/2 max-pool, as in
``resnet18_maxpool``: 64x64 reaches stage 1 at 32x32 and stage 4 at 4x4); ``maxpool_stem=False`` drops
the max-pool (the CIFAR stem of ``resnet18_cifar``, four times the compute).
Every builder takes the injectable options of models.options (``norm_layer``, ``conv_constraint``,
``residual_merge``).
"""
from __future__ import annotations

import keras

from models.bravonet import basic_block, conv_bn, resnet_body
from models.options import batch_norm, merge
from models.registry import register_model

BOTTLENECK_EXPANSION = 4


def bottleneck_block(x, filters, strides, name, *, norm_layer, conv_constraint, residual_merge):
    """1x1 (filters) -> 3x3 (filters, strided) -> 1x1 (4 x filters), each conv-BN, plus the shortcut, ReLU."""
    layers = dict(norm_layer=norm_layer, conv_constraint=conv_constraint)
    outputs = filters * BOTTLENECK_EXPANSION
    shortcut = x
    if strides != 1 or x.shape[-1] != outputs:
        shortcut = conv_bn(x, outputs, 1, strides, f"{name}_shortcut", **layers)
    x = conv_bn(x, filters, 1, 1, f"{name}_1", **layers)
    x = keras.layers.ReLU(name=f"{name}_1_relu")(x)
    x = conv_bn(x, filters, 3, strides, f"{name}_2", **layers)
    x = keras.layers.ReLU(name=f"{name}_2_relu")(x)
    x = conv_bn(x, outputs, 1, 1, f"{name}_3", **layers)
    x = merge([shortcut, x], residual_merge, name)
    return keras.layers.ReLU(name=f"{name}_out")(x)


def _deep_resnet(name, num_classes, input_shape, blocks_per_stage, block, *, maxpool_stem, **options):
    if not isinstance(maxpool_stem, bool):
        raise ValueError(f"maxpool_stem must be True or False. Received: maxpool_stem={maxpool_stem!r}")
    return resnet_body(name, num_classes, input_shape, stem_kernel_size=3, stem_strides=1,
                       stem_max_pool=maxpool_stem, blocks_per_stage=blocks_per_stage, block=block, **options)


@register_model
def resnet34(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", maxpool_stem=True,
             dropout=0.0, norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """ResNet-34: basic blocks, 3-4-6-3 per stage."""
    return _deep_resnet("resnet34", num_classes, input_shape, (3, 4, 6, 3), basic_block, maxpool_stem=maxpool_stem,
                        normalization=normalization, dropout=dropout, norm_layer=norm_layer,
                        conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def resnet50(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", maxpool_stem=True,
             dropout=0.0, norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """ResNet-50: bottleneck blocks, 3-4-6-3 per stage."""
    return _deep_resnet("resnet50", num_classes, input_shape, (3, 4, 6, 3), bottleneck_block,
                        maxpool_stem=maxpool_stem, normalization=normalization, dropout=dropout,
                        norm_layer=norm_layer, conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def resnet101(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", maxpool_stem=True,
              dropout=0.0, norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """ResNet-101: bottleneck blocks, 3-4-23-3 per stage."""
    return _deep_resnet("resnet101", num_classes, input_shape, (3, 4, 23, 3), bottleneck_block,
                        maxpool_stem=maxpool_stem, normalization=normalization, dropout=dropout,
                        norm_layer=norm_layer, conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def resnet152(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", maxpool_stem=True,
              dropout=0.0, norm_layer=batch_norm, conv_constraint=None, residual_merge="add") -> keras.Model:
    """ResNet-152: bottleneck blocks, 3-8-36-3 per stage."""
    return _deep_resnet("resnet152", num_classes, input_shape, (3, 8, 36, 3), bottleneck_block,
                        maxpool_stem=maxpool_stem, normalization=normalization, dropout=dropout,
                        norm_layer=norm_layer, conv_constraint=conv_constraint, residual_merge=residual_merge)
