"""The attack registry: declared options, one calling convention, the guard an attack declares, plugins."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from attacks import attack_names, get_attack, make_attack, register_attack
from attacks.accuracy import accuracy
from common import plugins
from tests.helpers import SHAPE, small_model, toy_data
from training.adversarial import AttackMix
from training.parts import RunContext

REPO = pathlib.Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "toy_attack_plugin.py"


@register_attack("test_shift", sweep="snr")
def _shift(*, snr_db, steps=3):
    return lambda model, x, y, seed=None: x * 0.0 + snr_db / 100.0 + steps * 0.0


@pytest.mark.slow
def test_every_built_in_attack_follows_the_calling_convention():
    assert {"fgsm", "pgd", "fast", "noise", "snr", "apgd-ce", "apgd-dlr", "apgd-t", "square"} <= set(attack_names())
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)))  # APGD-T needs 4+ classes
    x, y = toy_data(8)
    settings = dict(eps=0.05, steps=2, snr_db=30.0, targets=1, queries=5, restarts=1)
    for name in [name for name in attack_names() if not name.startswith("test")]:
        info = get_attack(name)
        assert set(info.required) <= set(info.options) and info.summary
        x_adv = np.asarray(make_attack(name, **settings)(model, tf.constant(x), tf.constant(y), 0))
        assert x_adv.shape == x.shape and x_adv.dtype == np.float32 and 0 <= x_adv.min() and x_adv.max() <= 1, name
        if info.sweep == "eps":
            assert np.abs(x_adv - x).max() <= 0.05 + 1e-6, name


def test_an_attack_gets_only_the_options_it_declares_and_says_what_is_missing():
    attack = make_attack("test_shift", snr_db=50.0, eps=0.1, restarts=4)  # eps, restarts: not its options
    np.testing.assert_allclose(attack(None, np.zeros((1, *SHAPE), "float32"), None), 0.5)
    assert get_attack("test_shift").options == ("snr_db", "steps") and get_attack("test_shift").required == ("snr_db",)
    with pytest.raises(ValueError, match="needs snr_db"):
        make_attack("test_shift", eps=0.1, snr_db=None)
    with pytest.raises(ValueError, match="Unknown attack 'cw'.*fgsm"):
        make_attack("cw", eps=0.1)
    with pytest.raises(ValueError, match="already registered"):
        register_attack("pgd")(_shift)
    with pytest.raises(ValueError, match="keyword-only options"):
        register_attack("test_bad")(lambda eps: None)


def test_the_overfitting_guard_is_declared_by_the_attack_not_its_name():
    assert get_attack("fast").overfitting_guard and not get_attack("pgd").overfitting_guard

    @register_attack("test_single_step", overfitting_guard=True)
    def _single_step(*, eps):
        return lambda model, x, y, seed=None: x

    class Val:  # what a data.Split offers the guard
        images = (np.random.default_rng(0).random((10, *SHAPE)) * 255).astype("uint8")
        labels = np.zeros(10, "int32")

        def __len__(self):
            return 10

    run = RunContext(pathlib.Path("."), Val(), 0)
    guarded = AttackMix(attacks="test_single_step:1", eps=0.05).callbacks(run)
    assert [type(callback).__name__ for callback in guarded] == ["CatastrophicOverfittingGuard"]
    assert AttackMix(attacks="pgd:1", eps=0.05).callbacks(run) == []


def test_accuracy_takes_an_attack_by_name_with_its_settings():
    model = small_model()
    x, y = toy_data(16)
    by_name = accuracy(model, x, y, "pgd", batch_size=8, seed=3, eps=0.1, steps=3)
    by_function = accuracy(model, x, y, make_attack("pgd", eps=0.1, steps=3), batch_size=8, seed=3)
    assert by_name == by_function <= accuracy(model, x, y)
    with pytest.raises(ValueError, match="name"):
        accuracy(model, x, y, None, eps=0.1)


def test_plugins_are_imported_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(plugins.VARIABLE, f"{PLUGIN}")
    plugins.import_plugins()
    assert get_attack("toy").options == ("eps",)
    monkeypatch.setenv(plugins.VARIABLE, "no_such_plugin_module")
    with pytest.raises(ValueError, match="ZOO_PLUGINS names 'no_such_plugin_module'"):
        plugins.import_plugins()
    monkeypatch.setenv(plugins.VARIABLE, str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="missing.py"):
        plugins.import_plugins()


def test_evaluate_refuses_an_unknown_attack_in_one_line(capsys, tmp_path):
    import evaluate as evaluate_cli

    assert evaluate_cli.run_cli(evaluate_cli.main, [str(tmp_path / "none.keras"), "--attack", "pgd", "cw"]) == 2
    error = capsys.readouterr().err.strip()
    assert "Unknown attack 'cw'" in error and "pgd" in error and "\n" not in error


@pytest.mark.slow  # two CLI subprocesses
def test_a_plugin_attack_trains_through_train_py_and_evaluates_through_evaluate_py(tmp_path):
    env = {**os.environ, plugins.VARIABLE: str(PLUGIN), "TF_CPP_MIN_LOG_LEVEL": "2"}
    run_dir = tmp_path / "toy-run"
    train = [sys.executable, "train.py", "cis680_allconv", "--dataset", "digits", "--classes", "3", "--per-class",
             "10", "--epochs", "1", "--batch-size", "16", "--adv", "toy:1", "--eps", "8/255", "--quiet",
             "--run-dir", str(run_dir)]
    done = subprocess.run(train, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["parts"][0]["name"] == "attack_mix" and config["parts"][0]["attacks"] == {"toy": 1}
    evaluate = [sys.executable, "evaluate.py", str(run_dir), "--attack", "toy", "pgd", "--eps", "8/255",
                "--pgd-steps", "2"]
    done = subprocess.run(evaluate, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a check failed on a 1-epoch model
    result = json.loads((run_dir / "robustness.json").read_text())
    assert 0 <= result["eps"]["8/255"]["toy"] <= 1 and "TOY top-1 %" in (run_dir / "robustness.md").read_text()
