"""The zoo's injectable layers: routes and dual BN, Parseval retraction, simplex projection, convex merges."""
from __future__ import annotations

import math
import re

import keras
import numpy as np
import pytest

import models
from models.options import batch_norm
from models.parseval import (ConvexCombination, ParsevalConstraint, SimplexProjection, parseval_deviation,
                             retract)
from tests.helpers import slow_marked
from models.routes import (DualBatchNormalization, RouteRecorder, current_route, forward_route, has_routes,
                           to_single_bn)

# Builders whose networks have BatchNormalization layers of their own (the transfer models' backbones keep
# keras.applications' BN; only Convengers' head has BN the project builds).
BN_MODELS = [name for name in models.names() if name.startswith(("alphanet", "bravonet", "resnet"))
             and not name.endswith("_transfer")] + ["convengers"]
def build_small(name, **options):
    if name.endswith("_transfer") or name == "convengers":
        options = {"weights": "none", "backbone_size": 75, **options}
    return models.build(name, num_classes=3, input_shape=(32, 32, 3), **options)


def random_images(count=4, shape=(8, 8, 3), seed=0):
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


def orthonormal_rows(rows, columns, seed=0):
    matrix = np.random.default_rng(seed).normal(size=(columns, rows))
    q, _ = np.linalg.qr(matrix)  # columns x rows with orthonormal columns
    return q.T.astype("float32")


def tiny_dual_bn_model():
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = DualBatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name="tiny")


# ----------------------------------------------------------------------------- routes
def test_forward_route_sets_and_restores_the_route():
    assert current_route() == "clean"
    with forward_route("adversarial"):
        assert current_route() == "adversarial"
        with forward_route("clean"):
            assert current_route() == "clean"
        assert current_route() == "adversarial"
    assert current_route() == "clean"


def test_unknown_route_raises_value_error():
    with pytest.raises(ValueError, match=re.escape("Received: route='noisy'")):
        with forward_route("noisy"):
            pass


def test_route_recorder_sees_the_route_of_each_call():
    model = build_small("alphanet_v4", norm_layer=RouteRecorder)
    recorder = model.get_layer("block1_bn")
    recorder.routes.clear()
    with forward_route("adversarial"):
        model(random_images(2, (32, 32, 3)), training=True)
    model(random_images(2, (32, 32, 3)), training=True)
    assert recorder.routes == ["adversarial", "clean"]
    assert has_routes(model)


def test_has_routes_looks_into_nested_models():
    assert not has_routes(build_small("cis680_allconv"))
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, tiny_dual_bn_model()(inputs))
    assert has_routes(outer)


def test_dual_bn_updates_only_the_statistics_of_its_route():
    layer = DualBatchNormalization(momentum=0.5, name="bn")
    images = random_images() * 5 + 2
    layer(images, training=False)  # builds both sets
    with forward_route("adversarial"):
        layer(images, training=True)
    auxiliary_mean = np.asarray(layer.auxiliary.moving_mean)
    assert not np.allclose(auxiliary_mean, 0.0)
    np.testing.assert_array_equal(np.asarray(layer.main.moving_mean), np.zeros(3))
    np.testing.assert_array_equal(np.asarray(layer.main.moving_variance), np.ones(3))
    layer(images, training=True)  # clean route
    assert not np.allclose(np.asarray(layer.main.moving_mean), 0.0)
    np.testing.assert_array_equal(np.asarray(layer.auxiliary.moving_mean), auxiliary_mean)


def test_dual_bn_affine_parameters_are_separate():
    layer = DualBatchNormalization(name="bn")
    images = random_images()
    layer(images)
    layer.auxiliary.gamma.assign(np.full(3, 2.0, "float32"))
    clean = np.asarray(layer(images, training=False))
    with forward_route("adversarial"):
        adversarial = np.asarray(layer(images, training=False))
    np.testing.assert_allclose(adversarial, 2 * clean, rtol=1e-5, atol=1e-6)
    assert len(layer.trainable_weights) == 4 and len(layer.non_trainable_weights) == 4


def test_dual_bn_config_round_trip():
    layer = DualBatchNormalization(momentum=0.7, epsilon=1e-4, center=False, name="bn")
    copy = DualBatchNormalization.from_config(layer.get_config())
    assert (copy.momentum, copy.epsilon, copy.center, copy.scale) == (0.7, 1e-4, False, True)
    assert copy.main.momentum == 0.7 and not copy.auxiliary.center


@pytest.mark.parametrize("which, route", [("main", "clean"), ("auxiliary", "adversarial")])
def test_to_single_bn_loads_in_safe_mode_and_predicts_like_the_route(which, route, tmp_path):
    model = tiny_dual_bn_model()
    images = random_images()
    dual = model.get_layer("bn")
    for index, layer in enumerate((dual.main, dual.auxiliary)):  # distinct statistics per set
        layer.moving_mean.assign(np.full(4, 0.1 * (index + 1), "float32"))
        layer.moving_variance.assign(np.full(4, 1.0 + index, "float32"))
        layer.gamma.assign(np.full(4, 1.0 + 0.5 * index, "float32"))
    model.save(tmp_path / "dual.keras")
    reloaded = keras.models.load_model(tmp_path / "dual.keras", safe_mode=True)
    with forward_route(route):
        expected = np.asarray(reloaded(images, training=False))
    single = to_single_bn(reloaded, which)
    single.save(tmp_path / "single.keras")
    loaded = keras.models.load_model(tmp_path / "single.keras", safe_mode=True)
    assert type(loaded.get_layer("bn")) is keras.layers.BatchNormalization
    assert not has_routes(loaded)
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), expected, rtol=1e-5, atol=1e-6)


def test_to_single_bn_rejects_an_unknown_set():
    with pytest.raises(ValueError, match=re.escape("Received: which='clean'")):
        to_single_bn(tiny_dual_bn_model(), "clean")


# ----------------------------------------------------------------------------- Parseval
def test_retraction_moves_a_random_matrix_towards_orthonormal_rows():
    kernel = np.random.default_rng(1).normal(scale=0.3, size=(48, 16)).astype("float32")  # Dense: 16 rows
    constraint = ParsevalConstraint(beta=0.1)
    deviations = [parseval_deviation(kernel)]
    for _ in range(30):
        kernel = np.asarray(constraint(keras.ops.convert_to_tensor(kernel)))
        deviations.append(parseval_deviation(kernel))
    assert all(later < earlier for earlier, later in zip(deviations, deviations[1:]))
    assert deviations[-1] < 0.05 * deviations[0]


def test_retraction_is_the_identity_on_orthonormal_rows():
    rows = orthonormal_rows(16, 48)
    np.testing.assert_allclose(np.asarray(retract(rows, 0.01)), rows, atol=1e-5)
    dense_kernel = rows.T  # (inputs, units)
    assert parseval_deviation(dense_kernel) < 1e-5
    np.testing.assert_allclose(np.asarray(ParsevalConstraint()(dense_kernel)), dense_kernel, atol=1e-5)


def test_conv_kernels_are_retracted_as_their_unfolded_matrix():
    # Orthonormal rows of the unfolded W (the reference code's convention): left alone; 3 W is not a frame.
    rows = orthonormal_rows(8, 3 * 3 * 4)
    kernel = rows.T.reshape(3, 3, 4, 8)
    assert parseval_deviation(kernel) < 1e-5
    np.testing.assert_allclose(np.asarray(ParsevalConstraint()(kernel)), kernel, atol=1e-6)
    assert parseval_deviation(3.0 * kernel) > 1.0


def test_row_sampling_retracts_only_the_sampled_rows():
    kernel = np.random.default_rng(2).normal(scale=0.5, size=(24, 10)).astype("float32")
    changed_sets = []
    constraint = ParsevalConstraint(beta=0.05, rows=0.3, seed=3)
    for _ in range(2):
        retracted = np.asarray(constraint(kernel))
        changed = ~np.all(np.isclose(retracted, kernel, atol=1e-7), axis=0)  # per output channel
        assert changed.sum() == math.ceil(0.3 * 10)
        changed_sets.append(tuple(np.flatnonzero(changed)))
    assert changed_sets[0] != changed_sets[1]


def test_row_sampling_retracts_the_sampled_rows_among_themselves():
    kernel = np.random.default_rng(4).normal(scale=0.5, size=(3, 3, 4, 12)).astype("float32")
    retracted = np.asarray(ParsevalConstraint(beta=0.05, rows=0.5, seed=1)(kernel))
    rows = (kernel.reshape(-1, 12).T, retracted.reshape(-1, 12).T)
    changed = np.flatnonzero(~np.all(np.isclose(rows[1], rows[0], atol=1e-7), axis=1))
    assert len(changed) == 6
    np.testing.assert_allclose(rows[1][changed], np.asarray(retract(rows[0][changed], 0.05)), atol=1e-5)


def test_retraction_converges_from_a_large_kernel():
    # Singular values ~17 lie where the plain update diverges: the retraction scales the kernel down first.
    kernel = 7.0 * keras.initializers.HeNormal(seed=0)((7, 7, 3, 64)).numpy()
    constraint = ParsevalConstraint()
    start = parseval_deviation(kernel)
    for _ in range(200):
        kernel = np.asarray(constraint(kernel))
    assert np.isfinite(kernel).all()
    # 64 rows of length 147 can be orthonormal: the deviation goes most of the way to 0.
    assert parseval_deviation(kernel) < 0.1 * start


@pytest.mark.parametrize("options, offending", [({"beta": 0}, "beta=0"), ({"beta": 0.7}, "beta=0.7"),
                                                ({"rows": 0.0}, "rows=0.0"),
                                                ({"rows": 1.5}, "rows=1.5")])
def test_bad_parseval_arguments_raise_value_error(options, offending):
    with pytest.raises(ValueError, match=re.escape(f"Received: {offending}")):
        ParsevalConstraint(**options)


def test_optimizer_applies_the_parseval_constraint_after_each_update():
    model = build_small("cis680_allconv", conv_constraint=ParsevalConstraint(beta=0.01))
    before = np.asarray(model.get_layer("conv3").kernel)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(random_images(4, (32, 32, 3)), np.arange(4) % 3, epochs=1, batch_size=4, verbose=0)
    after = np.asarray(model.get_layer("conv3").kernel)
    np.testing.assert_allclose(after, np.asarray(ParsevalConstraint(beta=0.01)(before)), rtol=1e-4, atol=1e-6)
    assert parseval_deviation(after) < parseval_deviation(before)


# ----------------------------------------------------------------------------- simplex, convex merge
@pytest.mark.parametrize("values, expected", [([0.6, 0.6], [0.5, 0.5]), ([1.2, -0.5, 0.3], [0.95, 0.0, 0.05]),
                                              ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]), ([-3.0, 5.0], [0.0, 1.0])])
def test_simplex_projection_known_points(values, expected):
    np.testing.assert_allclose(np.asarray(SimplexProjection()(np.array(values, "float32"))), expected, atol=1e-6)


def test_simplex_projection_is_non_negative_and_sums_to_one():
    vectors = np.random.default_rng(4).normal(scale=2.0, size=(50, 5)).astype("float32")
    for vector in vectors:
        projected = np.asarray(SimplexProjection()(vector))
        assert (projected >= 0).all()
        assert abs(projected.sum() - 1.0) < 1e-5
        # The projection is the nearest simplex point: no vertex is nearer.
        distance = np.linalg.norm(projected - vector)
        assert all(distance <= np.linalg.norm(vertex - vector) + 1e-5 for vertex in np.eye(5))


def test_convex_combination_weights_stay_on_the_simplex_while_training():
    inputs = [keras.Input((4,), name=f"branch{index}") for index in range(3)]
    merged = ConvexCombination(name="merge")(inputs)
    model = keras.Model(inputs, merged)
    branches = [random_images(8, (4,), seed=index) for index in range(3)]
    np.testing.assert_allclose(np.asarray(model(branches)), sum(branches) / 3, rtol=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=5.0), loss="mse")
    model.fit(branches, 3 * branches[0], epochs=3, batch_size=8, verbose=0)  # pulls weight 0 above 1
    weights = np.asarray(model.get_layer("merge").combination)
    assert (weights >= 0).all() and abs(weights.sum() - 1.0) < 1e-5
    assert weights[0] > 0.9


# ----------------------------------------------------------------------------- builders
@pytest.mark.parametrize("name", slow_marked(BN_MODELS))
def test_every_bn_builder_takes_dual_bn_and_the_parseval_constraint(name):
    model = build_small(name, norm_layer=DualBatchNormalization, conv_constraint=ParsevalConstraint())
    own = model.layers
    assert any(isinstance(layer, DualBatchNormalization) for layer in own)
    assert not any(type(layer) is keras.layers.BatchNormalization for layer in own)
    kernels = [layer for layer in own if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert kernels and all(isinstance(layer.kernel.constraint, ParsevalConstraint) for layer in kernels)
    assert has_routes(model)
    assert np.isfinite(np.asarray(model(random_images(2, (32, 32, 3)), training=False))).all()
    if name.startswith("resnet") and name != "resnet18_cifar":  # the max-pool stem halves 32x32
        assert model.get_layer("stage1_block1_out").output.shape[1] == 16


@pytest.mark.parametrize("name", slow_marked(sorted(set(models.names()) - set(BN_MODELS))))
def test_builders_without_bn_take_the_parseval_constraint(name):
    model = build_small(name, norm_layer=DualBatchNormalization, conv_constraint="parseval", residual_merge="convex")
    kernels = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert kernels and all(isinstance(layer.kernel.constraint, ParsevalConstraint) for layer in kernels)
    assert not has_routes(model)  # no norm layer of the project's own to replace


def test_every_builder_takes_the_three_injectable_options():
    import inspect

    for name in models.names():
        parameters = inspect.signature(models.get_builder(name)).parameters
        assert {"norm_layer", "conv_constraint", "residual_merge"} <= set(parameters), name


def test_conv_constraint_from_its_serialized_dict():
    config = keras.constraints.serialize(ParsevalConstraint(beta=0.02, rows=0.5, seed=3))
    model = build_small("cis680_allconv", conv_constraint=config, residual_merge="convex")
    constraint = model.get_layer("conv1").kernel.constraint
    assert isinstance(constraint, ParsevalConstraint)
    assert constraint.get_config() == {"beta": 0.02, "rows": 0.5, "seed": 3}
    with pytest.raises(ValueError, match=re.escape("Received: conv_constraint={'class_name': 'Nope'")):
        build_small("cis680_allconv", conv_constraint={"class_name": "Nope", "config": {}})


def test_norm_layer_and_constraint_by_name():
    model = build_small("alphanet_v4", norm_layer="dual_batch_norm", conv_constraint="parseval")
    assert isinstance(model.get_layer("block1_bn"), DualBatchNormalization)
    assert isinstance(model.get_layer("logits").kernel.constraint, ParsevalConstraint)
    assert build_small("alphanet_v4", norm_layer=batch_norm).get_layer("block1_bn").momentum == 0.9
    assert build_small("alphanet_v4").get_layer("block1_bn").momentum == 0.9  # the default stays the zoo's


@pytest.mark.parametrize("options, offending", [({"norm_layer": "group_norm"}, "norm_layer='group_norm'"),
                                                ({"conv_constraint": "spectral"}, "conv_constraint='spectral'"),
                                                ({"residual_merge": "concat"}, "residual_merge='concat'")])
def test_bad_injected_options_raise_value_error(options, offending):
    with pytest.raises(ValueError, match=re.escape(f"Received: {offending}")):
        build_small("resnet18_cifar", **options)


@pytest.mark.parametrize("name, merges", [("resnet18_cifar", 8), ("cis680_deep_residual", 20),
                                          pytest.param("resnet50", 16, marks=pytest.mark.slow)])
def test_convex_residual_merge_has_two_weights_per_merge(name, merges):
    convex = build_small(name, residual_merge="convex")
    combinations = [layer for layer in convex.layers if isinstance(layer, ConvexCombination)]
    assert len(combinations) == merges
    assert not any(isinstance(layer, keras.layers.Add) for layer in convex.layers)
    assert sum(int(np.prod(layer.combination.shape)) for layer in combinations) == 2 * merges


@pytest.mark.slow
def test_variant_round_trip_in_safe_mode(tmp_path):
    model = build_small("resnet18_cifar", norm_layer=DualBatchNormalization,
                        conv_constraint=ParsevalConstraint(beta=0.02, rows=0.5, seed=1), residual_merge="convex")
    images = random_images(2, (32, 32, 3))
    expected = np.asarray(model(images, training=False))
    model.save(tmp_path / "variant.keras")
    reloaded = keras.models.load_model(tmp_path / "variant.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(reloaded(images, training=False)), expected)
    constraint = reloaded.get_layer("stage2_block1_1_conv").kernel.constraint
    assert isinstance(constraint, ParsevalConstraint) and constraint.get_config() == {"beta": 0.02, "rows": 0.5,
                                                                                      "seed": 1}
    assert isinstance(reloaded.get_layer("stage1_block1_convex"), ConvexCombination)
    assert has_routes(reloaded)


@pytest.mark.slow
def test_maxpool_stem_option():
    # With the max-pool (the default), 32x32 inputs reach stage 1 at 16x16 (test_every_bn_builder... builds it).
    without = build_small("resnet34", maxpool_stem=False)
    assert "stem_pool" not in [layer.name for layer in without.layers]
    assert without.get_layer("stage1_block1_out").output.shape[1] == 32
    with pytest.raises(ValueError, match=re.escape("Received: maxpool_stem='yes'")):
        build_small("resnet34", maxpool_stem="yes")
