"""AlphaStack and averaged ensembles of trained runs (digits members, CPU-fast)."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import ensemble as ensemble_cli
from training import ensembles, trainer
from training.recipes import override
from tests.helpers import ERROR


def train_member(run_dir, seed, epochs=3, image_size=None):
    config = trainer.default_config("cis680_allconv", dataset="digits", per_class=60, seed=seed, verbose=0,
                                    image_size=image_size)
    config.recipe = override(config.recipe, epochs=epochs, batch_size=32, learning_rate=1e-3)
    config.command = f"python train.py cis680_allconv --seed {seed}"  # what the CLI would record
    return trainer.train(config, run_dir)


@pytest.fixture(scope="module")
def member_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [train_member(root / f"member{seed}", seed) for seed in (1, 2)]


def random_images(shape, count=4):
    return np.random.default_rng(0).random((count, *shape), dtype=np.float32)


def weights_of(member):
    return [np.array(variable) for variable in member.model.weights]


@pytest.mark.slow
def test_alphastack_keeps_members_bitwise_and_matches_or_beats_the_best_member(member_dirs, tmp_path):
    members = ensembles.load_members(member_dirs)
    before = [weights_of(member) for member in members]
    run_dir = ensembles.train_alphastack(members, tmp_path / "stack", head=(32,), epochs=5, learning_rate=3e-3,
                                         verbose=0)
    for member, original in zip(members, before):
        assert all(np.array_equal(a, b) for a, b in zip(weights_of(member), original, strict=True))
    for name in ("config.json", "model.keras", "history.csv", "metrics.json", "curves.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["members"]) == {str(path) for path in member_dirs}
    best_member = max(values["val_top3"] for values in metrics["members"].values())
    assert metrics["val_top3"] >= best_member, metrics
    assert metrics["trainable_parameters"] < metrics["parameters"]

    stack = keras.models.load_model(run_dir / "model.keras", safe_mode=True)  # members nested inside
    for index, original in enumerate(before, start=1):
        inner = stack.get_layer(f"member{index}")  # the plain model nests each member as itself
        assert not inner.trainable
        assert all(np.array_equal(np.array(a), b) for a, b in zip(inner.weights, original, strict=True))
    assert ensembles.markdown_table(metrics, "alphastack").count("\n") == 4  # header, rule, 2 members, stack


@pytest.mark.slow
def test_average_is_the_mean_of_member_probabilities(member_dirs, tmp_path):
    members = ensembles.load_members(member_dirs)
    model = ensembles.build_average(members, (32, 32, 3))
    images = random_images((32, 32, 3))
    expected = np.mean([keras.ops.softmax(member.model(images, training=False)) for member in members], axis=0)
    np.testing.assert_allclose(np.asarray(keras.ops.softmax(model(images, training=True))), expected, atol=1e-6)

    run_dir = ensembles.save_average(members, tmp_path / "average", verbose=0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["val_top1"] <= metrics["val_top3"] <= 1 and len(metrics["members"]) == 2
    reloaded = keras.models.load_model(run_dir / "model.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(model(images)), atol=1e-6)
    # Keras' own layers only, so the file loads without this project
    assert all(type(layer).__module__.startswith("keras.") for layer in reloaded.layers)


@pytest.mark.slow
def test_members_of_different_input_sizes_stack(member_dirs, tmp_path, capsys):
    larger = train_member(tmp_path / "member40", seed=3, epochs=1, image_size=40)
    members = ensembles.load_members([member_dirs[0], larger])
    stack = ensembles.build_alphastack(members, (32, 32, 3), head=(8,))
    assert stack.get_layer("member2_resize").output.shape == (None, 40, 40, 3)
    assert stack(random_images((32, 32, 3)), training=False).shape == (4, 10)

    out = tmp_path / "results" / "average.md"
    argv = ["average", str(member_dirs[0]), str(larger), "--run-dir", str(tmp_path / "mixed"), "--quiet",
            "--out", str(out)]
    assert ensemble_cli.run_cli(ensemble_cli.main, argv) == 0
    printed = capsys.readouterr().out
    assert "| average | ensemble |" in printed and printed.count("| cis680_allconv |") == 2
    written = out.read_text()
    assert "| average | ensemble |" in written and "- `python ensemble.py average " in written
    assert written.count("- `python train.py cis680_allconv --seed") == 2  # each member's own command
    config = json.loads((tmp_path / "mixed" / "config.json").read_text())
    assert config["input_shape"] == [32, 32, 3] and config["dataset"] == "digits"


def test_cli_error_is_one_line_with_exit_status_2(capsys, tmp_path):
    argv = ["alphastack", "/nonexistent/run", "--run-dir", str(tmp_path / "x")]
    assert ensemble_cli.run_cli(ensemble_cli.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(ERROR) and "/nonexistent/run" in error and "\n" not in error
    assert not (tmp_path / "x").exists()
