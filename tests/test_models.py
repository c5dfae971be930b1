"""The model zoo: every registered model is checked the moment it is registered."""
from __future__ import annotations

import functools
import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from tests.helpers import slow_marked

ALL_MODELS = models.names()

# Parameters at each builder's default input size with 200 classes. The counts of the
# ResNet and CIS680 families do not depend on the input size; AlphaNet's flatten does. Keras counts
# BatchNormalization's moving statistics too (torchvision's resnet50 with a 200-class head and a 3x3
# stem has 23_910_152 parameters, plus 2 x 26_560 BN channels = 23_963_272 here).
PINNED_PARAMETERS = {
    "alphanet_v1": 10_950_280,
    "alphanet_v2": 10_950_280,
    "alphanet_v3": 8_121_992,  # at its default 72x72
    "alphanet_v4": 5_500_552,
    "bravonet_v1": 11_288_712,
    "bravonet_v2": 11_288_712,
    "bravonet_v3": 11_288_712,
    "resnet18_maxpool": 11_281_032,
    "resnet18_cifar": 11_281_032,
    "resnet34": 21_396_616,
    "resnet50": 23_963_272,
    "resnet101": 43_007_624,
    "resnet152": 58_697_352,
    "cis680_allconv": 113_352,
    "cis680_deep_plain": 298_312,
    "cis680_deep_residual": 298_312,
    # keras.applications backbones with random weights at backbone_size 75 (see offline_options):
    # only the VGG19 fully-connected layer Convengers keeps depends on that size.
    "resnet101_transfer": 43_067_976,
    "inception_v3_transfer": 22_212_584,
    "vgg19_transfer": 20_126_984,
    "convengers": 101_980_584,
}
# One model per family (plus the custom-free CIS680 variants, which are cheap) for the save/load test.
ROUND_TRIP_MODELS = ["alphanet_v4", "bravonet_v2", "resnet18_cifar", "cis680_allconv", "cis680_deep_residual"]


def default_input_shape(name):
    return tuple(inspect.signature(models.get_builder(name)).parameters["input_shape"].default)


def offline_options(name):
    """Models on keras.applications backbones download ImageNet weights by default and resize to 224+:
    here they start from random weights at their smallest backbone size."""
    parameters = inspect.signature(models.get_builder(name)).parameters
    return {"weights": "none", "backbone_size": 75} if "weights" in parameters else {}


@functools.lru_cache(maxsize=None)
def default_model(name):
    """The model at its default input size with 200 classes (built once per session)."""
    return models.get_builder(name)(num_classes=200, **offline_options(name))


@functools.lru_cache(maxsize=None)
def small_model(name):
    """The model at the smallest input the CPU demos use (32x32, like digits and CIFAR)."""
    return models.build(name, num_classes=5, input_shape=(32, 32, 3), **offline_options(name))


def random_images(shape, count=2):
    return np.random.default_rng(0).random((count, *shape), dtype=np.float32)


def keras_default_name_pattern(layer):
    """The name Keras gives a layer of this class when none is passed (its snake-cased class name)."""
    snake = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", type(layer).__name__)
    snake = re.sub(r"([a-z])([A-Z])", r"\1_\2", snake).lower()
    return re.compile(rf"{re.escape(snake)}(_\d+)?")


def test_every_registered_model_has_a_pinned_parameter_count():
    assert set(PINNED_PARAMETERS) == set(ALL_MODELS)


@pytest.mark.parametrize("name", slow_marked(ALL_MODELS))
def test_default_build_gives_finite_logits(name):
    model = default_model(name)
    logits = np.asarray(model(random_images(default_input_shape(name)), training=False))
    assert logits.shape == (2, 200)
    assert np.isfinite(logits).all()
    assert model.name == name


@pytest.mark.parametrize("name", slow_marked(ALL_MODELS))
def test_pinned_parameter_count(name):
    assert default_model(name).count_params() == PINNED_PARAMETERS[name]


def test_parameter_counts_at_64x64_for_the_72x72_models():
    assert models.build("alphanet_v3", input_shape=(64, 64, 3)).count_params() == 5_500_552
    assert models.build("bravonet_v1", input_shape=(64, 64, 3)).count_params() == 11_288_712


@pytest.mark.parametrize("name", slow_marked(ALL_MODELS))
def test_layers_are_named_normalisation_first_no_softmax(name):
    model = default_model(name)
    unnamed = [layer.name for layer in model.layers if keras_default_name_pattern(layer).fullmatch(layer.name)]
    assert not unnamed, f"layers left with Keras' default names: {unnamed}"
    assert isinstance(model.layers[0], keras.layers.InputLayer)
    assert model.layers[1].name == "input_normalization"
    assert isinstance(model.layers[1], keras.layers.Normalization)
    assert not any(isinstance(layer, keras.layers.Softmax) for layer in model.layers)
    for layer in model.layers:
        activation = getattr(layer, "activation", None)
        assert getattr(activation, "__name__", "") != "softmax", layer.name


@pytest.mark.parametrize("name", slow_marked(ALL_MODELS))
def test_small_input_gives_finite_logits(name):
    logits = np.asarray(small_model(name)(random_images((32, 32, 3)), training=False))
    assert logits.shape == (2, 5)
    assert np.isfinite(logits).all()


@pytest.mark.parametrize("name", slow_marked(ROUND_TRIP_MODELS))
def test_keras_file_round_trip_in_safe_mode(name, tmp_path):
    model = small_model(name)
    images = random_images((32, 32, 3))
    expected = np.asarray(model(images, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(reloaded(images, training=False)), expected)


def test_imagenet_normalization_statistics():
    layer = models.build("cis680_allconv", num_classes=3, input_shape=(32, 32, 3)).get_layer("input_normalization")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    images = np.stack([np.full((4, 4, 3), mean), np.full((4, 4, 3), mean + std)]).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(images))[:, 0, 0], [[0, 0, 0], [1, 1, 1]], atol=1e-5)


def test_normalization_none_is_an_identity():
    model = models.build("cis680_allconv", num_classes=3, input_shape=(32, 32, 1), normalization="none")
    assert isinstance(model.get_layer("input_normalization"), keras.layers.Identity)
    assert model(random_images((32, 32, 1)), training=False).shape == (2, 3)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize(
    "arguments, offending",
    [
        ({"num_classes": 0}, "num_classes=0"),
        ({"input_shape": (64, 64)}, "input_shape=(64, 64)"),
        ({"normalization": "zscore"}, "normalization='zscore'"),
        ({"input_shape": (32, 32, 1)}, "input_shape=(32, 32, 1)"),  # ImageNet statistics need RGB
    ],
)
def test_bad_arguments_raise_value_error(name, arguments, offending):
    with pytest.raises(ValueError, match=re.escape(f"Received: {offending}")):
        models.build(name, **{"num_classes": 10, "input_shape": (32, 32, 3), **arguments})


@pytest.mark.parametrize(
    "name, option",
    [("alphanet_v1", "conv_dropout"), ("alphanet_v2", "dense_dropout"), ("bravonet_v2", "dropout"),
     ("resnet18_cifar", "dropout")],
)
def test_bad_dropout_raises_value_error(name, option):
    with pytest.raises(ValueError, match=re.escape(f"Received: {option}=1.5")):
        models.build(name, num_classes=10, **{option: 1.5})


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="alphanet_v4"):
        models.build("no_such_model")


def first_layer_gradient_norm(name):
    model = models.build(name, num_classes=10, input_shape=(32, 32, 3))
    images = keras.random.uniform((8, 32, 32, 3), seed=1)
    labels = np.arange(8) % 10
    kernel = model.get_layer("conv1").kernel
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    return float(tf.norm(tape.gradient(loss, kernel)))


def test_deep_plain_gradient_vanishes_where_residual_does_not():
    plain = first_layer_gradient_norm("cis680_deep_plain")
    residual = first_layer_gradient_norm("cis680_deep_residual")
    assert residual > 0 and np.isfinite(residual)
    assert plain * 100 <= residual, (plain, residual)


def test_build_keeps_each_builders_default_input_size():
    assert models.build("alphanet_v3", num_classes=10).input_shape == (None, 72, 72, 3)
    assert models.build("resnet18_cifar", num_classes=10).input_shape == (None, 32, 32, 3)


def test_unknown_option_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="takes no option colour"):
        models.build("cis680_allconv", num_classes=10, colour="red")
