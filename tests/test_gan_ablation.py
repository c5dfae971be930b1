"""The synthetic-data ablation table: arms by fraction, paired by seed against the 0% arm."""
from __future__ import annotations

import json
import pathlib

import pytest

from analysis import gan_ablation


def finished_run(folder, seed: int, top1: float, fraction: float | None = None):
    folder.mkdir(parents=True)
    parts = [{"kind": "transform", "name": "synthetic", "run_dir": "runs/gan", "fraction": fraction, "seed": seed}]
    config = {"seed": seed, "parts": parts if fraction is not None else [], "command": f"python train.py {folder.name}"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps({"val_top1": top1}))
    return str(folder)


def test_each_fraction_gets_its_paired_difference_to_the_seeds_of_the_zero_arm(tmp_path, capsys):
    runs = [finished_run(tmp_path / f"da-s{seed}", seed, top1) for seed, top1 in ((0, 0.60), (1, 0.64), (2, 0.62))]
    runs += [finished_run(tmp_path / f"syn-s{seed}", seed, top1, 0.3) for seed, top1 in ((0, 0.58), (1, 0.61))]
    out = tmp_path / "ablation.md"
    assert gan_ablation.main([*runs, "--out", str(out)]) == 0
    rows = {line.split("|")[1].strip(): line for line in out.read_text().splitlines() if line.startswith("| ")}
    # Differences -2.0 and -3.0 points: mean -2.5, SE = sd / sqrt(2) = 0.5; seed 2 has no pair and is left out.
    # Its 95 % interval uses Student's t at 1 degree of freedom (12.71): -2.5 ± 6.35.
    assert "| -2.5 ± 0.5 (2) | -8.9 to +3.9 |" in rows["30%"]
    assert "| baseline |" in rows["0%"] and "62.0 ± 2.0" in rows["0%"]
    assert "python train.py syn-s1" in out.read_text()


def test_without_a_zero_arm_the_table_says_so(tmp_path):
    runs = [finished_run(tmp_path / f"syn-s{seed}", seed, 0.5, 0.1) for seed in (0, 1)]
    text = gan_ablation.table([gan_ablation.run_row(pathlib.Path(run)) for run in runs])
    assert "no 0% run" in text


def test_an_unfinished_run_is_named(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="half/config.json"):
        gan_ablation.run_row(tmp_path / "half")
