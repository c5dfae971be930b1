"""One table comparing how several runs were trained and how robust they came out.

    python -m analysis.compare_robustness runs/v4-vanilla runs/v4-fgsm runs/v4-fast runs/v4-pgd \\
        --out results/robustness-digits.md

Each run must have been evaluated (`python evaluate.py RUN_DIR ...`); the table shows clean
accuracy, PGD and FGSM accuracy at every eps, APGD-CE and AutoAttack where they ran (with how many
points AutoAttack is below PGD) and the SNR columns, with each run's checks and the commands that
trained and evaluated it.
"""
from __future__ import annotations

import argparse
import fractions
import pathlib
import sys

from common.cli import run_cli
from common.checks import eps_label
from common.run_folder import read_json, write_text


def training_mode(config: dict) -> str:
    adversarial = config.get("adversarial")
    if not adversarial:
        return "vanilla"
    if adversarial.get("noise_snr_db") is not None and adversarial["attacks"] in ("noise:1", {"noise": 1}):
        return f"noise at {adversarial['noise_snr_db']:g} dB"
    share = int(100 * adversarial["fraction"])
    return f"{adversarial['attacks']} at {eps_label(adversarial['eps'])}, {share}% adversarial"


def render(run_dirs: list[pathlib.Path], title: str) -> str:
    rows = []
    for run_dir in run_dirs:
        config = read_json(run_dir / "config.json")
        result = read_json(run_dir / "robustness.json")
        rows.append((run_dir, config, result))
    # JSON sorts keys as text ("16/255" before "8/255"): order eps up and SNR down by value.
    eps_labels = sorted({label for _, _, result in rows for label in result["eps"]}, key=fractions.Fraction)
    snr_labels = sorted({label for _, _, result in rows for label in result["snr"]}, key=float, reverse=True)
    header = ["run", "training", "clean %"]
    header += [f"{name} {label} %" for label in eps_labels for name in ("FGSM", "PGD")]
    # AutoAttack columns only at the eps where some run has them.
    aa_labels = [label for label in eps_labels if any(label in result.get("autoattack", {}) for _, _, result in rows)]
    header += [f"{name} {label}{unit}" for label in aa_labels
               for name, unit in (("APGD-CE", " %"), ("AutoAttack", " %"), ("AA − PGD", " (points)"))]
    header += [f"{label} dB %" for label in snr_labels]
    header += ["checks"]
    lines = [f"# {title}", "", f"Rebuild: `python -m analysis.compare_robustness "
             f"{' '.join(str(path) for path in run_dirs)} --out ...`", "",
             "| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 3) + " --- |"]
    for run_dir, config, result in rows:
        cells = [run_dir.name, training_mode(config), f"{100 * result['clean']:.1f}"]
        for label in eps_labels:
            row = result["eps"].get(label, {})
            cells += [f"{100 * row[name]:.1f}" if name in row else "—" for name in ("fgsm", "pgd")]
        for label in aa_labels:
            row = result["eps"].get(label, {})
            cells += [f"{100 * row[name]:.1f}" if name in row else "—" for name in ("apgd-ce", "autoattack")]
            gap = 100 * (row["autoattack"] - row["pgd"]) if "autoattack" in row and "pgd" in row else None
            cells.append(f"{gap:+.1f}" if gap is not None else "—")
        cells += [f"{100 * result['snr'][label]['snr']:.1f}" if "snr" in result["snr"].get(label, {}) else "—"
                  for label in snr_labels]
        failed = [check["name"] for check in result["checks"] if not check["passed"]]
        cells.append("all passed" if not failed else "FAILED: " + "; ".join(failed))
        lines.append("| " + " | ".join(cells) + " |")
    n = {result["n"] for _, _, result in rows}
    steps = {(result["pgd_steps"], result["restarts"]) for _, _, result in rows}
    lines += ["", f"Evaluated on {', '.join(map(str, sorted(n)))} val images; PGD with "
              + ", ".join(f"{s} steps x {r} restart(s)" for s, r in sorted(steps))
              + "; dB columns are FGSM at that signal-to-noise ratio."]
    records = [record for _, _, result in rows for record in result.get("autoattack", {}).values()]
    versions = sorted({f"{record['version']} ({record['mode']}): " + "; ".join(record["attack_versions"].values())
                       + f"; budget {record.get('budget', 'standard')}" for record in records})
    if versions:
        lines += ["", "AutoAttack " + " | ".join(versions) + f". {records[0]['fab_t']}. AA − PGD is AutoAttack's "
                  "accuracy minus PGD's, in points: how much PGD alone overstates robustness."]
    lines += ["", "Commands:", ""]
    for _, config, result in rows:
        lines += [f"- `{config.get('command', '')}`", f"  then `{result.get('command', '')}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=pathlib.Path, metavar="RUN_DIR")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="Markdown file to write")
    parser.add_argument("--title", default="Robustness by training method")
    args = parser.parse_args(argv)
    table = render(args.run_dirs, args.title)
    write_text(args.out, table)
    print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
