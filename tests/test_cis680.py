"""experiments.cis680: the targeted-image generator, the tables, and each command end to end on a tiny setting."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from common.cli import run_cli
from common.run_folder import read_json
from experiments import cis680
from experiments.cis680_adversarial import choose_targets, generate, with_added_images
from experiments.cis680_runs import cell, mean_std
from tests.helpers import ERROR

TINY = ["--dataset", "digits", "--classes", "3", "--per-class", "12", "--epochs", "1", "--batch-size", "12",
        "--quiet"]


def easy_model():
    """A linear classifier of the mean brightness of each colour channel: red, green or blue."""
    inputs = keras.Input((4, 4, 3))
    means = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(3, kernel_initializer=keras.initializers.Identity(gain=20.0),
                                 bias_initializer="zeros")(means)
    return keras.Model(inputs, outputs)


def test_targets_are_always_a_wrong_class():
    labels = np.array([0, 1, 2, 9, 5])
    assert choose_targets(labels, 10).tolist() == [1, 2, 3, 0, 6]
    random_targets = choose_targets(np.repeat(np.arange(10), 50), 10, "random", seed=3)
    assert np.all(random_targets != np.repeat(np.arange(10), 50)) and len(set(random_targets.tolist())) == 10
    assert np.array_equal(random_targets, choose_targets(np.repeat(np.arange(10), 50), 10, "random", seed=3))
    with pytest.raises(ValueError, match="target"):
        choose_targets(labels, 10, "nearest")


def test_generator_reaches_the_requested_confidence_on_an_easy_model():
    images = np.zeros((4, 4, 4, 3), np.float32)
    images[..., 0] = 0.6  # red images, classified as red
    made = generate(easy_model(), images, np.zeros(4, np.int32), np.array([1, 2, 1, 2], np.int32),
                    confidence=0.99, step_size=2 / 255, max_steps=300)
    assert made.success.all() and (made.p_target >= 0.99).all() and (made.p_true > 0.5).all()
    assert (made.steps > 0).all() and (made.steps < 300).all()
    assert np.allclose(made.linf, np.abs(made.images - images).reshape(4, -1).max(1))
    assert made.images.min() >= 0.0 and made.images.max() <= 1.0


def test_generator_reports_failures_honestly():
    images = np.full((2, 4, 4, 3), 0.5, np.float32)
    made = generate(easy_model(), images, np.zeros(2, np.int32), np.array([1, 2], np.int32), confidence=0.99,
                    step_size=1 / 255, max_steps=3)  # 3 small steps cannot reach 99%
    assert not made.success.any() and (made.steps == 3).all() and (made.p_target < 0.99).all()


def test_added_images_are_stored_as_uint8_under_their_labels():
    from data.split import Split

    split = Split(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1], np.int32), ["a", "b"], ["a", "b"])
    merged = with_added_images(split, np.full((1, 4, 4, 3), 1.0, np.float32), np.array([1]))
    assert len(merged) == 3 and merged.images.dtype == np.uint8 and merged.images[2].max() == 255
    assert merged.labels.tolist() == [0, 1, 1]


def test_cells_give_mean_and_std_over_seeds():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, 0.141421356))
    assert cell([0.5, 0.7]) == "60.00 ± 14.14" and cell([0.5]) == "50.00" and cell([None]) == "n/a"
    assert cell([1e-6], "gradient") == "1.00e-06"


@pytest.mark.parametrize("argv, message", [
    (["vanishing", "--model", "nonet"], "nonet"),
    (["preprocessing", "--data", "{tmp}/nowhere"], "nowhere"),
])
def test_user_errors_are_one_line(argv, message, capsys, tmp_path):
    argv = [argument.replace("{tmp}", str(tmp_path)) for argument in argv]
    assert run_cli(cis680.main, [*argv, "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(ERROR) and message in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def run(experiment, tmp_path, *extra, runs="runs"):
    out = tmp_path / "out"
    argv = [experiment, *TINY, *extra, "--out", str(out), "--runs", str(tmp_path / runs)]
    assert run_cli(cis680.main, argv) == 0
    return out


@pytest.mark.slow
def test_vanishing_end_to_end(tmp_path):
    out = run("vanishing", tmp_path)
    table = (out / "vanishing.md").read_text()
    assert "python -m experiments.cis680 vanishing" in table and "digits" in table
    for model in cis680.DEEP_MODELS:
        assert f"| {model} |" in table
        assert (tmp_path / "runs" / f"{model}-seed0" / "gradients.csv").is_file()
    runs = read_json(out / "vanishing.json")["runs"]
    plain, residual = runs["cis680_deep_plain"][0], runs["cis680_deep_residual"][0]
    # 20 sigmoid layers shrink the first layer's gradient by orders of magnitude; identity skips carry it.
    assert plain["gradient_first_start"] < 1e-6 * plain["gradient_last_start"]
    assert residual["gradient_first_start"] > 1e-3 * residual["gradient_last_start"]
    assert (out / "vanishing.png").stat().st_size > 0


@pytest.mark.slow
def test_preprocessing_end_to_end_and_a_rerun_gives_the_same_table(tmp_path):
    out = run("preprocessing", tmp_path)
    first = json.loads((out / "preprocessing.json").read_text())
    assert sorted(first["runs"]) == sorted(cis680.PREPROCESSING)
    configs = [read_json(tmp_path / "runs" / f"{slug}-seed0" / "config.json")
               for slug in ("raw", "normalised-flip-shift")]
    assert configs[0]["model_options"] == {"normalization": "none"} and configs[0]["recipe"]["augment"] == "none"
    assert configs[1]["model_options"] == {"normalization": "imagenet"}
    assert configs[1]["recipe"]["augment"] == "flip_shift"
    assert (out / "preprocessing.png").stat().st_size > 0
    run("preprocessing", tmp_path, runs="rerun")  # new run folders, same seed
    second = json.loads((out / "preprocessing.json").read_text())
    for setting, group in first["runs"].items():
        assert [[row["test_accuracy"], row["train_loss"]] for row in group] == \
            [[row["test_accuracy"], row["train_loss"]] for row in second["runs"][setting]], setting


@pytest.mark.slow
def test_adversarial_images_end_to_end(tmp_path):
    out = run("adversarial-images", tmp_path, "--images", "2", "--train-images", "6", "--max-steps", "40",
              "--confidence", "0.5", "--pgd-steps", "2")
    report = read_json(out / "adversarial-images.json")
    assert len(report["pairs"]) == 2 and sorted(report["scores"]) == ["baseline", "with adversarial images"]
    train = report["sizes"]["train"][0]
    assert train["images"] == 6 and report["added"] == [train["reached"]]
    added = read_json(tmp_path / "runs" / "with-adversarial-seed0" / "added_images.json")
    assert added["reached"] == train["reached"] and added["confidence"] == 0.5
    assert (out / "pairs" / "pair-1.png").stat().st_size > 0
    assert "69.17%" in (out / "adversarial-images.md").read_text()
