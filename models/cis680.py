"""The CIS680 report's small all-convolutional network and its deep plain/residual variants.

cis680_allconv follows the report's table (an all-convolutional net in the spirit of
Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2015):

    input normalisation
    conv 5x5x32 -> ReLU -> avg-pool 2x2/2
    conv 5x5x32 -> ReLU -> avg-pool 2x2/2
    conv 5x5x64 -> ReLU -> avg-pool 2x2/2
    conv 2x2x32 -> ReLU
    conv 2x2x num_classes (the report's 10) -> global average pool -> logits

The report names no activation: ReLU is chosen here. Its last pool is a global average pool so
that any input size gives one logit vector; every convolution and pool uses
``padding="same"``, so every input size down to 1x1 builds. The three 2x2 pools are named
``pool1_out``..``pool3_out``: ``_out`` marks the block outputs the smoothness term reads by default.

cis680_deep_plain and cis680_deep_residual are the report's vanishing-gradient experiment:
20 more 3x3x32 convolutions without any normalisation between the first and the second
convolution (placed after the first pool, where they cost a quarter of the compute).
In the plain net they are stacked; in the residual net each one is wrapped in an identity
skip, ``x + activation(conv(x))``. The extra layers use a sigmoid by default (option
``activation``): with ReLU and He initialisation a 20-layer plain stack still passes
usable gradients, so the effect the report studies would not show reliably, whereas through
20 sigmoids the first layer's gradient shrinks by many orders of magnitude unless the skips
carry it.

The builders take the zoo's injectable options (models.options): ``conv_constraint`` is set on every
convolution; ``norm_layer`` is accepted for one interface across the zoo but these networks have no norm
layer, so it changes nothing; ``residual_merge`` ("add" or "convex") shapes cis680_deep_residual's skips
and changes nothing in the two networks without skips.
"""
from __future__ import annotations

import keras

from models.layers import check_common_arguments, normalized_input
from models.options import batch_norm, injected, merge
from models.registry import register_model

_EXTRA_LAYERS = 20
_EXTRA_FILTERS = 32
_ACTIVATIONS = ("sigmoid", "tanh", "relu")


def _cis680(name, num_classes, input_shape, *, normalization, extra_layers, residual, activation, norm_layer,
            conv_constraint, residual_merge):
    input_shape = check_common_arguments(num_classes, input_shape, normalization)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}. Received: activation={activation!r}")
    # The network has no norm layer: norm_layer is checked (one interface for the zoo) but builds nothing.
    options = injected(norm_layer, conv_constraint, residual_merge)
    constraint = options["conv_constraint"]

    def conv(x, filters, kernel_size, layer_name, conv_activation="relu"):
        return keras.layers.Conv2D(filters, kernel_size, padding="same", activation=conv_activation,
                                   kernel_constraint=constraint, name=layer_name)(x)

    def pool(x, layer_name):
        return keras.layers.AveragePooling2D(2, padding="same", name=layer_name)(x)

    inputs, x = normalized_input(input_shape, normalization)
    x = pool(conv(x, 32, 5, "conv1"), "pool1_out")
    for index in range(1, extra_layers + 1):
        prefix = f"extra{index}"
        branch = keras.layers.Conv2D(_EXTRA_FILTERS, 3, padding="same", kernel_constraint=constraint,
                                     name=f"{prefix}_conv")(x)
        branch = keras.layers.Activation(activation, name=f"{prefix}_{activation}")(branch)
        x = merge([x, branch], options["residual_merge"], prefix) if residual else branch
    x = pool(conv(x, 32, 5, "conv2"), "pool2_out")
    x = pool(conv(x, 64, 5, "conv3"), "pool3_out")
    x = conv(x, 32, 2, "conv4")
    x = conv(x, num_classes, 2, "conv5", conv_activation=None)
    outputs = keras.layers.GlobalAveragePooling2D(name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model
def cis680_allconv(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet", norm_layer=batch_norm,
                   conv_constraint=None, residual_merge="add") -> keras.Model:
    """The report's five-convolution all-convolutional network."""
    return _cis680("cis680_allconv", num_classes, input_shape, normalization=normalization,
                   extra_layers=0, residual=False, activation="relu", norm_layer=norm_layer,
                   conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def cis680_deep_plain(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet",
                      activation="sigmoid", norm_layer=batch_norm, conv_constraint=None,
                      residual_merge="add") -> keras.Model:
    """cis680_allconv with 20 more plain convolutions (gradients vanish)."""
    return _cis680("cis680_deep_plain", num_classes, input_shape, normalization=normalization,
                   extra_layers=_EXTRA_LAYERS, residual=False, activation=activation, norm_layer=norm_layer,
                   conv_constraint=conv_constraint, residual_merge=residual_merge)


@register_model
def cis680_deep_residual(num_classes=200, input_shape=(64, 64, 3), *, normalization="imagenet",
                         activation="sigmoid", norm_layer=batch_norm, conv_constraint=None,
                         residual_merge="add") -> keras.Model:
    """cis680_allconv with 20 more convolutions, each inside an identity skip."""
    return _cis680("cis680_deep_residual", num_classes, input_shape, normalization=normalization,
                   extra_layers=_EXTRA_LAYERS, residual=True, activation=activation, norm_layer=norm_layer,
                   conv_constraint=conv_constraint, residual_merge=residual_merge)
