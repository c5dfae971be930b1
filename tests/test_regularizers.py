"""The Laplacian smoothness loss term, and Parseval networks through train.py."""
from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
import train as train_cli
from common.run_folder import read_history
from models.options import batch_norm
from models.parseval import ParsevalConstraint, parseval_deviation, tight_frame
from training.adversarial import AttackMix, LogitPairing
from training.callbacks import ParsevalDeviation
from training.parts import View, make_part
from training.regularizers import (REFERENCE_BATCH, LaplacianSmoothness, block_outputs, graph_smoothness,
                                   similarity_graph)
from training.wrapper import TrainingModel


def relu_features(count=12, shape=(3, 3, 5), seed=0):
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


def brute_force_adjacency(features):
    flat = features.reshape(len(features), -1).astype(np.float64)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    adjacency = flat @ flat.T
    np.fill_diagonal(adjacency, 0.0)
    return adjacency


def test_sigma_for_m_1_is_the_similarity_across_different_labels():
    features = relu_features()
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 1])
    adjacency = brute_force_adjacency(features)
    expected = sum(adjacency[i, j] for i in range(len(labels)) for j in range(len(labels)) if labels[i] != labels[j])
    sigma = graph_smoothness(similarity_graph(features), labels, num_classes=3, power=1)
    np.testing.assert_allclose(float(sigma), expected, rtol=1e-5)


def test_sigma_for_m_2_is_the_trace_of_y_l_squared_y():
    features, labels = relu_features(seed=1), np.arange(12) % 4
    adjacency = brute_force_adjacency(features)
    laplacian = np.diag(adjacency.sum(1)) - adjacency
    one_hot = np.eye(4)[labels]
    expected = np.trace(one_hot.T @ laplacian @ laplacian @ one_hot)
    sigma = graph_smoothness(similarity_graph(features), labels, num_classes=4, power=2)
    np.testing.assert_allclose(float(sigma), expected, rtol=1e-4)


def test_k_nearest_graph_keeps_k_per_row_and_is_symmetric():
    features = relu_features(count=10, seed=2)
    graph = np.asarray(similarity_graph(features, k=2))
    full = brute_force_adjacency(features)
    np.testing.assert_allclose(graph, graph.T)
    assert np.all(np.diag(graph) == 0)
    for row in range(10):
        chosen = np.argsort(full[row])[-2:]  # the diagonal is 0, below every cosine of positive features
        np.testing.assert_allclose(graph[row, chosen], full[row, chosen], rtol=1e-5)
    assert (graph > 0).sum() < (full > 0).sum()  # some edges were dropped


def block_model(num_classes=3):
    """A tiny model with three block outputs named like the zoo's (``*_out``)."""
    inputs = keras.Input((6, 6, 3), name="image")
    x = inputs
    for index in (1, 2, 3):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"block{index}_conv")(x)
        x = keras.layers.ReLU(name=f"block{index}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="blocks")


def test_default_layers_are_the_block_outputs_and_bad_layers_are_named():
    model = block_model()
    assert block_outputs(model) == ["block1_out", "block2_out", "block3_out"]
    term = LaplacianSmoothness(gamma=0.01)
    term.bind(model)
    assert term.feature_layers == ("block1_out", "block2_out", "block3_out")
    assert [metric.name for metric in term.metrics] == ["sigma_block1_out", "sigma_block2_out", "sigma_block3_out"]
    with pytest.raises(ValueError, match=re.escape("['nowhere']")):
        LaplacianSmoothness(gamma=0.01, layers=["block1_out", "nowhere"]).bind(model)
    with pytest.raises(ValueError, match="at least two layers"):
        LaplacianSmoothness(gamma=0.01, layers=["block1_out"]).bind(model)


@pytest.mark.parametrize("options, offending", [(dict(gamma=0), "gamma=0"), (dict(gamma=0.1, power=0), "power=0"),
                                                (dict(gamma=0.1, k=0), "k=0"),
                                                (dict(gamma=0.1, layers="block1_out"), "layers='block1_out'")])
def test_bad_options_raise_value_error(options, offending):
    with pytest.raises(ValueError, match=re.escape(offending)):
        make_part({"kind": "loss", "name": "laplacian_smoothness", **options})


def test_the_term_is_gamma_to_the_m_times_the_mean_step_between_layers_on_the_clean_view_only():
    term = LaplacianSmoothness(gamma=0.5, power=1, layers=["a", "b", "c"])
    clean_labels = tf.constant([0, 1, 0, 1, 2, 2])
    clean = {name: relu_features(6, seed=seed) for seed, name in enumerate("abc")}
    views = {"clean": View("clean", tf.zeros((6, 3, 3, 5)), clean_labels),
             "adversarial": View("adversarial", tf.zeros((4, 3, 3, 5)), tf.constant([0, 1, 2, 0]),
                                 route="adversarial", replaces=4)}

    def value(adversarial_features):
        outputs = {"clean": tf.zeros((6, 3)), "adversarial": tf.zeros((4, 3)),
                   "features": {"clean": clean, "adversarial": adversarial_features}}
        return float(term(None, views, outputs))

    # σ on the scale of the reference's batch of 100: (100 / 6)^(m + 1) with m = 1.
    sigmas = [float(graph_smoothness(similarity_graph(clean[name]), clean_labels, 3, 1)) * (REFERENCE_BATCH / 6) ** 2
              for name in "abc"]
    expected = 0.5 * (abs(sigmas[1] - sigmas[0]) + abs(sigmas[2] - sigmas[1])) / 2
    first = value({name: relu_features(4, seed=10 + seed) for seed, name in enumerate("abc")})
    second = value({name: relu_features(4, seed=20 + seed) * 5 for seed, name in enumerate("abc")})
    np.testing.assert_allclose([first, second], [expected, expected], rtol=1e-5)
    np.testing.assert_allclose(float(term.metrics[0].result()), sigmas[0], rtol=1e-5)


@pytest.mark.parametrize("power", [1, 2])
def test_the_term_does_not_change_when_the_batch_is_repeated(power):
    """σ grows as B^(m+1); rescaled to a batch of 100 the same images give the same term at any batch size,
    and γ enters as γ^m (the reference code's loss / (1 / γ)^m)."""
    term = LaplacianSmoothness(gamma=0.1, power=power, layers=["a", "b"])
    labels = np.array([0, 1, 2, 0, 1, 2, 2, 0])
    features = {name: relu_features(8, seed=seed) for seed, name in enumerate("ab")}

    def value(copies):
        views = {"clean": View("clean", tf.zeros((8 * copies, 1)), tf.constant(np.tile(labels, copies)))}
        outputs = {"clean": tf.zeros((8 * copies, 3)),
                   "features": {"clean": {name: np.concatenate([f] * copies) for name, f in features.items()}}}
        return float(term(None, views, outputs))

    raw = [float(graph_smoothness(similarity_graph(features[name]), labels, 3, power)) for name in "ab"]
    expected = 0.1 ** power * abs(raw[1] - raw[0]) * (REFERENCE_BATCH / 8) ** (power + 1)
    np.testing.assert_allclose([value(1), value(2), value(4)], [expected] * 3, rtol=1e-4)


# One builder per naming scheme in the fast tier; the others (seconds to minutes each to build) in the slow one.
FAST_TO_BUILD = {"alphanet_v4", "resnet18_maxpool", "cis680_deep_residual"}


@pytest.mark.parametrize("name", [name if name in FAST_TO_BUILD else pytest.param(name, marks=pytest.mark.slow)
                                  for name in models.names()])
def test_every_zoo_model_has_default_smoothness_layers(name):
    options = {"weights": "none", "backbone_size": 75} if name.endswith("_transfer") or name == "convengers" else {}
    model = models.build(name, num_classes=3, input_shape=(32, 32, 3), **options)
    term = LaplacianSmoothness(gamma=0.01)
    term.bind(model)
    assert len(term.feature_layers) >= 2
    names = [layer.name for layer in model.layers]
    assert [names.index(layer) for layer in term.feature_layers] == sorted(names.index(layer)
                                                                         for layer in term.feature_layers)


def test_with_noise_training_the_term_sees_only_the_images_left_clean():
    keras.utils.set_random_seed(0)
    model = block_model()
    seen = {}

    class Recording(LaplacianSmoothness):
        def __call__(self, model, views, outputs):
            seen["labels"] = views["clean"].labels
            seen["batch"] = tf.shape(outputs["features"]["clean"]["block1_out"])[0]
            return super().__call__(model, views, outputs)

    term = Recording(gamma=0.01, power=1)
    noise = AttackMix(attacks="noise", noise_snr_db=33.0, fraction=0.5)
    wrapper = TrainingModel(model, transforms=[noise], loss_terms=[term])
    wrapper.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    run_eagerly=True)  # eager, so the term's inputs can be read
    x = np.random.default_rng(0).random((8, 6, 6, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype="int32")
    logs = wrapper.train_on_batch(x, y, return_dict=True)
    assert int(seen["batch"]) == 4 and list(np.asarray(seen["labels"])) == [1, 2, 0, 1]  # the second half
    for name in ("laplacian_smoothness", "sigma_block1_out", "sigma_block3_out"):
        assert np.isfinite(logs[name]) and logs[name] > 0, name


def test_with_logit_pairing_the_term_still_sees_only_the_clean_images_kept():
    """Logit pairing needs the clean originals of the attacked images; the smoothness term must not get them."""
    keras.utils.set_random_seed(0)
    model = block_model()
    seen = {}

    class Recording(LaplacianSmoothness):
        def __call__(self, model, views, outputs):
            seen["views"], seen["features"] = sorted(views), sorted(outputs["features"])
            seen["images"], seen["labels"] = views["clean"].images, views["clean"].labels
            seen["batch"] = tf.shape(outputs["features"]["clean"]["block1_out"])[0]
            return super().__call__(model, views, outputs)

    attack = AttackMix(attacks="fgsm", eps=0.05, fraction=0.5)
    wrapper = TrainingModel(model, transforms=[attack], loss_terms=[LogitPairing(1.0), Recording(gamma=0.01)])
    wrapper.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    run_eagerly=True)  # eager, so the term's inputs can be read
    x = np.random.default_rng(0).random((8, 6, 6, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype="int32")
    logs = wrapper.train_on_batch(x, y, return_dict=True)
    assert seen["views"] == ["clean"] and seen["features"] == ["clean"]
    assert int(seen["batch"]) == 4 and list(np.asarray(seen["labels"])) == [1, 2, 0, 1]  # the second half
    np.testing.assert_array_equal(np.asarray(seen["images"]), x[4:])
    assert logs["logit_pairing"] > 0 and logs["laplacian_smoothness"] > 0


@pytest.mark.slow  # a whole train.py run: minutes on a loaded 2-core CPU
def test_smoothness_run_through_train_py_logs_sigma_per_layer(tmp_path):
    run_dir = tmp_path / "smooth"
    argv = ["cis680_allconv", "--dataset", "digits", "--classes", "3", "--per-class", "8", "--epochs", "1",
            "--batch-size", "24", "--image-size", "16", "--smoothness", "0.001", "--smoothness-power", "1",
            "--smoothness-layers", "conv1", "conv3", "conv5", "--quiet", "--run-dir", str(run_dir)]
    assert train_cli.run_cli(train_cli.main, argv) == 0
    row = read_history(run_dir / "history.csv")[0]
    assert row["laplacian_smoothness"] > 0 and all(row[f"sigma_conv{index}"] > 0 for index in (1, 3, 5))


@pytest.mark.slow  # a whole train.py run: minutes on a loaded 2-core CPU
def test_parseval_run_logs_a_small_deviation_that_does_not_grow(tmp_path):
    run_dir = tmp_path / "parseval"
    argv = ["cis680_deep_residual", "--dataset", "digits", "--classes", "3", "--per-class", "16", "--epochs", "3",
            "--batch-size", "16", "--image-size", "16", "--parseval", "0.01", "--quiet", "--run-dir", str(run_dir)]
    assert train_cli.run_cli(train_cli.main, argv) == 0
    deviations = [row["parseval_deviation"] for row in read_history(run_dir / "history.csv")]
    assert len(deviations) == 3 and all(np.isfinite(deviations))
    assert deviations[-1] <= deviations[0] * 1.05 or deviations[-1] < 0.1


@pytest.mark.parametrize("shape", [(3, 3, 8, 16), (1, 1, 16, 8), (32, 10), (7, 7, 3, 64)])
def test_tight_frame_sets_every_singular_value_of_the_unfolded_kernel_to_one(shape):
    kernel = keras.initializers.HeNormal(seed=0)(shape)
    frame = np.asarray(tight_frame(kernel))
    assert frame.shape == shape and frame.dtype == np.float32
    matrix = frame.reshape(-1, shape[-1]).T
    np.testing.assert_allclose(np.linalg.svd(matrix, compute_uv=False), 1.0, atol=1e-4)


def parseval_net(num_classes=3):
    """Two Parseval conv-BN-ReLU blocks (He-normal kernels, the zoo's BN) and a Parseval Dense head."""
    constraint = ParsevalConstraint(beta=0.01)
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for index in (1, 2):
        x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                                kernel_constraint=constraint, name=f"conv{index}")(x)
        x = batch_norm(name=f"bn{index}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, kernel_constraint=constraint, name="logits")(x))


def test_parseval_training_starts_at_tight_frames_and_a_resumed_one_keeps_its_weights():
    """A He-normal kernel is away from a frame; left to the retraction it changes scale over hundreds of updates
    while BN's moving statistics lag behind (a model then predicts few classes at inference)."""
    model = parseval_net()
    kernels = [model.get_layer(name).kernel for name in ("conv1", "conv2", "logits")]
    assert min(parseval_deviation(kernel) for kernel in kernels) > 0.5
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    y = np.arange(16) % 3
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[ParsevalDeviation()])
    assert max(parseval_deviation(kernel) for kernel in kernels) < 0.05
    resumed = [np.asarray(kernel) * 2 for kernel in kernels]  # counts as restored weights: iterations is 1
    for kernel, value in zip(kernels, resumed):
        kernel.assign(value)
    callback = ParsevalDeviation()
    callback.set_model(model)
    callback.on_train_begin()
    for kernel, value in zip(kernels, resumed):
        np.testing.assert_array_equal(np.asarray(kernel), value)
