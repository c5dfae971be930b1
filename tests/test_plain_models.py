"""Saved models are plain Keras: model.keras loads with safe_mode=True in a Python that never imported the
project and predicts what the run evaluated; training-only pieces are stripped when it is written."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import ensemble as ensemble_cli
import models
import train as train_cli
from loading.run_loader import load_split
from models.parseval import ParsevalConstraint
from models.plain import plain_model
from models.routes import has_routes

PROJECT = ("analysis", "attacks", "augment", "common", "data", "experiments", "loading", "models", "training")
# Run with `python -I` from a folder outside the checkout: no project folder on sys.path. It prints the
# top-1 accuracy and which project packages got imported (none may be).
CLEAN_LOAD = f"""
import json, sys
import keras, numpy as np
model = keras.models.load_model(sys.argv[1], safe_mode=True, compile=False)
predicted = np.argmax(model.predict(np.load(sys.argv[2]), verbose=0), -1)
imported = sorted(name for name in sys.modules if name.split(".")[0] in {PROJECT!r})
print(json.dumps({{"top1": float(np.mean(predicted == np.load(sys.argv[3]))), "imported": imported}}))
"""
DATA = ["--dataset", "digits", "--classes", "3", "--per-class", "12", "--image-size", "16", "--batch-size", "12",
        "--epochs", "1", "--quiet"]


def test_plain_model_predicts_like_the_training_model_with_keras_layers_only():
    model = models.build("cis680_deep_residual", num_classes=3, input_shape=(16, 16, 3),
                         conv_constraint=ParsevalConstraint(beta=0.01), residual_merge="convex",
                         norm_layer="dual_batch_norm")
    rng = np.random.default_rng(0)
    for layer in model.layers:  # trained-looking weights: uneven merges, non-trivial statistics
        if type(layer).__name__ == "ConvexCombination":
            layer.combination.assign([0.3, 0.7])
        elif layer.weights and has_routes(model):
            layer.set_weights([weight + rng.uniform(0.0, 0.2, weight.shape).astype("float32")
                               for weight in layer.get_weights()])
    x = rng.random((4, 16, 16, 3), dtype=np.float32)
    plain = plain_model(model)
    np.testing.assert_allclose(plain(x), model(x, training=False), rtol=1e-5, atol=1e-5)
    serialized = json.dumps(keras.saving.serialize_keras_object(plain))
    assert "zoo>" not in serialized and "Parseval" not in serialized
    assert all(type(layer).__module__.startswith("keras.") for layer in plain.layers)
    assert any(type(layer).__name__ == "ConvexCombination" for layer in model.layers)  # the training model keeps it


def clean_top1(model_path: pathlib.Path, run_dir: pathlib.Path, tmp_path: pathlib.Path) -> float:
    """Top-1 of ``model_path`` on the run's val split, computed by a Python that never imported the project."""
    config = json.loads((run_dir / "config.json").read_text())
    val = load_split(config, "val", image_size=tuple(config["input_shape"][:2]))
    np.save(tmp_path / "x.npy", val.images.astype("float32") / 255.0)
    np.save(tmp_path / "y.npy", val.labels)
    done = subprocess.run([sys.executable, "-I", "-c", CLEAN_LOAD, str(model_path.resolve()),
                           str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    return result["top1"]


@pytest.mark.slow  # trains four digits runs and loads each in a fresh Python
def test_every_kind_of_run_saves_a_model_plain_keras_loads(tmp_path):
    runs = {"plain": ["cis680_allconv"], "parseval": ["cis680_deep_residual", "--parseval", "0.01"],
            "dual_bn": ["alphanet_v4", "--dual-bn", "--adv", "fgsm:1", "--eps", "4/255", "--save-bn", "adv"]}
    for name, argv in runs.items():
        run_dir = tmp_path / name
        assert train_cli.run_cli(train_cli.main, [*argv, *DATA, "--run-dir", str(run_dir)]) == 0, name
    stack = tmp_path / "alphastack"
    assert ensemble_cli.run_cli(ensemble_cli.main, ["alphastack", str(tmp_path / "plain"), str(tmp_path / "parseval"),
                                                    "--epochs", "1", "--run-dir", str(stack)]) == 0
    average = tmp_path / "average"
    assert ensemble_cli.run_cli(ensemble_cli.main, ["average", str(tmp_path / "plain"), str(tmp_path / "dual_bn"),
                                                    "--run-dir", str(average)]) == 0
    for run_dir in [*(tmp_path / name for name in runs), stack, average]:
        evaluated = json.loads((run_dir / "metrics.json").read_text())["val_top1"]
        # metrics.json holds a float32 mean; one image more or less would move it by 1/107
        assert clean_top1(run_dir / "model.keras", run_dir, tmp_path) == pytest.approx(evaluated, abs=1e-6), run_dir
    auxiliary = tmp_path / "dual_bn" / "model-adv-bn.keras"  # the adversarial statistics, plain too
    assert 0 <= clean_top1(auxiliary, tmp_path / "dual_bn", tmp_path) <= 1
