"""tune.py and training.tuning: searches on digits, resume, clean trials, CLI errors, distributed mode."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

import train as train_cli
import tune as tune_cli
from common.run_folder import read_history
from training import trainer, tuning
from tests.helpers import ERROR

DATA = ["--dataset", "digits", "--classes", "4", "--per-class", "40"]
TINY = ["cis680_allconv", *DATA, "--epochs", "1", "--quiet"]
REPO = pathlib.Path(tune_cli.__file__).resolve().parent


class FitSpy:
    """Records the seed of every trial fit; ``interrupt_at = n`` presses Ctrl-C at the n-th fit."""

    def __init__(self):
        self.seeds, self.interrupt_at = [], None


@pytest.fixture
def fits(monkeypatch):
    spy = FitSpy()
    original = tuning.ZooHyperModel.fit

    def fit(self, hp, model, *args, **kwargs):
        spy.seeds.append(self.trial_seed)
        if len(spy.seeds) == spy.interrupt_at:
            raise KeyboardInterrupt
        return original(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(tuning.ZooHyperModel, "fit", fit)
    return spy


@pytest.mark.slow
def test_search_writes_the_table_resumes_and_best_json_trains(tmp_path, fits, capsys):
    search = ["--trials", "3", "--dir", str(tmp_path / "search")]
    fits.interrupt_at = 3  # Ctrl-C during the third trial
    assert tune_cli.run_cli(tune_cli.main, [*TINY, *search]) == 130
    assert fits.seeds == [0, 1, 2]  # trial i is seeded with seed + i

    fits.interrupt_at = None
    fits.seeds.clear()
    table_path = tmp_path / "results" / "tuning.md"
    assert tune_cli.main([*TINY, *search, "--results-table", str(table_path)]) == 0
    assert fits.seeds == [2]  # only the interrupted trial runs again, with its own seed
    out = capsys.readouterr().out
    assert "| trial | optimizer | learning rate | val accuracy | seconds |" in out
    assert "3 trials finished, 1 of them in this call" in out
    folder = tmp_path / "search"
    rows = json.loads((folder / "trials.json").read_text())["trials"]
    assert [row["trial"] for row in rows] == ["0", "1", "2"] and all(row["status"] == "COMPLETED" for row in rows)
    assert all(0 <= row["val_accuracy"] <= 1 and row["seconds"] > 0 for row in rows)
    assert table_path.read_text() == (folder / "trials.md").read_text()
    best = json.loads((folder / "best.json").read_text())
    assert set(best) == {"optimizer", "learning_rate"}
    assert best["learning_rate"] == max(rows, key=lambda row: row["val_accuracy"])["learning_rate"]

    assert tune_cli.main([*TINY, *search]) == 0 and fits.seeds == [2]  # a finished search runs nothing
    assert tune_cli.run_cli(tune_cli.main, [*TINY, *search, "--epochs", "2"]) == 2
    assert "epochs: 1 -> 2" in capsys.readouterr().err

    run_dir = tmp_path / "run"
    assert train_cli.main(["cis680_allconv", *DATA, "--epochs", "1", "--quiet", "--hparams",
                           str(folder / "best.json"), "--run-dir", str(run_dir)]) == 0
    recipe = json.loads((run_dir / "config.json").read_text())["recipe"]
    assert (recipe["optimizer"], recipe["learning_rate"]) == (best["optimizer"], best["learning_rate"])


@pytest.mark.slow
def test_trials_cannot_leak_state_into_each_other(tmp_path):
    """The same trial run again after another one scores exactly the same: each trial starts from a
    clean session, a new optimizer and the seed + index RNG state."""
    settings = tuning.SearchSettings("cis680_allconv", dataset="digits", classes=4, per_class=40, epochs=1)
    hypermodel = tuning.ZooHyperModel(settings)
    tuner = tuning.make_tuner(settings, hypermodel, tmp_path)
    train_split, val_split = trainer.load_splits(settings.train_config())
    hypermodel.use_data(train_split)
    first, second = tuner.oracle.create_trial("a"), tuner.oracle.create_trial("b")

    def run(trial):
        return tuner.run_trial(trial, train_split, val_split, epochs=1, verbose=0)[0]

    before, other, again = run(first), run(second), run(first)
    assert other["loss"] != before["loss"]
    for key in ("loss", "val_loss", "val_accuracy"):
        assert again[key] == pytest.approx(before[key], rel=1e-5), key


@pytest.mark.slow
def test_augment_search_with_adversarial_eps_feeds_train(tmp_path, capsys):
    folder = tmp_path / "search"
    argv = [*TINY, "--search", "augment", "--adv", "fgsm:1", "--trials", "1", "--dir", str(folder)]
    assert tune_cli.main(argv) == 0
    assert "| trial | augment | eps | val accuracy | PGD-10 accuracy at 8/255 | seconds |" in capsys.readouterr().out
    best = json.loads((folder / "best.json").read_text())
    assert set(best) == {"augment", "adv", "adv_fraction", "eps"} and best["augment"] in tuning.POLICIES
    assert best["eps"] in tuning.EPS_CHOICES
    config = train_cli.config_from_args(train_cli.build_parser().parse_args(
        ["cis680_allconv", *DATA, "--hparams", str(folder / "best.json")]), [])
    assert config.recipe.augment == best["augment"]
    attack_mix = config.parts[0]
    assert (attack_mix["name"], attack_mix["attacks"], attack_mix["eps"]) == ("attack_mix", {"fgsm": 1}, best["eps"])


@pytest.mark.slow  # a two-trial search of a Parseval network
def test_method_flags_train_every_trial_that_way(tmp_path):
    folder = tmp_path / "search"
    argv = ["alphanet_v4", *DATA, "--image-size", "32", "--epochs", "1", "--quiet", "--trials", "2", "--parseval",
            "0.01", "--dir", str(folder)]
    assert tune_cli.main(argv) == 0
    for trial in ("trial_0", "trial_1"):
        rows = read_history(folder / tuning.PROJECT_NAME / trial / "history.csv")
        assert rows and all(row["parseval_deviation"] > 0 for row in rows), trial
    saved = json.loads((folder / "search.json").read_text())
    assert saved["model_options"]["conv_constraint"]["config"]["beta"] == 0.01
    assert tune_cli.main(argv) == 0  # the same flags resume the finished search
    assert tune_cli.run_cli(tune_cli.main, [*argv[:-4], "--dir", str(folder)]) == 2  # without --parseval: refused


@pytest.mark.parametrize("argv, needle", [
    (["no_such_model"], "Unknown model 'no_such_model'"),
    (["cis680_allconv", "--optimizers", "adam", "lion"], "Unknown optimizer 'lion'"),
    (["cis680_allconv", "--lr-min", "0.1", "--lr-max", "0.01"], "lr_min=0.1, lr_max=0.01"),
    (["cis680_allconv", "--search", "colour"], "Unknown search 'colour'"),
    (["cis680_allconv", "--tuner", "grid"], "Unknown tuner 'grid'"),
    (["cis680_allconv", "--search", "augment", "--adv", "fgsm:1", "--eps", "2/255"], "--eps"),
    (["cis680_allconv", "--search", "augment", "--adv", "cw:1"], "'cw'"),
])
def test_cli_errors_are_one_line_with_exit_status_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tune_cli.run_cli(tune_cli.main, [*argv, "--dataset", "digits"]) == 2
    error = capsys.readouterr().err.strip()
    assert needle in error and "\n" not in error and error.startswith(ERROR)
    assert not (tmp_path / "tuning").exists()


@pytest.mark.slow
def test_distributed_chief_and_worker_on_loopback(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "tune.py", *TINY, "--trials", "2", "--dir", str(tmp_path / "search")]
    base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port)}
    processes, logs = {}, {}
    try:
        for role in ("chief", "worker0"):
            logs[role] = tmp_path / f"{role}.log"
            with logs[role].open("w") as log:  # files, not pipes: a full pipe would stall a process
                processes[role] = subprocess.Popen(command, cwd=REPO, env={**base, "KERASTUNER_TUNER_ID": role},
                                                   stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        # A worker waits for its chief indefinitely: stop at the first failure or the deadline.
        while time.monotonic() < deadline:
            codes = [process.poll() for process in processes.values()]
            if None not in codes or any(codes):  # all done, or one failed
                break
            time.sleep(1)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    outputs = {role: path.read_text() for role, path in logs.items()}
    for role, process in processes.items():
        assert process.returncode == 0, f"{role}:\n{outputs[role][-3000:]}"
    assert "worker done: ran 2 trials" in outputs["worker0"]
    assert "2 trials finished, 0 of them in this call" in outputs["chief"]
    rows = json.loads((tmp_path / "search" / "trials.json").read_text())["trials"]
    assert [row["status"] for row in rows] == ["COMPLETED", "COMPLETED"]
    assert (tmp_path / "search" / "best.json").is_file()


def test_a_search_folder_in_use_by_another_process_is_refused_before_any_trial(tmp_path, fits, capsys):
    folder = tmp_path / "search"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from common.run_folder import hold_run_folder\n"
         "with hold_run_folder(sys.argv[1], create=True): print('held', flush=True); sys.stdin.read()", str(folder)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert tune_cli.run_cli(tune_cli.main, [*TINY, "--trials", "1", "--dir", str(folder)]) == 2
        assert fits.seeds == [] and [path.name for path in folder.iterdir()] == [".lock"]  # nothing written
    finally:
        holder.communicate("")
    error = capsys.readouterr().err
    assert f"in use by process {holder.pid}" in error and error.count("\n") == 1, error
