"""Dual BatchNorm and AdvProp in training: routes of views and attacks, both losses' gradients, saved models."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import train as train_cli
from common.run_folder import read_history
from models.routes import DualBatchNormalization, forward_route
from training.adversarial import AttackMix, LogitPairing
from training.wrapper import TrainingModel

SHAPE = (6, 6, 3)


def dual_bn_model(seed=0):
    inputs = keras.Input(SHAPE, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv",
                            kernel_initializer=keras.initializers.HeNormal(seed=seed))(inputs)
    x = DualBatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="block_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x), name="dual")


def batch(count=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((count, *SHAPE), dtype=np.float32), (np.arange(count) % 3).astype("int32")


def trained_one_step(transform, terms=(), run_eagerly=True):
    model = dual_bn_model()
    wrapper = TrainingModel(model, transforms=[transform], loss_terms=list(terms))
    wrapper.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=run_eagerly,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {variable.path: np.array(variable) for variable in model.get_layer("bn").weights}
    logs = wrapper.train_on_batch(*batch(), return_dict=True)
    after = {variable.path: np.array(variable) for variable in model.get_layer("bn").weights}
    changed = {path.split("/")[-2] + "/" + path.split("/")[-1]: not np.allclose(before[path], after[path])
               for path in before}
    return logs, changed


def test_advprop_clean_and_adversarial_losses_both_reach_their_own_bn():
    # AdvProp's step: 100% PGD-2 at 1/255 through the auxiliary BN, plus the whole clean batch through the main BN.
    advprop = AttackMix(attacks="pgd", fraction=1.0, keep_clean=True, eps=1 / 255, pgd_steps=2,
                        pgd_step_size=1 / 255)
    logs, changed = trained_one_step(advprop)
    # gamma/beta move only by gradients: each set's move shows its loss reached the gradients.
    for which in ("main", "auxiliary"):
        assert changed[f"{which}/gamma"] and changed[f"{which}/beta"], which
        assert changed[f"{which}/moving_mean"], which
    assert np.isfinite(logs["loss"])


@pytest.mark.parametrize("run_eagerly", [True, False])
def test_all_adversarial_training_leaves_the_main_set_alone(run_eagerly):
    # 100% adversarial without clean images: the attack and the forward pass both use the auxiliary set,
    # and the empty clean route neither fails nor writes NaN into the main statistics.
    logs, changed = trained_one_step(AttackMix(attacks="fgsm", fraction=1.0, eps=2 / 255), run_eagerly=run_eagerly)
    assert np.isfinite(logs["loss"])
    assert not any(changed[f"main/{name}"] for name in ("gamma", "beta", "moving_mean", "moving_variance"))
    assert changed["auxiliary/gamma"] and changed["auxiliary/moving_mean"]


def test_the_attack_inside_the_step_runs_through_the_adversarial_route():
    transform = AttackMix(attacks="fgsm", fraction=1.0, eps=2 / 255)
    model = dual_bn_model()
    calls = []
    original = DualBatchNormalization.call

    def recording(layer, inputs, training=None):
        from models.routes import current_route

        calls.append((current_route(), bool(training)))
        return original(layer, inputs, training=training)

    DualBatchNormalization.call = recording
    try:
        x, y = batch()
        with forward_route("clean"):
            transform.views(TrainingModel(model), x, y, step=0)
    finally:
        DualBatchNormalization.call = original
    assert calls and all(route == "adversarial" for route, _ in calls)


def test_logit_pairing_with_dual_bn_trains_both_sets():
    mix = AttackMix(attacks="fgsm", fraction=0.5, eps=2 / 255)
    logs, changed = trained_one_step(mix, [LogitPairing(0.5)])
    assert np.isfinite(logs["logit_pairing"]) and logs["logit_pairing"] >= 0
    assert changed["main/gamma"] and changed["auxiliary/gamma"]


@pytest.mark.slow  # a whole train.py run: minutes on a loaded 2-core CPU
@pytest.mark.parametrize("flags", [["--adv", "fgsm:1", "--adv-fraction", "1.0", "--keep-clean", "--dual-bn"],
                                   ["--advprop"]])
def test_dual_bn_run_saves_plain_models_that_predict_like_the_route(flags, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["alphanet_v4", "--dataset", "digits", "--classes", "3", "--per-class", "12", "--epochs", "1",
            "--batch-size", "36", "--image-size", "16", "--save-bn", "adv", *flags, "--quiet",
            "--run-dir", str(run_dir)]
    assert train_cli.run_cli(train_cli.main, argv) == 0
    for name in ("model.keras", "model-adv-bn.keras"):
        saved = keras.models.load_model(run_dir / name, safe_mode=True, compile=False)
        assert not any(isinstance(layer, DualBatchNormalization) for layer in saved.layers), name
        assert any(type(layer) is keras.layers.BatchNormalization for layer in saved.layers), name
    # The epoch's val accuracy came from the dual-BN model's clean route; metrics.json re-scores model.keras.
    history = read_history(run_dir / "history.csv")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_top1"] == pytest.approx(history[0]["val_accuracy"], abs=1e-6)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_options"]["norm_layer"] == "dual_batch_norm"
