"""The IMT report's Table 2 layout and Xie & Yuille's batch-norm finding at the scale of a small CPU.

    python -m experiments.robust_methods imt --data ../shared/data/tiny-imagenet-200
    python -m experiments.robust_methods xie --data ../shared/data/tiny-imagenet-200 --seeds 0 1 2

Each configuration is trained once per seed with train.py into runs/robust_methods/<table>/<config>-s<seed>,
then evaluated with evaluate.py (clean, FGSM at 50/45/40/33 dB SNR, truncated-Gaussian noise at the
same SNRs, PGD-10 at 2/255 on a fixed subset of val images). A finished run or evaluation is reused, an
interrupted run resumes, so the command can be rerun until the grid is complete. The table (mean ± sample
std over the seeds that finished, their count beside it) and every command go to results/<table>/table.md,
the per-run numbers to results/<table>/runs.json. Seeds run in the outer loop, so a partial grid still
has one run of every configuration.
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import subprocess
import sys

import numpy as np

from common import cli
from common.cli import run_cli
from common.run_folder import read_json, write_json, write_text
from experiments.preflight import check_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
SNRS = ("50", "45", "40", "33")
# The scale: 10 classes, 100 training images per class at 32x32, 3 epochs, flip-and-shift augmentation ("da").
CLASSES = "10"
SCALE = ["resnet18_maxpool", "--classes", CLASSES, "--per-class", "100", "--image-size", "32", "--epochs", "3",
         "--augment", "flip_shift", "--quiet"]
NOISE = ["--noise-snr", "33"]  # the IMT report's Adv: truncated Gaussian noise of the 33 dB magnitude
FGSM = ["--adv", "fgsm:1", "--eps", "2/255"]
PARSEVAL = ["--parseval", "0.01"]
SMOOTH = ["--smoothness", "0.01", "--smoothness-power", "2"]
SMOOTH_WITH_PARSEVAL = ["--smoothness", "0.001", "--smoothness-power", "1"]  # Table 2's last row: γ 0.001, m 1
PGD_100 = ["--adv", "pgd:1", "--adv-fraction", "1.0", "--eps", "2/255", "--pgd-steps", "2"]

# (config, label, train flags, model files to evaluate: "" is the run's model.keras). A config named
# "table/config" is another table's run, read from there and never trained by this table's command.
TABLES = {
    "imt": [
        ("da", "da", [], [""]),
        ("noise-da", "Adv (noise 33 dB) + da", NOISE, [""]),
        ("fgsm-da", "Adv (FGSM 2/255) + da", FGSM, [""]),
        ("smooth-da", "Smooth + da (γ 0.01, m 2)", SMOOTH, [""]),
        ("noise-parseval-da", "Adv (noise) + Psv + da (β 0.01)", NOISE + PARSEVAL, [""]),
        ("noise-smooth-da", "Adv (noise) + Smooth + da (γ 0.01, m 2)", NOISE + SMOOTH, [""]),
        ("noise-parseval-smooth-da", "Adv (noise) + Psv + Smooth + da (β 0.01, γ 0.001, m 1)",
         NOISE + PARSEVAL + SMOOTH_WITH_PARSEVAL, [""]),
    ],
    "xie": [
        ("advprop", "AdvProp (PGD-2 at 1/255 through the auxiliary BN)", ["--advprop"], [""]),
        ("pgd100-clean-dual", "100% PGD-2 + 100% clean, dual BN", PGD_100 + ["--keep-clean", "--dual-bn",
                                                                            "--save-bn", "adv"],
         ["", "model-adv-bn.keras"]),
        ("pgd100-clean-shared", "100% PGD-2 + 100% clean, shared BN", PGD_100 + ["--keep-clean"], [""]),
        ("pgd100-shared", "100% PGD-2 AT, shared BN", PGD_100, [""]),
        ("imt/da", "vanilla (clean + da; the IMT table's da runs)", [], [""]),
    ],
}


TITLES = {"imt": "The IMT report's Table 2 layout", "xie": "Xie & Yuille's batch-norm finding and AdvProp"}


def evaluate_flags(limit: int) -> list[str]:
    return ["--attack", "snr", "noise", "pgd", "--snr", *SNRS, "--eps", "2/255", "--pgd-steps", "10",
            "--limit", str(limit)]


def run(command: list[str], log: pathlib.Path) -> int:
    """Run a script of the project from the repository root, appending its output to ``log``."""
    print("$ " + shlex.join(command), flush=True)
    with open(log, "a") as handle:
        return subprocess.run([sys.executable, *command], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode


def train_and_evaluate(run_dir: pathlib.Path, train: list[str], files: list[str], limit: int, data: str) -> None:
    """Train (or resume) one run and evaluate each of its model files that has no robustness record yet."""
    log = run_dir.with_suffix(".log")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "metrics.json").exists():
        command = ["train.py", "--resume", str(run_dir)] if (run_dir / "config.json").exists() else train
        if run(command, log) != 0:
            raise RuntimeError(f"training failed; see {log}")
    for name in files:
        target = run_dir / name if name else run_dir
        record = run_dir / (f"{pathlib.Path(name).stem}-robustness.json" if name else "robustness.json")
        if record.exists():
            continue
        # A bare model file carries no data settings: name the run's.
        extra = ["--data", data, "--classes", CLASSES] if name else []
        # Exit status 1 is also a failed sanity check: then the record is written and the table says so.
        status = run(["evaluate.py", str(target), *extra, *evaluate_flags(limit)], log)
        if status not in (0, 1) or not record.exists():
            raise RuntimeError(f"evaluation failed; see {log}")


def columns(record: dict) -> dict[str, float]:
    """Accuracies (%) of one robustness record by column name."""
    values = {"clean": record["clean"]}
    for snr in SNRS:
        values[f"FGSM {snr} dB"] = record["snr"][snr]["snr"]
        values[f"noise {snr} dB"] = record["snr"][snr]["noise"]
    values["PGD-10 2/255"] = record["eps"]["2/255"]["pgd"]
    values["checks"] = all(check["passed"] for check in record["checks"])
    return values


SHOWN = ("val top-1", "clean", *(f"FGSM {snr} dB" for snr in SNRS), "noise 33 dB", "PGD-10 2/255")


def table(name: str, rows: list[dict], commands: list[str], limit: int) -> str:
    lines = [f"# {TITLES[name]}: resnet18_maxpool on Tiny ImageNet's first 10 classes", "",
             "Mean ± sample std over seeds (n = seeds trained; a cell averages the seeds evaluated), accuracy "
             "in %. val top-1: the saved model.keras on all 500 val images (metrics.json, no attack); the other "
             f"columns: evaluate.py on a fixed subset of {limit} val images. dB columns: FGSM at that "
             "signal-to-noise ratio (the IMT report's attack); "
             "noise: truncated-Gaussian noise at 33 dB; PGD-10 at L∞ 2/255 (step 2.5·eps/10, 1 restart).", "",
             "| configuration | evaluated | n | " + " | ".join(SHOWN) + " | checks |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in SHOWN) + " | --- |"]
    for row in rows:
        cells = []
        for column in SHOWN:
            values = np.array([run[column] for run in row["runs"] if column in run]) * 100
            spread = f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.1f}{spread}" if len(values) else "–")
        checked = [run["checks"] for run in row["runs"] if "checks" in run]
        status = ("not run yet" if not row["runs"] else "not evaluated yet" if not checked
                  else "all passed" if all(checked) else "some failed")
        lines.append(f"| {row['label']} | {row['evaluated']} | {len(row['runs'])} | " + " | ".join(cells)
                     + f" | {status} |")
    lines += ["", "Commands ({seed} is 0, 1, 2; run folders runs/robust_methods/...):", ""]
    lines += [f"- `{command}`" for command in commands]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="python -m experiments.robust_methods", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=sorted(TABLES), help="which table to run")
    parser.add_argument("--data", default="../shared/data/tiny-imagenet-200", help="Tiny ImageNet folder or zip")
    parser.add_argument("--seeds", type=cli.non_negative_int, nargs="+", default=[0, 1, 2],
                        help="seeds (default: 0 1 2)")
    parser.add_argument("--configs", nargs="+",
                        help="train only these configurations, in this order (the table shows all)")
    parser.add_argument("--limit", type=cli.positive_int, default=200, help="val images evaluated (default: 200)")
    parser.add_argument("--runs", default="runs/robust_methods", help="parent of the run folders")
    parser.add_argument("--table-only", action="store_true", help="write the table from finished runs; train nothing")
    args = parser.parse_args(argv)
    known = {config[0]: config for config in TABLES[args.table]}
    unknown = [key for key in args.configs or () if key not in known]
    if unknown:
        raise ValueError(f"unknown configurations {unknown}; known: {', '.join(known)}")
    order = [known[key] for key in args.configs] if args.configs else TABLES[args.table]  # trained in this order
    runs_root = ROOT / args.runs
    if not args.table_only:  # the runs read --data from the repository root, and so does the check
        check_experiment(dataset="tiny-imagenet", data=str(ROOT / args.data), classes=int(CLASSES), seeds=args.seeds)

    def folder(key: str, seed) -> str:
        return f"{key if '/' in key else args.table + '/' + key}-s{seed}"
    if not args.table_only:
        for seed in args.seeds:
            for key, _, flags, files in order:
                if "/" in key:
                    continue  # another table's run: that table's command trains it
                run_dir = runs_root / folder(key, seed)
                train = ["train.py", *SCALE, "--data", args.data, *flags, "--seed", str(seed),
                         "--run-dir", str(run_dir.relative_to(ROOT))]
                train_and_evaluate(run_dir, train, files, args.limit, args.data)
    rows, commands, records = [], [], {}
    for key, label, flags, files in TABLES[args.table]:
        commands.append(" ".join(["python", "train.py", *SCALE, "--data", args.data, *flags, "--seed", "{seed}",
                                    "--run-dir", f"{args.runs}/{folder(key, '{seed}')}"]))
        for name in files:
            target = f"{args.runs}/{folder(key, '{seed}')}" + (f"/{name}" if name else "")
            commands.append("then " + " ".join(["python", "evaluate.py", target,
                                                  *(["--data", args.data, "--classes", CLASSES] if name else []),
                                                  *evaluate_flags(args.limit)]))
            stem = f"{pathlib.Path(name).stem}-robustness.json" if name else "robustness.json"
            found = []
            for seed in args.seeds:
                record, metrics = runs_root / folder(key, seed) / stem, runs_root / folder(key, seed) / "metrics.json"
                if not metrics.exists():
                    continue
                found.append({} if name else {"val top-1": read_json(metrics)["val_top1"]})
                if record.exists():
                    found[-1].update(columns(read_json(record)))
                records[f"{folder(key, seed)}/{name or 'model.keras'}"] = found[-1]
            evaluated = "auxiliary BN" if "adv-bn" in name else ("main BN" if "--dual-bn" in flags
                                                                 or "--advprop" in flags else "model.keras")
            rows.append({"label": label, "evaluated": evaluated, "runs": found})
    out = ROOT / "results" / args.table
    write_text(out / "table.md", table(args.table, rows, commands, args.limit))
    write_json(out / "runs.json", records)
    print(f"wrote {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
