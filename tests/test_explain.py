"""explain.py and its analysis modules: saliency maps against closed forms and tf-keras-vis, the
pointing games, PCA spectra against NumPy, t-SNE and the CLI's outputs and one-line errors."""
from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import explain
from analysis import embedding, pca, pointing_game
from analysis.saliency import METHODS, find_layer, saliency_map
from common.cli import run_cli
from tests.helpers import ERROR


def _conv_model(size=16, classes=3):
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="conv_2")(x)
    x = keras.layers.ReLU(name="relu_2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name="tiny")


def _images(count=4, size=16, seed=0):
    return np.random.default_rng(seed).random((count, size, size, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Saliency maps


@pytest.mark.parametrize("method", METHODS)
def test_every_method_returns_maps_in_unit_range(method):
    maps = saliency_map(_conv_model(), _images(5), [0, 1, 2, 1, 0], method, batch_size=2, samples=3)
    assert maps.shape == (5, 16, 16) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(maps.max(axis=(1, 2)), 1, atol=1e-4)  # each map is scaled to its own maximum


def test_vanilla_is_the_channel_max_of_the_absolute_logit_gradient():
    # logits = x . W + b: d logit_y / dx = W[:, y], whatever x is.
    inputs = keras.Input((6, 5, 3))
    outputs = keras.layers.Dense(4, name="logits")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    weights = model.get_layer("logits").kernel.numpy()
    labels = np.array([3, 0])
    maps = saliency_map(model, _images(2, 6)[:, :, :5], labels, "vanilla")
    for index, label in enumerate(labels):
        expected = np.abs(weights[:, label].reshape(6, 5, 3)).max(axis=-1)
        expected = (expected - expected.min()) / (expected.max() - expected.min())
        np.testing.assert_allclose(maps[index], expected, atol=1e-5)


def _cam_model():
    """Features A = conv(x) at full resolution, logits = mean over positions of A, times W: CAM's setting."""
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 1, name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(pooled))


def _scaled(maps):
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    return (maps - low) / np.where(high > low, high - low, 1.0)  # an all-equal map is all 0


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_on_a_known_last_convolution_equals_its_closed_form(method):
    # d logit_c / d A_k(i, j) = W[k, c] / (h w) everywhere, so Grad-CAM is ReLU(sum_k W[k, c] A_k) up to
    # scale; Grad-CAM++'s alphas are then equal at every position and its map is ReLU(sum_k ReLU(W[k, c]) A_k).
    model = _cam_model()
    assert find_layer(model).name == "features"
    images, labels = _images(3, 8), np.array([0, 1, 2])
    # Signed feature maps around 0, so each class's CAM is positive in some places and not in others.
    model.get_layer("features").bias.assign([-0.5] * 4)
    features = keras.Model(model.inputs, model.get_layer("features").output)(images).numpy()
    weights = model.get_layer("logits").kernel.numpy()[:, labels].T[:, None, None, :]
    if method == "gradcam++":
        weights = np.maximum(weights, 0)
    expected = _scaled(np.maximum((features * weights).sum(axis=-1), 0))
    np.testing.assert_allclose(saliency_map(model, images, labels, method), expected, atol=1e-4)


@pytest.mark.slow
def test_methods_match_tf_keras_vis():
    vis = pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    assert vis.__version__
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_1")(inputs)
    x = keras.layers.Conv2D(5, 3, padding="same", name="conv_2")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    images, labels = _images(4, 12), [0, 1, 2, 1]
    score = CategoricalScore(labels)
    for method, reference in (("vanilla", Saliency(model)(score, images)),
                              ("gradcam", Gradcam(model)(score, images)),
                              ("gradcam++", GradcamPlusPlus(model)(score, images))):
        np.testing.assert_allclose(saliency_map(model, images, labels, method), reference, atol=1e-4, err_msg=method)
    # SmoothGrad draws its own noise: the two averages agree as the samples grow.
    ours = saliency_map(model, images, labels, "smoothgrad", samples=100, noise_level=0.1)
    theirs = Saliency(model)(score, images, smooth_samples=100, smooth_noise=0.1)
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.97


def test_smoothgrad_without_noise_is_vanilla_and_is_seeded():
    model, images, labels = _conv_model(), _images(2), [1, 2]
    np.testing.assert_allclose(saliency_map(model, images, labels, "smoothgrad", noise_level=0.0, samples=2),
                               saliency_map(model, images, labels, "vanilla"), atol=1e-6)
    first = saliency_map(model, images, labels, "smoothgrad", samples=2, seed=3)
    np.testing.assert_array_equal(first, saliency_map(model, images, labels, "smoothgrad", samples=2, seed=3))


def test_saliency_errors_name_the_value():
    model = _conv_model()
    with pytest.raises(ValueError, match="Unknown saliency method 'lrp'"):
        saliency_map(model, _images(1), [0], "lrp")
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\)"):
        saliency_map(model, _images(1), [3])
    with pytest.raises(ValueError, match="has no layer 'nope'"):
        saliency_map(model, _images(1), [0], "gradcam", layer="nope")
    with pytest.raises(ValueError, match="does not output a feature map"):
        saliency_map(model, _images(1), [0], "gradcam", layer="gap")
    dense = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)], name="flat")
    with pytest.raises(ValueError, match="no convolution layer"):
        saliency_map(dense, _images(1, 4), [0], "gradcam")


# ---------------------------------------------------------------------------------------------
# Pointing games


BOX = np.array([[10, 10, 20, 20]])  # x0, y0, x1, y1, inclusive


def _peak_at(x, y, size=32):
    maps = np.zeros((1, size, size), np.float32)
    maps[0, y, x] = 1.0
    return maps


def test_pointing_game_hits_inside_and_within_the_tolerance_only():
    assert pointing_game.pointing_game(_peak_at(15, 15), BOX, tolerance=0)[0] == 1
    assert pointing_game.pointing_game(_peak_at(23, 15), BOX, tolerance=4)[0] == 1  # 3 px right of the box
    assert pointing_game.pointing_game(_peak_at(23, 15), BOX, tolerance=2)[0] == 0
    assert pointing_game.pointing_game(_peak_at(24, 24), BOX, tolerance=4)[0] == 0  # sqrt(32) > 4 px off a corner
    assert pointing_game.pointing_game(_peak_at(2, 2), BOX)[0] == 0


def test_a_uniform_map_scores_the_box_area_baseline():
    boxes = np.array([[10, 10, 20, 20], [0, 0, 31, 31], [5, 0, 8, 30]])
    uniform = np.ones((3, 32, 32), np.float32)
    base = pointing_game.baselines(boxes, 32, 32, tolerance=4)
    np.testing.assert_allclose(base["energy"], [121 / 1024, 1.0, 124 / 1024])
    np.testing.assert_allclose(pointing_game.energy_pointing_game(uniform, boxes), base["energy"], rtol=1e-6)
    np.testing.assert_allclose(pointing_game.pointing_game(uniform, boxes, 4), base["pointing"], rtol=1e-6)
    # An all-zero map (a constant map after normalisation) is scored as uniform too.
    np.testing.assert_allclose(pointing_game.energy_pointing_game(0 * uniform, boxes), base["energy"], rtol=1e-6)
    result = pointing_game.scores(uniform, boxes, 4)
    assert result["energy"] == pytest.approx(result["energy_baseline"])
    assert result["pointing"] == pytest.approx(result["pointing_baseline"])


def test_energy_is_the_share_of_mass_inside_the_box():
    maps = np.zeros((1, 32, 32), np.float32)
    maps[0, 12, 12] = 3.0  # inside
    maps[0, 0, 0] = 1.0  # outside
    assert pointing_game.energy_pointing_game(maps, BOX)[0] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="same length"):
        pointing_game.pointing_game(maps, np.concatenate([BOX, BOX]))


# ---------------------------------------------------------------------------------------------
# PCA


def test_whole_set_spectra_equal_numpys_eigendecomposition():
    images = np.random.default_rng(1).integers(0, 256, (150, 4, 3, 3), dtype=np.uint8)
    result = pca.dataset_spectra(images, chunk=40)  # chunks that do not divide N
    flat = images.reshape(150, -1).astype(np.float64) / 255
    expected = np.linalg.eigvalsh(np.cov(flat, rowvar=False))[::-1]
    np.testing.assert_allclose(result["eigenvalues"]["all"], expected, rtol=1e-4, atol=1e-7)
    red = np.linalg.eigvalsh(np.cov(flat[:, 0::3], rowvar=False))[::-1]
    np.testing.assert_allclose(result["eigenvalues"]["red"], red, rtol=1e-4, atol=1e-7)
    curve = pca.retained(result["eigenvalues"]["all"])
    np.testing.assert_allclose(curve, np.cumsum(expected) / expected.sum(), rtol=1e-5)
    assert pca.components_for(curve, 0.9) == int(np.argmax(np.cumsum(expected) / expected.sum() >= 0.9)) + 1


def test_per_image_pca_equals_the_svd_of_the_centred_channel():
    images = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    spectra = pca.per_image_spectra(images)
    channel = images[1, :, :, 2].astype(np.float64) / 255
    singular = np.linalg.svd(channel - channel.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(spectra[1, 2], singular ** 2, atol=1e-10)
    needed = pca.per_image_components(spectra, 0.95)
    assert needed[1, 2] == pca.components_for(np.cumsum(singular ** 2) / (singular ** 2).sum(), 0.95)
    rebuilt = pca.reconstruct_channel(channel, 8)
    np.testing.assert_allclose(rebuilt, channel, atol=1e-10)


@pytest.mark.slow
def test_pca_command_writes_curves_and_figures(tmp_path, capsys):
    assert explain.main(["pca", "--dataset", "digits", "--limit", "60", "--per-image-sample", "20",
                         "--components", "50", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "pca.json").read_text())
    whole = summary["whole_set"]["all"]
    assert summary["images"] == 60 and whole["dimensions"] == 32 * 32 * 3
    assert 1 <= whole["components_for"]["90%"] <= whole["components_for"]["99%"] <= 59
    assert max(whole["curve"]["components"]) == 50
    assert (tmp_path / "pca-dataset.png").stat().st_size > 0 and (tmp_path / "pca-image.png").is_file()
    assert "components for 90% / 95% / 99%" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# t-SNE


def test_tsne_command_runs_on_50_points(tmp_path):
    assert explain.main(["tsne", "--dataset", "digits", "--wnids", "3", "--points", "50", "--perplexity", "5", "10",
                         "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "tsne.json").read_text())
    assert summary["points"] == 50 and len(summary["classes"]) == 3
    panels = summary["rows"][0]["panels"]
    assert [panel["perplexity"] for panel in panels] == [5, 10]
    assert all(0.5 < panel["trustworthiness"] <= 1 for panel in panels)
    assert (tmp_path / "tsne.png").stat().st_size > 0


def test_trustworthiness_prefers_an_embedding_that_keeps_neighbours():
    points = np.random.default_rng(0).random((60, 5)).astype(np.float32)
    kept = embedding.trustworthiness(points, points[:, :2])
    shuffled = embedding.trustworthiness(points, np.random.default_rng(1).permutation(points)[:, :2])
    assert kept > shuffled


def test_class_choice():
    wnids = [f"n{index:08d}" for index in range(10)]
    drawn = embedding.choose_classes(wnids, ["5"], seed=1)
    assert len(drawn) == 5 and drawn == sorted(drawn) and drawn == embedding.choose_classes(wnids, ["5"], seed=1)
    assert embedding.choose_classes(wnids, ["n00000003", "n00000001"]) == [3, 1]
    with pytest.raises(ValueError, match="unknown wnid 'n99'"):
        embedding.choose_classes(wnids, ["n99"])


# ---------------------------------------------------------------------------------------------
# The saliency command on a run over a small Tiny ImageNet-shaped folder

WNIDS = ["n01443537", "n01629819"]


def _tiny_imagenet_val(root: pathlib.Path) -> pathlib.Path:
    """wnids.txt, words.txt and 3 val images per class, each a bright square on a dark field, boxed."""
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")
    rows = []
    for number in range(6):
        image = np.full((64, 64, 3), 20, np.uint8)
        x0, y0 = 8 + 5 * number, 10 + 3 * number
        image[y0:y0 + 20, x0:x0 + 20] = 230
        name = f"val_{number}.JPEG"
        Image.fromarray(image).save(root / "val" / "images" / name, quality=95)
        rows.append(f"{name}\t{WNIDS[number % 2]}\t{x0}\t{y0}\t{x0 + 19}\t{y0 + 19}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def tiny_run(tmp_path) -> pathlib.Path:
    folder = _tiny_imagenet_val(tmp_path / "tiny-imagenet-200")
    run = tmp_path / "run-a"
    run.mkdir()
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv_1")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="conv_last")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.ReLU(name="relu")(x))
    keras.Model(inputs, keras.layers.Dense(2, name="logits")(x), name="tiny").save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"model": "tiny", "dataset": "tiny-imagenet", "data": str(folder),
                                                 "classes": 2}))
    return run


@pytest.mark.slow
def test_saliency_command_scores_runs_and_draws_figures(tiny_run, tmp_path, capsys):
    second = tmp_path / "run-b"
    second.mkdir()
    for name in ("model.keras", "config.json"):
        (second / name).write_bytes((tiny_run / name).read_bytes())
    out = tmp_path / "table"
    assert explain.main(["saliency", str(tiny_run), str(second), "--method", "vanilla", "gradcam", "--images", "3",
                         "--samples", "2", "--out", str(out)]) == 0
    result = json.loads((out / "saliency.json").read_text())
    assert [run["name"] for run in result["runs"]] == ["run-a", "run-b"] and result["tolerance_pixels"] == 4
    first = result["runs"][0]
    assert first["layer"] == "conv_last" and first["training"] == "vanilla"
    for method in ("vanilla", "gradcam"):
        score = first["methods"][method]
        assert score["images"] == 6 and 0 <= score["pointing"] <= 1 and 0 <= score["energy"] <= 1
        # Every box is 20 x 20 of 64 x 64.
        assert score["energy_baseline"] == pytest.approx(400 / 4096)
    for method, score in first["methods"].items():  # the same model scores the same
        assert {key: value for key, value in score.items() if key != "seconds"} == \
            {key: value for key, value in result["runs"][1]["methods"][method].items() if key != "seconds"}
    table = (out / "saliency.md").read_text()
    assert "| run-a | tiny | vanilla |" in table and "Grad-CAM" in table and "python explain.py saliency" in table
    assert (out / "saliency-run-a.png").stat().st_size > 0 and (out / "saliency-run-b.png").is_file()
    assert "pointing" in capsys.readouterr().out


def test_saliency_command_errors_are_one_line(tiny_run, tmp_path, capsys):
    cases = [
        (["saliency", str(tmp_path / "missing")], "run not found"),
        (["saliency", str(tiny_run), "--wnids", "n99999999"], "unknown wnid 'n99999999'"),
        (["saliency", str(tiny_run), str(tiny_run)], "--out DIR"),
        (["saliency", str(tiny_run), "--method", "gradcam", "--layer", "nope"], "has no layer 'nope'"),
    ]
    for argv, message in cases:
        assert run_cli(explain.main, argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith(ERROR) and message in lines[-1], lines
        assert not any("Traceback" in line for line in lines)
    assert not (tiny_run / "explain" / "saliency.json").exists()


def test_saliency_needs_boxes(tmp_path, capsys):
    run = tmp_path / "digits-run"
    run.mkdir()
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3, name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"dataset": "digits"}))
    assert run_cli(explain.main, ["saliency", str(run), "--method", "vanilla"]) == 2
    assert "dataset digits has no bounding boxes" in capsys.readouterr().err


def test_tsne_errors_are_one_line(capsys):
    assert run_cli(explain.main, ["tsne", "--dataset", "digits", "--wnids", "12"]) == 2
    assert "draw between 1 and 10 classes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        explain.main(["tsne", "--perplexity", "-3"])
