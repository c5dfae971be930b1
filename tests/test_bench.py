"""The bench: records that are never redone, tables with paired differences, arguments checked first."""
from __future__ import annotations

import argparse
import json
import shutil
import zipfile

import numpy as np
import pytest

from common.cli import run_cli
from common.stats import difference_text, interval, paired
from experiments import bench
from experiments.robust_methods import EPS, SNRS, convergence, render, render_claims, verdict


def robustness_record(clean):
    return {"clean": clean, "snr": {snr: {"snr": clean / 2} for snr in SNRS},
            "eps": {eps: {"pgd": clean / 4, "autoattack": clean / 5} for eps in EPS}, "checks": [{"passed": True}]}


@pytest.fixture
def fake_scripts(tmp_path, monkeypatch):
    """bench.run replaced by a stand-in that writes what train.py / evaluate.py would, and counts calls."""
    calls = []
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    monkeypatch.setattr(bench, "RECORDS", tmp_path / "results" / "bench" / "runs.json")
    monkeypatch.setattr(bench, "commit", lambda: "abc")

    def run(command, log, threads=None):
        calls.append(command)
        if "--results" in command:  # an AutoAttack pass on one model file at one radius
            eps = command[command.index("--eps") + 1]
            record = robustness_record(0.6)
            record["eps"] = {eps: record["eps"][eps]}
            (tmp_path / command[command.index("--results") + 1]).write_text(json.dumps(record))
            return 0, 12.5
        if command[1].endswith(".keras"):  # a core evaluation of a model file: its result is named after it
            model = tmp_path / command[1]
            model.with_name(f"{model.stem}-robustness.json").write_text(json.dumps(robustness_record(0.6)))
            return 0, 12.5
        run_dir = tmp_path / (command[2] if command[1] == "--resume" else command[command.index("--run-dir") + 1]
                              if command[0] == "train.py" else command[1])
        run_dir.mkdir(parents=True, exist_ok=True)
        if command[0] == "train.py":
            seed = int(run_dir.name.rsplit("-s", 1)[1])
            with zipfile.ZipFile(run_dir / "model.keras", "w") as archive:  # weights unlike any earlier training's
                archive.writestr("model.weights.h5", f"{run_dir.name} {len(calls)}")
            (run_dir / "metrics.json").write_text(json.dumps({"val_top1": 0.5 + seed / 100, "epochs": 9,
                                                              "best_epoch": 7, "final_train_accuracy": 0.8}))
        else:
            (run_dir / "robustness.json").write_text(json.dumps(robustness_record(0.6)))
        return 0, 12.5

    monkeypatch.setattr(bench, "run", run)
    return calls


def test_a_stage_with_a_record_is_never_run_again(fake_scripts):
    args = argparse.Namespace(runs="runs/bench", data="data", jobs=1)
    records = {}
    for stage in ("train", "core", "train", "core"):
        bench.bench_run("da", 0, stage, args, records)
    assert [command[0] for command in fake_scripts] == ["train.py", "evaluate.py"]
    saved = json.loads(bench.RECORDS.read_text())["da-s0"]
    assert saved["cpu_seconds"] == {"train": 12.5, "core": 12.5} and saved["commit"] == "abc"
    assert saved["numbers"]["model.keras"]["val top-1"] == 0.5
    assert saved["numbers"]["model.keras"]["PGD-10 4/255"] == pytest.approx(0.15)
    # A new process (a new machine with the committed records) runs nothing either.
    bench.bench_run("da", 0, "core", args, json.loads(bench.RECORDS.read_text()))
    assert len(fake_scripts) == 2
    # A bench running beside this one (another --configs) keeps this one's records, and this one sees its.
    other = {}
    bench.bench_run("vanilla", 0, "train", args, other)
    assert set(json.loads(bench.RECORDS.read_text())) == {"da-s0", "vanilla-s0"}
    bench.bench_run("vanilla", 0, "train", args, records)
    assert len(fake_scripts) == 3


def test_a_resumed_training_counts_the_cpu_of_its_earlier_processes(fake_scripts):
    args = argparse.Namespace(runs="runs/bench", data="data", jobs=1)
    for seed, columns, rows in [(0, "epoch,epoch_seconds,epoch_cpu_seconds", ["0,90,100", "1,40,50"]),
                                (1, "epoch,epoch_seconds", ["0,30"])]:  # a history from before CPU was logged
        run_dir = bench.ROOT / "runs" / "bench" / f"da-s{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text("{}")
        (run_dir / "history.csv").write_text("\n".join([columns, *rows]) + "\n")
        bench.bench_run("da", seed, "train", args, {})
    records = json.loads(bench.RECORDS.read_text())
    assert fake_scripts[0][:2] == ["train.py", "--resume"]
    assert records["da-s0"]["cpu_seconds"]["train"] == 12.5 + 150 and "cpu_estimated" not in records["da-s0"]
    assert records["da-s1"]["cpu_seconds"]["train"] == 12.5 + 30 and "wall time" in records["da-s1"]["cpu_estimated"]
    assert "1 resumed training(s) count epochs of earlier processes by wall time" in render(
        "imt", records, "python -m experiments.bench imt --table-only")


def test_a_resumed_autoattack_pass_counts_the_cpu_of_its_earlier_processes(fake_scripts, monkeypatch):
    fake = bench.run

    def run(command, log, threads=None):  # evaluate.py's AutoAttack records carry what killed processes spent
        status, seconds = fake(command, log)
        if "autoattack" in command and command[command.index("--eps") + 1] == "2/255":
            found = bench.ROOT / command[command.index("--results") + 1]
            result = json.loads(found.read_text())
            result["autoattack"] = {"2/255": {"resumed": {"seconds": 330.0, "cpu_seconds": 300.0}}}
            found.write_text(json.dumps(result))
        return status, seconds

    monkeypatch.setattr(bench, "run", run)
    args = argparse.Namespace(runs="runs/bench", data="data", jobs=1)
    for stage in ("train", "core", "autoattack"):
        bench.bench_run("da", 0, stage, args, {})
    assert json.loads(bench.RECORDS.read_text())["da-s0"]["cpu_seconds"] == {"train": 12.5, "core": 12.5,
                                                                             "autoattack": 2 * 12.5 + 300}


def test_paired_difference_and_its_standard_error():
    mean, error, pairs = paired({0: 50.0, 1: 60.0, 2: 55.0}, {0: 52.0, 1: 61.0, 3: 90.0})
    assert (mean, pairs) == (1.5, 2) and error == pytest.approx(np.std([2.0, 1.0], ddof=1) / np.sqrt(2))
    assert paired({0: 50.0}, {1: 40.0})[2] == 0
    # Student's t at 2 degrees of freedom (4.303), not the normal 1.96; no interval from one pair.
    assert interval(1.0, 1.0, 3) == pytest.approx((1.0 - 4.3027, 1.0 + 4.3027), abs=1e-4)
    assert interval(1.0, None, 1) is None
    assert (difference_text(1.46, 0.04), difference_text(-2.0, None)) == ("+1.5 ± 0.0", "-2.0")


def test_table_shows_counts_spread_and_paired_differences():
    def record(config, seed, top1):
        return {"config": config, "seed": seed, "cpu_seconds": {"train": 3600.0, "core": None},
                "numbers": {"model.keras": {"val top-1": top1}}}
    records = {f"{c}-s{s}": record(c, s, v) for c, s, v in
               [("da", 0, 0.60), ("da", 1, 0.62), ("smooth-da", 0, 0.58), ("smooth-da", 1, 0.59)]}
    text = render("imt", records, "python -m experiments.bench imt --table-only")
    assert "| da (flip and shift) | 2 | 61.0 ± 1.4 |" in text
    assert "| Smooth + da (γ 0.01, m 2) | -2.5 ± 0.5 (2) |" in text
    assert "| vanilla (no augmentation) | 0 | – |" in text
    assert "4.0 CPU hours over 4 runs, 4 stage(s) of runs trained outside the bench (adopted) not counted" in text


def test_a_training_that_reached_the_epoch_budget_still_improving_is_named():
    def record(seed, epochs, best):
        return {"config": "da", "seed": seed, "training": {"epochs": epochs, "best_epoch": best}}
    stopped = {"da-s0": record(0, 27, 21), "da-s1": record(1, 40, 34)}  # 6 epochs flat: stopped at the cap
    assert convergence(list(stopped.values())).startswith("Convergence: all 2 trainings with a record stopped early")
    capped = {**stopped, "da-s2": record(2, 40, 36)}
    text = render("imt", capped, "rebuild")
    assert "2 of 3 trainings stopped early" in text and "da-s2 (best epoch 36) reached the 40-epoch budget" in text


@pytest.mark.parametrize("argv, message", [(["imt", "--seeds", "0", "0"], "repeats a seed"),
                                           (["imt", "--data", "/nowhere/tiny"], "/nowhere/tiny"),
                                           (["xie", "--configs", "smooth-da"], "--configs smooth-da")])
def test_bad_arguments_stop_before_any_run(fake_scripts, capsys, argv, message):
    assert run_cli(bench.main, argv) == 2
    assert message in capsys.readouterr().err and not fake_scripts and not bench.RECORDS.exists()


def test_claim_verdicts_need_three_paired_seeds_and_a_95_percent_interval():
    # With 3 pairs the interval is mean ± 4.30 SE: 5 ± 1 excludes 0, 4 ± 1 does not.
    assert verdict(5.0, 1.0, 2, +1) == "not resolved yet (2 seeds)"
    assert verdict(5.0, 1.0, 3, +1) == "confirmed" and verdict(-5.0, 1.0, 3, +1) == "refuted"
    assert verdict(4.0, 1.0, 3, +1) == "not resolved at this scale (95 % interval includes 0)"
    assert verdict(4.0, 1.0, 5, +1) == "confirmed"  # t at 4 degrees of freedom is 2.78
    # No-difference claims: the interval within ±2 points confirms, one that excludes 0 refutes.
    assert verdict(0.5, 0.3, 3, 0).startswith("confirmed") and verdict(3.0, 0.5, 3, 0) == "refuted"
    assert verdict(0.5, 1.0, 3, 0) == "not resolved at this scale (95 % interval too wide)"
    records = {f"{config}-s{seed}": {"config": config, "seed": seed,
                                     "numbers": {"model.keras": {"val top-1": value + seed / 100}}}
               for config, value in (("vanilla", 0.50), ("da", 0.60)) for seed in (0, 1, 2)}
    assert ("**confirmed** — Data augmentation raises clean accuracy (49.1 → 62.4 %) (IMT Table 2): "
            "da (flip and shift) vs vanilla (no augmentation), val top-1: +10.0 ± 0.0 points (3 pairs; 95 % interval "
            "+10.0 to +10.0)") \
        in render_claims(records)


def test_a_claim_on_the_auxiliary_bn_reads_that_model_file():
    records = {f"{config}-s{seed}": {"config": config, "seed": seed, "numbers": {
        "model.keras": {"PGD-10 2/255": main + seed / 100}, "model-adv-bn.keras": {"PGD-10 2/255": aux + seed / 100}}}
        for config, main, aux in (("pgd100-clean-shared", 0.20, 0.0), ("pgd100-clean-dual", 0.10, 0.30))
        for seed in (0, 1, 2)}
    line = next(line for line in render_claims(records).splitlines() if "separate BN" in line)
    # The auxiliary BN's 30 % against the shared run's 20 %: +10 points, not the main BN's -10.
    assert line.startswith("- **confirmed**") and "dual BN — auxiliary BN vs" in line and "+10.0 ± 0.0" in line


def test_the_plan_shows_what_each_stage_has_and_costs_what_is_left(tmp_path):
    records = {"da-s0": {"config": "da", "cpu_seconds": {"train": 1500.0, "core": 300.0}},
               "da-s1": {"config": "da", "cpu_seconds": {"train": 2100.0, "core": 300.0, "autoattack": 900.0}},
               "vanilla-s0": {"config": "vanilla", "cpu_seconds": {"train": None, "core": 250.0}}}
    text = bench.render_plan(["da", "vanilla"], [0, 1, 2], records)
    assert "| da | 0, 1 | 0, 1 | 1 | 35 | 15 |" in text  # (1800 + 2400) / 2 s = 35 min; 900 s of AutoAttack
    assert "| vanilla | 0 | 0 | – | – | – |" in text  # an adopted run has no training cost
    assert "Left: 3 trainings, 3 core evaluations, 5 AutoAttack passes" in text
    # da-s2's 35 min of training; da-s0's and da-s2's 15 min of AutoAttack
    assert "about 0.6 CPU hours of training with core evaluations, 0.5 of AutoAttack" in text
    assert "Not yet measured (training): vanilla." in text and "Not yet measured (AutoAttack): vanilla." in text
    # On a machine without their run folders, da-s0 and vanilla-s0 are trained again before their passes
    # (da-s1 has every stage; vanilla's adopted run has no cost to go by).
    (tmp_path / "da-s1").mkdir()
    text = bench.render_plan(["da", "vanilla"], [0, 1, 2], records, runs=tmp_path)
    assert "5 AutoAttack passes; 2 recorded run(s) to be trained again first, their run folders gone" in text
    assert "about 1.2 CPU hours of training with core evaluations" in text
    assert "Not yet measured (training): vanilla." in text


def test_plan_runs_nothing(fake_scripts, capsys):
    assert run_cli(bench.main, ["imt", "--plan", "--seeds", "0"]) == 0
    assert fake_scripts == [] and "| noise-da | – | – | – | – | – |" in capsys.readouterr().out


def test_a_record_whose_model_is_gone_is_retrained_before_a_later_stage(fake_scripts):
    args = argparse.Namespace(runs="runs/bench", data="data", jobs=1)
    for stage in ("train", "core"):
        bench.bench_run("da", 0, stage, args, {})
    shutil.rmtree(bench.ROOT / "runs" / "bench" / "da-s0")  # the records travelled, the run folder did not
    bench.bench_run("da", 0, "autoattack", args, {})
    assert [command[0] for command in fake_scripts] == ["train.py", "evaluate.py"] * 2 + ["evaluate.py"] * 2
    assert "--resume" not in fake_scripts[2]
    record = json.loads(bench.RECORDS.read_text())["da-s0"]
    assert record["cpu_seconds"] == {"train": 12.5, "core": 12.5, "autoattack": 25.0}
    (earlier,) = record["superseded"]
    assert earlier["cpu_seconds"] == {"train": 12.5, "core": 12.5} and "gone" in earlier["superseded_because"]
    assert "plus 0.0 CPU hours of 1 earlier record(s) replaced" in render("imt", {"da-s0": record}, "rebuild")
    # The retrained model is there now: nothing runs again.
    bench.bench_run("da", 0, "autoattack", args, {})
    assert len(fake_scripts) == 6


def test_each_run_takes_all_its_stages_before_the_next_starts(fake_scripts, monkeypatch):
    monkeypatch.setattr(bench, "check_experiment", lambda **kwargs: None)
    assert run_cli(bench.main, ["robustness", "--configs", "da", "fgsm-at", "--seeds", "0", "1"]) == 0
    stages = [(command[0], command[-1] if command[0] == "train.py" else "autoattack" in command)
              for command in fake_scripts]
    one_run = [("train.py", "runs/bench/{}"), ("evaluate.py", False), ("evaluate.py", True), ("evaluate.py", True)]
    assert stages == [(script, target if isinstance(target, bool) else target.format(run))
                      for run in ("da-s0", "fgsm-at-s0", "da-s1", "fgsm-at-s1") for script, target in one_run]
    fake_scripts.clear()
    assert run_cli(bench.main, ["robustness", "--configs", "da", "--seeds", "2", "--no-autoattack"]) == 0
    assert not any("autoattack" in command for command in fake_scripts) and len(fake_scripts) == 2


def test_jobs_run_evaluations_side_by_side_autoattack_one_per_model_file_and_radius(fake_scripts, monkeypatch):
    fake, threads_seen = bench.run, []

    def run(command, log, threads=None):
        threads_seen.append((threads, log.name))
        return fake(command, log)

    monkeypatch.setattr(bench, "run", run)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 4)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    args = argparse.Namespace(runs="runs/bench", data="data", jobs=2)
    bench.bench_run("pgd100-clean-dual", 0, "autoattack", args, {})
    passes = [command for command in fake_scripts if "--results" in command]
    assert [(command[1].rsplit("/", 1)[1], command[command.index("--eps") + 1]) for command in passes] == [
        ("model.keras", "2/255"), ("model-adv-bn.keras", "2/255"), ("model.keras", "4/255"),
        ("model-adv-bn.keras", "4/255")]  # the smaller radius, the longer pass, first
    # The training runs alone (with the bench's threads: none set, 0 is TensorFlow's default); the evaluations
    # (two core, four AutoAttack) two at a time, each logging apart.
    assert [threads for threads, _ in threads_seen] == [0] + [2] * 6 and len({name for _, name in threads_seen}) == 7
    record = json.loads(bench.RECORDS.read_text())["pgd100-clean-dual-s0"]
    for file in ("model.keras", "model-adv-bn.keras"):
        assert record["numbers"][file]["AA 2/255"] == record["numbers"][file]["AA 4/255"] == pytest.approx(0.12)
        assert record["checks_passed"][f"{file} autoattack"]
    assert record["cpu_seconds"]["autoattack"] == 4 * 12.5 and len(record["commands"]["autoattack"]) == 4


def test_a_retraining_that_reproduces_the_weights_keeps_the_record_and_runs_only_what_it_lacks(fake_scripts,
                                                                                              monkeypatch):
    fake = bench.run

    def killed_at_4(command, log, threads=None):  # the sitting ends during the 4/255 pass
        if "--results" in command and "4/255" in command:
            raise KeyboardInterrupt
        return fake(command, log)

    monkeypatch.setattr(bench, "run", killed_at_4)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    args = argparse.Namespace(runs="runs/bench", data="data", jobs=1)
    with pytest.raises(KeyboardInterrupt):
        bench.bench_run("da", 0, "autoattack", args, {})
    record = json.loads(bench.RECORDS.read_text())["da-s0"]
    assert record["partial"]["autoattack"]["finished"] == ["model-autoattack-2_255.json"]
    assert "autoattack" not in record["cpu_seconds"] and record["tf_threads"] == 1
    assert record["numbers"]["model.keras"]["AA 2/255"] == pytest.approx(0.12)

    # The next sitting has the records, not the run folder; the training reproduces the recorded weights.
    shutil.rmtree(bench.ROOT / "runs" / "bench" / "da-s0")
    threads_seen = []
    monkeypatch.setattr(bench, "run", lambda command, log, threads=None: threads_seen.append(threads) or fake(command, log))
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")  # this sitting's bench has other threads: the record's count wins
    monkeypatch.setattr(bench, "weights_digest", lambda run_dir: record["weights_sha256"])
    fake_scripts.clear()
    bench.bench_run("da", 0, "autoattack", args, {})
    assert [command[0] for command in fake_scripts] == ["train.py", "evaluate.py"] and threads_seen[0] == 1
    assert fake_scripts[1][fake_scripts[1].index("--eps") + 1] == "4/255"
    kept = json.loads(bench.RECORDS.read_text())["da-s0"]
    assert "superseded" not in kept and "partial" not in kept and kept["retrained"][0]["cpu_seconds"] == 12.5
    assert kept["cpu_seconds"] == {"train": 12.5, "core": 12.5, "autoattack": 25.0}
    assert kept["numbers"]["model.keras"]["AA 4/255"] == pytest.approx(0.12) and len(kept["commands"]["autoattack"]) == 2
    assert "plus 0.0 CPU hours of 1 training(s) that reproduced a recorded model" in render("imt", {"da-s0": kept}, "r")
