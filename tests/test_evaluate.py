"""evaluate.py: accuracy under attack, its sanity checks, and adversarial training from train.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

import evaluate as evaluate_cli
import train as train_cli
from analysis import autoattack, compare_robustness, robustness
from tests.test_autoattack import Killed, killed_at
from training import trainer
from common.run_folder import read_history
from training.recipes import override

import keras


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    config = trainer.default_config("cis680_allconv", dataset="digits", classes=4, per_class=60, verbose=0)
    config.recipe = override(config.recipe, epochs=4, batch_size=32, learning_rate=3e-3)
    return trainer.train(config, tmp_path_factory.mktemp("runs") / "vanilla")


@pytest.mark.slow
def test_evaluate_writes_a_trustworthy_table_into_the_run(trained_run, capsys):
    argv = [str(trained_run), "--attack", "fgsm", "pgd", "snr", "noise", "--eps", "2/255", "8/255",
            "--snr", "40", "30", "--pgd-steps", "5", "--limit", "64"]
    assert evaluate_cli.run_cli(evaluate_cli.main, argv) == 0
    printed = capsys.readouterr().out
    assert "checks: trustworthy" in printed and "| 8/255 |" in printed and "| FGSM at SNR |" in printed
    assert "pgd at 8/255: " in printed and "noise at 30 dB: " in printed  # progress while it runs
    metrics = json.loads((trained_run / "metrics.json").read_text())
    result = metrics["robustness"]
    assert result["n"] == 64 and result["trustworthy"]
    assert {check["name"] for check in result["checks"]} >= {
        "eps=0 equals clean", "fgsm does not rise with eps", "pgd does not rise with eps", "PGD <= FGSM",
        "more steps and restarts do not raise PGD", "a very large eps drives accuracy to chance"}
    assert result["eps"]["8/255"]["pgd"] <= result["eps"]["8/255"]["fgsm"] + 1 / 64
    assert (trained_run / "robustness.md").read_text().startswith("## vanilla on digits val")
    assert result["command"].startswith("python evaluate.py ")

    out = trained_run.parent / "comparison.md"
    assert compare_robustness.main([str(trained_run), "--out", str(out)]) == 0
    table = out.read_text()
    assert "| vanilla | vanilla |" in table and "| all passed |" in table
    assert "PGD 8/255 %" in table and "40 dB %" in table and "python evaluate.py" in table


@pytest.mark.slow
def test_a_broken_table_is_marked_untrustworthy(trained_run):
    model = keras.models.load_model(trained_run / "model.keras", safe_mode=True)
    val_images = np.random.default_rng(0).random((32, 32, 32, 3), dtype=np.float32)
    labels = np.zeros(32, np.int32)
    clean = robustness.accuracy(model, val_images, labels)
    # Accuracy that rises with eps, and PGD above FGSM: what a masked gradient looks like.
    result = {"clean": clean, "n": 32, "eps": {"2/255": {"fgsm": 0.1, "pgd": 0.3}, "8/255": {"fgsm": 0.9, "pgd": 0.95}},
              "snr": {}}
    checks = robustness.sanity_checks(model, val_images, labels, result, [2 / 255, 8 / 255], 3, 1, 1 / 32, 32, None)
    failed = {check.name for check in checks if not check.passed}
    assert {"fgsm does not rise with eps", "PGD <= FGSM"} <= failed
    result.update(checks=[vars(check) for check in checks], trustworthy=False)
    assert "**untrustworthy** (failed: " in robustness.markdown_table(result)


@pytest.mark.slow
def test_evaluate_runs_autoattack_and_writes_its_ledger(trained_run, capsys):
    argv = [str(trained_run), "--attack", "fgsm", "pgd", "autoattack", "--eps", "8/255", "--pgd-steps", "5",
            "--apgd-steps", "5", "--targets", "3", "--square-queries", "20", "--limit", "32"]
    assert evaluate_cli.run_cli(evaluate_cli.main, argv) == 0
    printed = capsys.readouterr().out
    assert "autoattack 8/255: apgd-t broke " in printed  # progress per component
    result = json.loads((trained_run / "robustness.json").read_text())
    record = result["autoattack"]["8/255"]
    assert record["threat_model"] == "Linf" and record["eps"] == "8/255" and record["n_images"] == 32
    assert [row["attack"] for row in record["ledger"]] == ["apgd-ce", "apgd-t", "square"]
    assert record["attack_versions"]["square"] == "Square, 20 queries, p_init 0.8" and record["seconds"] > 0
    row = result["eps"]["8/255"]
    assert row["autoattack"] <= row["apgd-ce"] and row["autoattack"] <= row["pgd"] + 1 / 32
    assert record["clean_acc"] == result["clean"]
    assert {"APGD <= PGD", "AutoAttack <= every component",
            "Square does not break more than the white-box attacks"} <= {check["name"] for check in result["checks"]}
    table = (trained_run / "robustness.md").read_text()
    assert "| AUTOATTACK top-1 % |" in table and "| apgd-t | APGD-T, targeted DLR, 5 steps, 3 targets |" in table
    assert "FAB-T not run" in table

    out = trained_run.parent / "comparison-aa.md"
    assert compare_robustness.main([str(trained_run), "--out", str(out)]) == 0
    assert "AutoAttack 8/255 %" in out.read_text() and "AA − PGD 8/255" in out.read_text()


@pytest.mark.slow
def test_an_evaluation_killed_in_autoattack_goes_on_from_its_checkpoint(trained_run, monkeypatch, capsys):
    argv = [str(trained_run), "--attack", "autoattack", "--eps", "8/255", "--apgd-steps", "3", "--targets", "3",
            "--square-queries", "10", "--limit", "32", "--batch-size", "8"]
    monkeypatch.setattr(autoattack, "CHECKPOINT_EVERY", 0.0)
    killed_at(monkeypatch, "apgd-ce", batch=2)
    (trained_run / "robustness.json").unlink(missing_ok=True)
    with pytest.raises(Killed):
        evaluate_cli.main(argv)
    assert [path.name for path in trained_run.glob("*.partial.npz")] == ["robustness-autoattack-8_255.partial.npz"]
    assert not (trained_run / "robustness.json").exists()
    monkeypatch.undo()  # the kill is spent; an evaluation without AutoAttack leaves its checkpoint alone
    assert evaluate_cli.run_cli(evaluate_cli.main, [str(trained_run), "--attack", "fgsm", "--eps", "8/255",
                                                    "--limit", "32"]) == 0
    assert (trained_run / "robustness-autoattack-8_255.partial.npz").exists()
    monkeypatch.setattr(autoattack, "CHECKPOINT_EVERY", 0.0)
    capsys.readouterr()
    assert evaluate_cli.run_cli(evaluate_cli.main, argv) == 0
    assert "autoattack 8/255: going on from " in capsys.readouterr().out
    record = json.loads((trained_run / "robustness.json").read_text())["autoattack"]["8/255"]
    assert record["resumed"]["cpu_seconds"] > 0 and record["ledger"][0]["attacked"] > 8
    assert not list(trained_run.glob("*.partial.npz"))  # spent once the results are written


def test_results_named_apart_let_two_passes_share_a_model(trained_run, tmp_path):
    """--results writes elsewhere and leaves the run's own files alone (the bench runs passes side by side)."""
    before = (trained_run / "metrics.json").read_text()
    common = [str(trained_run / "model.keras"), "--dataset", "digits", "--classes", "4", "--attack", "autoattack",
              "--apgd-steps", "2", "--targets", "3", "--square-queries", "5", "--limit", "16"]
    for eps in ("4/255", "8/255"):
        out = tmp_path / f"pass-{eps.replace('/', '_')}.json"
        assert evaluate_cli.run_cli(evaluate_cli.main, [*common, "--eps", eps, "--results", str(out)]) in (0, 1)
        assert list(json.loads(out.read_text())["autoattack"]) == [eps] and out.with_suffix(".md").exists()
    assert (trained_run / "metrics.json").read_text() == before
    assert not (trained_run / "model-robustness.json").exists() and not list(tmp_path.glob("*.partial.npz"))


@pytest.mark.parametrize("flags, message", [
    (["--results", "out.txt"], "--results"),
    (["--limit", "0"], "--limit"), (["--limit", "-5"], "--limit"), (["--eps", "2"], "--eps"),
    (["--pgd-steps", "0"], "--pgd-steps"), (["--batch-size", "0"], "--batch-size"),
    (["--square-queries", "0"], "--square-queries"),
])
def test_evaluate_refuses_bad_flags_in_one_line(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main([str(tmp_path / "model.keras"), *flags])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in error and "error: " in error and message in error


def test_evaluate_refuses_more_targets_than_classes(trained_run, capsys):
    argv = [str(trained_run), "--attack", "autoattack", "--eps", "8/255", "--targets", "9"]
    assert evaluate_cli.run_cli(evaluate_cli.main, argv) == 2
    assert "--targets 9" in capsys.readouterr().err


def test_evaluate_rejects_a_missing_model(tmp_path, capsys):
    assert evaluate_cli.run_cli(evaluate_cli.main, [str(tmp_path / "nothing.keras")]) == 2
    assert "nothing.keras" in capsys.readouterr().err


@pytest.mark.parametrize("mix", ["fgsm:10,pgd:1", "fast:1"])
@pytest.mark.slow
def test_train_cli_runs_adversarial_training(mix, tmp_path):
    run_dir = tmp_path / "run"
    argv = ["cis680_allconv", "--dataset", "digits", "--classes", "4", "--per-class", "30", "--epochs", "1",
            "--batch-size", "32", "--adv", mix, "--eps", "4/255", "--quiet", "--run-dir", str(run_dir),
            *(["--pgd-steps", "3"] if "pgd" in mix else [])]  # train.py refuses --pgd-steps without PGD
    assert train_cli.run_cli(train_cli.main, argv) == 0
    config = json.loads((run_dir / "config.json").read_text())
    attack_mix = config["parts"][0]  # the attack mix is the run's first part
    assert attack_mix["name"] == "attack_mix" and attack_mix["eps"] == pytest.approx(4 / 255)
    assert attack_mix["attacks"] == {name: int(weight) for name, weight in (item.split(":") for item in mix.split(","))}
    keras.models.load_model(run_dir / "model.keras", safe_mode=True)  # the plain model, not the wrapper
    if mix.startswith("fast"):  # the catastrophic-overfitting guard logs robust accuracy per epoch
        assert "val_pgd_accuracy" in read_history(run_dir / "history.csv")[0]


def test_train_cli_rejects_a_bad_attack_mix(capsys):
    assert train_cli.run_cli(train_cli.main, ["cis680_allconv", "--dataset", "digits", "--adv", "bogus:1"]) == 2
    assert "bogus" in capsys.readouterr().err
