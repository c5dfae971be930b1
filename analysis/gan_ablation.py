"""The synthetic-data ablation as a Markdown table (val top-1 by synthetic fraction: mean ± std over seeds, and
the paired difference to 0% with its standard error and 95 % interval), and a GAN run's scored epochs as a table.

    python -m analysis.gan_ablation runs/syn-0.0-s0 runs/syn-0.1-s0 ... --out results/gan/ablation.md
    python -m analysis.gan_ablation --gan-run runs/cgan-tiny10 --out results/gan/history.md

Each run folder is a finished ``train.py`` run; its synthetic fraction is read from the "synthetic"
part in its config.json (0 without one), its seed from the config, its score from metrics.json.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys

from common.cli import run_cli
from common.run_folder import read_json, write_text
from common.stats import difference_text, interval, paired


def run_row(run_dir: pathlib.Path) -> dict:
    """{"fraction", "seed", "val_top1", "command", "synthetic_run"} of one finished run folder."""
    for name in ("config.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} does not exist: pass finished train.py run folders")
    config, metrics = read_json(run_dir / "config.json"), read_json(run_dir / "metrics.json")
    synthetic = [part for part in config.get("parts") or () if part.get("name") == "synthetic"]
    return {"run": run_dir.name, "fraction": float(synthetic[0]["fraction"]) if synthetic else 0.0,
            "synthetic_run": synthetic[0]["run_dir"] if synthetic else None, "seed": config.get("seed"),
            "val_top1": float(metrics["val_top1"]), "command": config.get("command", "")}


def table(rows: list[dict]) -> str:
    """Markdown: one line per fraction (mean ± sample std of val top-1 in %, the paired difference to the 0%
    arm over the seeds both ran with its standard error and its 95 % interval, the seeds, the runs)."""
    fractions = sorted({row["fraction"] for row in rows})
    by_seed = {fraction: {row["seed"]: 100.0 * row["val_top1"] for row in rows if row["fraction"] == fraction}
               for fraction in fractions}
    lines = ["| synthetic share of each batch | val top-1 % (mean ± std) | paired Δ to 0% (± SE, pairs) "
             "| 95 % interval of Δ | seeds | runs |",
             "| ---: | ---: | ---: | ---: | --- | --- |"]
    for fraction in fractions:
        group = sorted((row for row in rows if row["fraction"] == fraction), key=lambda row: row["seed"])
        values = [100.0 * row["val_top1"] for row in group]
        spread = f"{statistics.stdev(values):.1f}" if len(values) > 1 else "n/a (1 seed)"
        bounds = None
        if fraction == 0.0:
            difference = "baseline"
        elif 0.0 not in by_seed:
            difference = "no 0% run"
        else:
            mean, error, pairs = paired(by_seed[0.0], by_seed[fraction])
            bounds = interval(mean, error, pairs)
            difference = f"{difference_text(mean, error)} ({pairs})" if pairs else "no shared seed"
        bounds = f"{bounds[0]:+.1f} to {bounds[1]:+.1f}" if bounds else "–"
        seeds = ", ".join(str(row["seed"]) for row in group)
        runs = " ".join(f"{row['run']} ({100 * row['val_top1']:.1f})" for row in group)
        lines.append(f"| {100 * fraction:.0f}% | {statistics.mean(values):.1f} ± {spread} | {difference} | {bounds} "
                     f"| {seeds} | {runs} |")
    return "\n".join(lines)


GAN_COLUMNS = ("d_loss", "g_loss", "d_real", "d_fake", "fid", "kid", "gan_test", "diversity", "sample_change",
               "epoch_seconds")


def gan_history_table(run_dir: pathlib.Path) -> str:
    """Markdown: every epoch of a GAN run's history.csv that was scored (has a fid), else every epoch."""
    from common.run_folder import read_history

    rows = read_history(run_dir / "history.csv")
    if not rows:
        raise FileNotFoundError(f"{run_dir / 'history.csv'} holds no epochs")
    scored = [row for row in rows if not math.isnan(row.get("fid", math.nan))] or rows
    lines = ["| epoch | " + " | ".join(GAN_COLUMNS) + " |", "| ---: |" + " ---: |" * len(GAN_COLUMNS)]
    for row in scored:
        cells = [f"{row[name]:.4g}" if not math.isnan(row.get(name, math.nan)) else "" for name in GAN_COLUMNS]
        lines.append(f"| {row['epoch'] + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN_DIR", help="finished train.py run folders")
    parser.add_argument("--gan-run", metavar="RUN_DIR", help="instead: the scored epochs of this gan.py run")
    parser.add_argument("--out", metavar="MARKDOWN", help="write the table and the runs' commands here")
    args = parser.parse_args(argv)
    if args.gan_run:
        run_dir = pathlib.Path(args.gan_run)
        text = gan_history_table(run_dir)
        print(text)
        if args.out:
            command = read_json(run_dir / "config.json").get("command", "")
            rebuild = f"python -m analysis.gan_ablation --gan-run {args.gan_run} --out {args.out}"
            write_text(pathlib.Path(args.out), f"{text}\n\nRun: `{command}`\n\nRebuild: `{rebuild}`\n")
        return 0
    if not args.runs:
        raise ValueError("pass finished train.py run folders, or --gan-run RUN_DIR")
    rows = [run_row(pathlib.Path(run)) for run in args.runs]
    text = table(rows)
    print(text)
    if args.out:
        commands = "\n".join(f"- `{row['command']}`" for row in sorted(rows, key=lambda r: (r["fraction"], r["seed"])))
        rebuild = "python -m analysis.gan_ablation " + " ".join(args.runs) + f" --out {args.out}"
        write_text(pathlib.Path(args.out), f"{text}\n\nRebuild: `{rebuild}`\n\nRuns:\n\n{commands}\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
