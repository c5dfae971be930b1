"""Accuracy under attack, with the checks that say whether the numbers can be trusted.

An attack evaluation that is broken (gradient masking, a bug in the projection, a model in
training mode) usually shows itself through one of a few impossible patterns; every table
is printed with these checks, and a failed one marks the table untrustworthy:

- eps = 0 equals clean accuracy;
- accuracy does not rise with eps;
- PGD is never above FGSM at the same eps;
- more PGD steps or restarts never raise it;
- a very large eps drives accuracy to chance;
- with AutoAttack: APGD-CE is never above PGD, AutoAttack never above any of its parts or PGD/FGSM, its
  worst-case images lie inside the threat model and re-predict to its accuracy, and Square (black-box)
  does not break more images than the white-box attacks (else: possible gradient masking).
"""
from __future__ import annotations

import dataclasses
import fractions
import time

from analysis import autoattack as autoattack_module
from attacks.accuracy import accuracy  # noqa: F401  (re-exported: the tables' accuracy)
from attacks.registry import get_attack, make_attack
from common.checks import eps_label

COLUMN_ORDER = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square", "autoattack")
SNR_TITLES = {"snr": "FGSM at SNR", "noise": "Gaussian noise at SNR"}
SNR_ROWS = tuple(SNR_TITLES)
LARGE_EPS = 0.5  # half the pixel range: every image can be turned into almost anything


@dataclasses.dataclass
class Check:
    name: str
    passed: bool
    detail: str


def evaluate_attacks(model, images, labels, *, attack_names, eps_values, snr_values, pgd_steps=20, restarts=1,
                     batch_size=128, num_classes=None, log=None, autoattack_eps=None,
                     autoattack_options=None, autoattack_checkpoints=None) -> dict:
    """Run every requested attack; returns a RobustBench-style dict with its checks.

    ``log`` (``print``, say) gets one line per attack as it finishes: PGD on thousands of images
    takes minutes on a CPU. ``autoattack_options`` are keyword arguments of
    ``analysis.autoattack.autoattack`` (version, components, steps, targets, queries, standalone, seed);
    ``autoattack_eps`` limits AutoAttack to those radii (default: ``eps_values``), as it costs far more.
    ``autoattack_checkpoints`` (a path prefix, e.g. RUN/robustness) keeps each radius's AutoAttack
    progress beside it (``analysis.autoattack.checkpoint_path``), so a killed evaluation goes on from there.
    """
    tolerance = 1.0 / len(images)  # one example: random starts may flip a single borderline image

    def measure(name, attack=None):
        start = time.perf_counter()
        value = accuracy(model, images, labels, attack, batch_size)
        if log:
            log(f"{name}: {100 * value:.1f}% ({time.perf_counter() - start:.1f} s)")
        return value

    clean = measure("clean")
    result = {"clean": clean, "n": len(images), "pgd_steps": pgd_steps, "restarts": restarts,
              "norm": "Linf", "eps": {}, "snr": {}}
    for attack_name in attack_names:
        if attack_name == "autoattack":
            for eps in (eps_values if autoattack_eps is None else autoattack_eps):
                checkpoint = (autoattack_module.checkpoint_path(autoattack_checkpoints, eps)
                              if autoattack_checkpoints else None)
                record = autoattack_module.autoattack(model, images, labels, eps=eps, batch_size=batch_size, log=log,
                                                      checkpoint=checkpoint, **(autoattack_options or {}))
                row = result["eps"].setdefault(eps_label(eps), {})
                row["autoattack"] = record["autoattack_acc"]
                row.update({entry["attack"]: entry["accuracy"] for entry in record["ledger"] if "accuracy" in entry})
                result.setdefault("autoattack", {})[eps_label(eps)] = record
        elif get_attack(attack_name).sweep == "eps":  # an unknown name fails here, listing the known ones
            for eps in eps_values:
                attack = make_attack(attack_name, eps=eps, steps=pgd_steps, restarts=restarts)
                result["eps"].setdefault(eps_label(eps), {})[attack_name] = measure(
                    f"{attack_name} at {eps_label(eps)}", attack)
        else:
            for snr in snr_values:
                attack = make_attack(attack_name, snr_db=snr)
                result["snr"].setdefault(f"{snr:g}", {})[attack_name] = measure(f"{attack_name} at {snr:g} dB",
                                                                                attack)
    if log:
        log("sanity checks: eps 0, a stronger PGD, a very large eps")
    checks = sanity_checks(model, images, labels, result, eps_values, pgd_steps, restarts, tolerance,
                           batch_size, num_classes) + autoattack_checks(result, tolerance)
    result["checks"] = [dataclasses.asdict(check) for check in checks]
    result["trustworthy"] = all(check.passed for check in checks)
    return result


def sanity_checks(model, images, labels, result, eps_values, pgd_steps, restarts, tolerance, batch_size,
                  num_classes) -> list[Check]:
    checks = []
    clean = result["clean"]
    at_zero = accuracy(model, images, labels, "fgsm", batch_size, eps=0.0)
    checks.append(Check("eps=0 equals clean", abs(at_zero - clean) <= 1e-9, f"{at_zero:.4f} vs clean {clean:.4f}"))
    ordered = sorted(eps_values)
    for attack_name in ("fgsm", "pgd"):
        values = [result["eps"].get(eps_label(eps), {}).get(attack_name) for eps in ordered]
        if None in values:
            continue
        series = [clean, *values]
        rises = [f"{a:.4f}->{b:.4f}" for a, b in zip(series, series[1:]) if b > a + tolerance]
        checks.append(Check(f"{attack_name} does not rise with eps", not rises, ", ".join(rises) or "monotone"))
    pgd_above = [label for label, row in result["eps"].items()
                 if "pgd" in row and "fgsm" in row and row["pgd"] > row["fgsm"] + tolerance]
    if any("pgd" in row and "fgsm" in row for row in result["eps"].values()):
        checks.append(Check("PGD <= FGSM", not pgd_above, ", ".join(pgd_above) or "at every eps"))
    if ordered and any("pgd" in row for row in result["eps"].values()):
        eps = ordered[len(ordered) // 2]
        base = result["eps"][eps_label(eps)]["pgd"]
        stronger = accuracy(model, images, labels, "pgd", batch_size, seed=1, eps=eps, steps=2 * pgd_steps,
                            restarts=restarts + 1)
        checks.append(Check("more steps and restarts do not raise PGD", stronger <= base + tolerance,
                            f"eps {eps_label(eps)}: {2 * pgd_steps} steps x {restarts + 1} restarts "
                            f"{stronger:.4f} vs {base:.4f}"))
    if num_classes:
        chance = 1.0 / num_classes
        large = accuracy(model, images, labels, "pgd", batch_size, eps=LARGE_EPS, steps=pgd_steps)
        checks.append(Check("a very large eps drives accuracy to chance", large <= chance + 0.02,
                            f"PGD at eps {LARGE_EPS}: {large:.4f} (chance {chance:.4f})"))
    return checks


def autoattack_checks(result: dict, tolerance: float) -> list[Check]:
    """The checks on AutoAttack's numbers (none when it did not run). ``tolerance`` (one image) allows
    for PGD's random start finding a single borderline image that APGD's did not."""
    records = result.get("autoattack") or {}
    if not records:
        return []
    checks = []
    apgd_above = [label for label, row in result["eps"].items()
                  if "apgd-ce" in row and "pgd" in row and row["apgd-ce"] > row["pgd"] + tolerance]
    if any("apgd-ce" in row and "pgd" in row for row in result["eps"].values()):
        checks.append(Check("APGD <= PGD", not apgd_above, ", ".join(apgd_above) or "at every eps"))
    above, outside, masked = [], [], []
    for label, record in records.items():
        row = result["eps"].get(label, {})
        parts = {entry["attack"]: entry.get("accuracy", entry["accuracy_after"]) for entry in record["ledger"]}
        parts.update({name.upper(): row[name] for name in ("fgsm", "pgd") if name in row})
        above += [f"{label}: {name} {value:.4f}" for name, value in parts.items()
                  if record["autoattack_acc"] > value + (tolerance if name in ("FGSM", "PGD") else 1e-9)]
        if not record["within_threat_model"] or abs(record["verified_acc"] - record["autoattack_acc"]) > 1e-9:
            outside.append(f"{label}: max perturbation {record['max_perturbation']:.5f}, re-predicted "
                           f"{record['verified_acc']:.4f} vs {record['autoattack_acc']:.4f}")
        if record["possible_gradient_masking"]:
            masked.append(label)
    checks.append(Check("AutoAttack <= every component", not above, "; ".join(above) or "at every eps"))
    checks.append(Check("worst case inside the threat model and re-verified", not outside,
                        "; ".join(outside) or "at every eps"))
    checks.append(Check("Square does not break more than the white-box attacks", not masked,
                        (f"possible gradient masking at {', '.join(masked)}" if masked else "at every eps")))
    return checks


def _ledger_tables(records: dict) -> list[str]:
    lines = []
    for label, record in records.items():
        lines += ["", f"AutoAttack ({record['version']}, {record['mode']}) at eps {label} ({record['threat_model']}): "
                  f"{100 * record['autoattack_acc']:.1f}% robust of {record['n_images']} images "
                  f"in {record['seconds']:.0f} s; budget {record.get('budget', 'standard')}; {record['fab_t']}.", "",
                  "| attack | version | images attacked | broke first | accuracy % | robust after % | seconds |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for entry in record["ledger"]:
            alone = f"{100 * entry['accuracy']:.1f}" if "accuracy" in entry else "—"
            lines.append(f"| {entry['attack']} | {entry['version']} | {entry['attacked']} | {entry['first_broken']} | "
                         f"{alone} | {100 * entry['accuracy_after']:.1f} | {entry['seconds']:.1f} |")
    return lines


def markdown_table(result: dict, title: str = "") -> str:
    """The per-eps table (FGSM/PGD top-1) and the IMT SNR table, with the checks under them."""
    lines = [f"## {title}", ""] if title else []
    status = "trustworthy" if result["trustworthy"] else "**untrustworthy**"
    failed = [check["name"] for check in result["checks"] if not check["passed"]]
    masked = any(record["possible_gradient_masking"] for record in (result.get("autoattack") or {}).values())
    lines.append(f"{result['n']} images, clean top-1 {100 * result['clean']:.1f}%; checks: {status}"
                 + (f" (failed: {'; '.join(failed)})" if failed else "") + ("; **possible gradient masking**"
                                                                             if masked else ""))
    if result["eps"]:
        attacks_seen = sorted({name for row in result["eps"].values() for name in row},
                              key=lambda name: (COLUMN_ORDER.index(name) if name in COLUMN_ORDER else len(COLUMN_ORDER),
                                                name))
        lines += ["", "| eps (Linf) | " + " | ".join(f"{name.upper()} top-1 %" for name in attacks_seen) + " |",
                  "| --- |" + " ---: |" * len(attacks_seen)]
        for label, row in sorted(result["eps"].items(), key=lambda item: fractions.Fraction(item[0])):
            lines.append(f"| {label} | " + " | ".join(f"{100 * row[name]:.1f}" if name in row else "—"
                                                     for name in attacks_seen) + " |")
    lines += _ledger_tables(result.get("autoattack") or {})
    if result["snr"]:
        labels = sorted(result["snr"], key=float, reverse=True)
        lines += ["", "| perturbation | Clean | " + " | ".join(f"{label} dB" for label in labels) + " |",
                  "| --- | ---: |" + " ---: |" * len(labels)]
        names = sorted({name for row in result["snr"].values() for name in row},
                       key=lambda name: (SNR_ROWS.index(name) if name in SNR_ROWS else len(SNR_ROWS), name))
        for name in names:
            lines.append(f"| {SNR_TITLES.get(name, name + ' at SNR')} | {100 * result['clean']:.1f} | " + " | ".join(
                f"{100 * result['snr'][label][name]:.1f}" if name in result["snr"][label] else "—" for label in labels)
                + " |")
    lines += ["", "| check | passed | detail |", "| --- | --- | --- |"]
    lines += [f"| {check['name']} | {'yes' if check['passed'] else 'NO'} | {check['detail']} |"
              for check in result["checks"]]
    return "\n".join(lines) + "\n"
