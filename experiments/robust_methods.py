"""The bench's configurations and tables: the IMT report's Table 2, Xie & Yuille's batch-norm finding, and
the adversarial-training comparison, on one protocol (run them with ``python -m experiments.bench``).

Every configuration is resnet18_maxpool trained with train.py on PROTOCOL plus its own flags, so the rows
of all three tables share one baseline run per seed ("da"). A record (per configuration and seed, see
experiments/bench.py) holds the numbers of each evaluation; ``render`` turns the records of one table into
mean ± sample std per cell and, per row, the paired difference to the table's baseline (same seed, same
val images) with its standard error: sd(differences) / sqrt(pairs).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from common.stats import difference_text, interval, paired

CLASSES = 10
# The protocol (docs/bench.md says how it was measured): Tiny ImageNet's first 10 classes, all 500 training
# images per class, all 500 val images, 32x32, flip-and-shift augmentation ("da"), Adam 1e-3 with
# ReduceLROnPlateau (x0.316 after 3 epochs without a better val accuracy) and early stopping after 6,
# at most 40 epochs: the same budget for every row.
EPOCHS, PATIENCE = 40, 6
PROTOCOL = ["resnet18_maxpool", "--classes", str(CLASSES), "--image-size", "32", "--augment", "flip_shift",
            "--epochs", str(EPOCHS), "--reduce-lr-patience", "3", "--early-stopping-patience", str(PATIENCE), "--quiet"]
NOISE = ["--noise-snr", "33"]  # the IMT report's "Adv": truncated Gaussian noise at the 33 dB magnitude
PARSEVAL = ["--parseval", "0.01"]
SMOOTH = ["--smoothness", "0.01", "--smoothness-power", "2"]
SMOOTH_WITH_PARSEVAL = ["--smoothness", "0.001", "--smoothness-power", "1"]  # Table 2's last row: γ 0.001, m 1
PGD_100 = ["--adv", "pgd:1", "--adv-fraction", "1.0", "--eps", "2/255", "--pgd-steps", "2"]
AT = ["--eps", "2/255", "--adv-fraction", "0.5"]

# name: (label, train flags, model files to evaluate: "" is the run's model.keras)
CONFIGS = {
    "da": ("da (flip and shift)", [], [""]),
    "vanilla": ("vanilla (no augmentation)", ["--augment", "none"], [""]),
    "noise-da": ("Adv (noise 33 dB) + da", NOISE, [""]),
    "smooth-da": ("Smooth + da (γ 0.01, m 2)", SMOOTH, [""]),
    "noise-parseval-da": ("Adv + Psv + da (β 0.01)", NOISE + PARSEVAL, [""]),
    "noise-smooth-da": ("Adv + Smooth + da (γ 0.01, m 2)", NOISE + SMOOTH, [""]),
    "noise-parseval-smooth-da": ("Adv + Psv + Smooth + da (β 0.01, γ 0.001, m 1)",
                                 NOISE + PARSEVAL + SMOOTH_WITH_PARSEVAL, [""]),
    "pgd100-shared": ("100% PGD-2 AT, shared BN", PGD_100, [""]),
    "pgd100-clean-shared": ("100% PGD-2 + 100% clean, shared BN", PGD_100 + ["--keep-clean"], [""]),
    "pgd100-clean-dual": ("100% PGD-2 + 100% clean, dual BN",
                          PGD_100 + ["--keep-clean", "--dual-bn", "--save-bn", "adv"], ["", "model-adv-bn.keras"]),
    "advprop": ("AdvProp (PGD-2 at 1/255 through the auxiliary BN)", ["--advprop"], [""]),
    "fgsm-at": ("FGSM-AT 2/255, 50% adversarial", ["--adv", "fgsm:1", *AT], [""]),
    "fast-at": ("fast AT 2/255, 50% adversarial", ["--adv", "fast:1", *AT], [""]),
    "pgd-at": ("PGD-3-AT 2/255, 50% adversarial", ["--adv", "pgd:1", "--pgd-steps", "3", *AT], [""]),
}

SNRS = ("50", "45", "40", "33")
EPS = ("2/255", "4/255")
# evaluate.py's flags per stage: "core" runs on every model file right after training; "autoattack" (standard
# budget: APGD-CE, APGD-T with 9 targets, Square with 5,000 queries) after it, one pass per model file and
# radius (each radius in EPS is added as --eps), as a pass costs far more on a CPU and passes can run side by side.
EVALUATIONS = {
    "core": ["--attack", "snr", "pgd", "--snr", *SNRS, "--eps", *EPS, "--pgd-steps", "10"],
    "autoattack": ["--attack", "autoattack", "--targets", "9", "--square-queries", "5000"],
}

IMT_COLUMNS = ("val top-1", *(f"FGSM {snr} dB" for snr in SNRS), *(f"PGD-10 {eps}" for eps in EPS),
               *(f"AA {eps}" for eps in EPS))
ATTACK_COLUMNS = ("val top-1", *(f"PGD-10 {eps}" for eps in EPS), *(f"AA {eps}" for eps in EPS))
TABLES = {
    "imt": {"title": "The IMT report's Table 2", "baseline": "da", "columns": IMT_COLUMNS,
            "rows": ["da", "vanilla", "noise-da", "smooth-da", "noise-parseval-da", "noise-smooth-da",
                     "noise-parseval-smooth-da"]},
    "xie": {"title": "Xie & Yuille: batch norm under adversarial training, and AdvProp", "baseline": "da",
            "columns": ATTACK_COLUMNS,
            "rows": ["da", "pgd100-shared", "pgd100-clean-shared", "pgd100-clean-dual", "advprop"]},
    "robustness": {"title": "Adversarial training methods", "baseline": "da", "columns": ATTACK_COLUMNS,
                   "rows": ["da", "fgsm-at", "fast-at", "pgd-at"]},
}


def columns(stage: str, record: dict) -> dict[str, float]:
    """Accuracies (fractions) by column name from one evaluate.py robustness record of ``stage``."""
    if stage == "autoattack":  # a pass may hold one radius of EPS
        return {f"AA {eps}": record["eps"][eps]["autoattack"] for eps in EPS if eps in record["eps"]}
    values = {"clean": record["clean"]}
    values.update({f"FGSM {snr} dB": record["snr"][snr]["snr"] for snr in SNRS})
    values.update({f"PGD-10 {eps}": record["eps"][eps]["pgd"] for eps in EPS})
    return values


def model_rows(name: str) -> list[tuple[str, str, str]]:
    """(config, model file, label) per row of table ``name``; a dual-BN run gives a row per BN."""
    return [(config, file, row_label(config, file)) for config in TABLES[name]["rows"] for file in CONFIGS[config][2]]


def row_label(config: str, file: str) -> str:
    """The label of one model file of ``config``; a dual-BN run names which BN its file uses."""
    label, _, files = CONFIGS[config]
    return label + (" — auxiliary BN" if "adv-bn" in file else " — main BN" if len(files) > 1 else "")


def _values(records: dict, config: str, file: str, column: str) -> dict[int, float]:
    """{seed: accuracy in %} of one cell, over the records that have it."""
    found = {}
    for record in records.values():
        if record["config"] != config:
            continue
        numbers = record.get("numbers", {}).get(file or "model.keras", {})
        if column in numbers:
            found[record["seed"]] = 100 * numbers[column]
    return found


def _cell(values) -> str:
    values = np.asarray(list(values), dtype=float)
    if not len(values):
        return "–"
    return f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else "")


def render(name: str, records: dict, rebuild: str) -> str:
    """Markdown of table ``name`` from ``records`` (experiments/bench.py's runs.json)."""
    table, rows = TABLES[name], model_rows(name)
    shown = table["columns"]
    lines = [f"# {table['title']} — the bench", "",
             "resnet18_maxpool on Tiny ImageNet's first 10 classes (500 training images per class, 32×32), "
             "every number on all 500 val images; accuracy in %, mean ± sample std over seeds (n: seeds with "
             "a record). FGSM at an SNR: the IMT report's attack; PGD-10: L∞, 1 restart; AA: AutoAttack at "
             "the standard budget (APGD-CE, APGD-T 9 targets, Square 5,000 queries). Protocol and cost: "
             "[docs/bench.md](../../docs/bench.md).", "",
             "| configuration | n | " + " | ".join(shown) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in shown) + " |"]
    for config, file, label in rows:
        seeds = {record["seed"] for record in records.values() if record["config"] == config}
        lines.append(f"| {label} | {len(seeds)} | "
                     + " | ".join(_cell(_values(records, config, file, column).values()) for column in shown) + " |")
    baseline = table["baseline"]
    lines += ["", f"Paired difference to **{CONFIGS[baseline][0]}** (same seed, same val images), in points: "
              "mean ± standard error over the seeds both rows have (pairs in brackets; one pair has no error).", "",
              "| configuration | " + " | ".join(shown) + " |", "| --- | " + " | ".join("---:" for _ in shown) + " |"]
    for config, file, label in rows:
        if config == baseline and not file:
            continue
        cells = []
        for column in shown:
            mean, error, pairs = paired(_values(records, baseline, "", column), _values(records, config, file, column))
            cells.append(f"{difference_text(mean, error)} ({pairs})" if pairs else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    used = [record for record in records.values() if record["config"] in table["rows"]]
    stages = [record.get("cpu_seconds", {}).get(stage, 0.0) for record in used
              for stage in ("train", "core", "autoattack")]
    unknown = sum(value is None for value in stages)
    # A stage under way has the CPU of its finished evaluations in "partial".
    hours = (sum(value or 0.0 for value in stages)
             + sum(part["cpu_seconds"] for record in used for part in record.get("partial", {}).values())) / 3600
    estimated = sum("cpu_estimated" in record for record in used)
    # Records replaced by a retraining (their run folder was lost) cost CPU too: counted, and said apart.
    superseded = [old for record in used for old in record.get("superseded", [])]
    superseded_hours = sum(value or 0.0 for old in superseded for value in old.get("cpu_seconds", {}).values()) / 3600
    # So do trainings that reproduced a recorded model (same weights) to finish its stages.
    retrained = [again for record in used for again in record.get("retrained", [])]
    retrained_hours = sum(again["cpu_seconds"] for again in retrained) / 3600
    caveats = ([f"{unknown} stage(s) of runs trained outside the bench (adopted) not counted"] if unknown else []) \
        + ([f"{estimated} resumed training(s) count epochs of earlier processes by wall time"] if estimated else []) \
        + ([f"plus {superseded_hours:.1f} CPU hours of {len(superseded)} earlier record(s) replaced when their run "
            "folders were lost and the runs were trained again"] if superseded else []) \
        + ([f"plus {retrained_hours:.1f} CPU hours of {len(retrained)} training(s) that reproduced a recorded "
            "model (same weights) whose run folder was lost"] if retrained else [])
    lines += ["", convergence(used), "",
              f"CPU time of the runs above (training and evaluation, all processes): {hours:.1f} CPU hours over "
              f"{len(used)} runs" + "".join(f", {caveat}" for caveat in caveats)
              + " (per-run figures in [runs.json](runs.json)).", "",
              f"Rebuild from the records: `{rebuild}`; the commands of each run are in runs.json."]
    return "\n".join(lines) + "\n"


def convergence(records: list[dict]) -> str:
    """One line: did every training stop on its own (val accuracy flat for PATIENCE epochs), or which runs
    reached the EPOCHS budget with their best epoch among the last PATIENCE (still improving, so below where
    they would converge)?"""
    trained = [record for record in records if "training" in record]
    capped = [record for record in trained if record["training"]["epochs"] >= EPOCHS
              and record["training"]["best_epoch"] > EPOCHS - PATIENCE]
    if not capped:
        return (f"Convergence: all {len(trained)} trainings with a record stopped early (val top-1 flat for "
                f"{PATIENCE} epochs) within the {EPOCHS}-epoch budget.")
    named = ", ".join(f"{record['config']}-s{record['seed']} (best epoch {record['training']['best_epoch']})"
                      for record in sorted(capped, key=lambda record: (record["config"], record["seed"])))
    return (f"Convergence: {len(trained) - len(capped)} of {len(trained)} trainings stopped early (val top-1 flat "
            f"for {PATIENCE} epochs); {named} reached the {EPOCHS}-epoch budget still improving, so may sit "
            "slightly below where it would converge.")


class Claim(NamedTuple):
    """One claim of a report, judged by the paired effect ``config`` − ``comparison`` in ``column``."""
    text: str  # the claim, with the report's own numbers in brackets
    source: str
    table: str
    config: str
    comparison: str
    column: str
    sign: int  # the effect the claim expects: +1, -1, or 0 for "no difference"
    file: str = ""  # the model file of ``config`` ("" is model.keras; a dual-BN run's other BN is another file)


CLAIMS = [
    Claim("Data augmentation raises clean accuracy (49.1 → 62.4 %)", "IMT Table 2", "imt", "da", "vanilla",
          "val top-1", +1),
    Claim("Adversarial (noise) training raises accuracy under FGSM at 50 dB (11.9 → 41.7 %)", "IMT Table 2",
          "imt", "noise-da", "da", "FGSM 50 dB", +1),
    Claim("Adversarial (noise) training raises accuracy at 33 dB (1.9 → 3.1 %)", "IMT Table 2", "imt",
          "noise-da", "da", "FGSM 33 dB", +1),
    Claim("Smoothness keeps the clean accuracy of da (62.4 → 63.8 %)", "IMT Table 2", "imt", "smooth-da", "da",
          "val top-1", 0),
    Claim("Smoothness does not help robustness with data augmentation (33 dB: 1.9 → 1.4 %)", "IMT Table 2",
          "imt", "smooth-da", "da", "FGSM 33 dB", 0),
    Claim("Parseval costs clean accuracy (Adv + da 61.0 → Adv + Psv + da 56.9 %)", "IMT Table 2", "imt",
          "noise-parseval-da", "noise-da", "val top-1", -1),
    Claim("Parseval raises accuracy at 33 dB (3.1 → 12.4 %)", "IMT Table 2", "imt", "noise-parseval-da",
          "noise-da", "FGSM 33 dB", +1),
    Claim("Smoothness adds nothing to noise training at 33 dB (Adv + da 3.1 → Adv + Smooth + da 3.2 %)",
          "IMT Table 2", "imt", "noise-smooth-da", "noise-da", "FGSM 33 dB", 0),
    Claim("Smoothness on top of noise and Parseval raises accuracy at 33 dB (12.4 → 13.2 %)", "IMT Table 2",
          "imt", "noise-parseval-smooth-da", "noise-parseval-da", "FGSM 33 dB", +1),
    Claim("100 % adversarial training (no clean images) costs clean accuracy (ResNet-152: 77 → 62.1 %)",
          "Xie & Yuille", "xie", "pgd100-shared", "da", "val top-1", -1),
    Claim("Training on adversarial images alone, without clean ones, raises robustness (PGD-2000: +18.3 points)",
          "Xie & Yuille", "xie", "pgd100-shared", "pgd100-clean-shared", "PGD-10 2/255", +1),
    Claim("With clean images in training, a separate BN for the adversarial ones raises robustness",
          "Xie & Yuille", "xie", "pgd100-clean-dual", "pgd100-clean-shared", "PGD-10 2/255", +1,
          "model-adv-bn.keras"),
    Claim("Dual BN recovers clean accuracy that training on clean + adversarial images with one BN loses",
          "Xie & Yuille", "xie", "pgd100-clean-dual", "pgd100-clean-shared", "val top-1", +1),
    Claim("AdvProp raises clean accuracy", "Xie & Yuille (AdvProp)", "xie", "advprop", "da", "val top-1", +1),
    Claim("PGD-AT is more robust under AutoAttack than FGSM-AT", "robustness comparison", "robustness",
          "pgd-at", "fgsm-at", "AA 2/255", +1),
    Claim("Fast AT raises AutoAttack accuracy over standard training", "robustness comparison", "robustness",
          "fast-at", "da", "AA 2/255", +1),
]
SEEDS_NEEDED = 3
# A no-difference claim ("keeps the clean accuracy") holds when the whole 95 % interval of the effect lies
# within this many points of 0. Table 2 reads +1.4 points (smoothness, clean) as no change and calls −4.1
# (Parseval, clean) a cost; 2 points sits between them.
EQUIVALENCE_MARGIN = 2.0


def verdict(mean: float, error: float | None, pairs: int, sign: int) -> str:
    """From 3 paired seeds on: a directional claim (sign ±1) is confirmed or refuted when the 95 % interval
    of the effect excludes 0; a no-difference claim (sign 0) is confirmed when the interval lies within
    ±EQUIVALENCE_MARGIN points and refuted when it excludes 0. Anything else is not resolved."""
    if pairs < SEEDS_NEEDED:
        return f"not resolved yet ({pairs} seed{'s' if pairs != 1 else ''})"
    low, high = interval(mean, error, pairs)
    separated = low > 0 or high < 0
    if sign == 0:
        if -EQUIVALENCE_MARGIN <= low and high <= EQUIVALENCE_MARGIN:
            return f"confirmed (95 % interval within ±{EQUIVALENCE_MARGIN:g} points)"
        return "refuted" if separated else "not resolved at this scale (95 % interval too wide)"
    if not separated:
        return "not resolved at this scale (95 % interval includes 0)"
    return "confirmed" if mean * sign > 0 else "refuted"


def render_claims(records: dict) -> str:
    lines = ["# The reports' claims, judged on the bench", "",
             "Each line: the claim (the report's own numbers in brackets), the paired effect on the bench (row − "
             "comparison, same seed, same 500 val images; points, mean ± standard error, pairs), its "
             "95 % interval (mean ± t·SE, Student's t at pairs − 1 degrees of freedom: 4.30 for 3 pairs), the "
             f"verdict and the table. A claim is judged once {SEEDS_NEEDED} seeds are paired: a claim of an effect is "
             "confirmed or refuted when the interval excludes 0; a claim of no difference is confirmed when the "
             f"interval lies within ±{EQUIVALENCE_MARGIN:g} points and refuted when it excludes 0. Rebuild: "
             "`python -m experiments.bench imt xie robustness --table-only`.", ""]
    for claim in CLAIMS:
        column = claim.column
        mean, error, pairs = paired(_values(records, claim.comparison, "", column),
                                    _values(records, claim.config, claim.file, column))
        bounds = interval(mean, error, pairs)
        effect = "no pairs yet" if not pairs else difference_text(mean, error) \
            + f" points ({pairs} pair{'s' if pairs != 1 else ''}" \
            + (f"; 95 % interval {bounds[0]:+.1f} to {bounds[1]:+.1f})" if bounds else ")")
        lines.append(f"- **{verdict(mean, error, pairs, claim.sign)}** — {claim.text} ({claim.source}): "
                     f"{row_label(claim.config, claim.file)} vs {CONFIGS[claim.comparison][0]}, {column}: {effect}. "
                     f"Table: [{claim.table}](bench/{claim.table}.md).")
    return "\n".join(lines) + "\n"
