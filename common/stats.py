"""Seed statistics shared by every results table: the paired difference of two arms over the seeds both ran."""
from __future__ import annotations

import numpy as np
from scipy import stats


def paired(baseline: dict[int, float], other: dict[int, float]) -> tuple[float, float | None, int]:
    """(mean difference other − baseline over the seeds both have, its standard error or None, pairs).

    Pairing by seed removes what the two arms share (the split's draw, the initialisation), so the standard
    error is that of the effect, not of either arm's seed-to-seed spread."""
    seeds = sorted(set(baseline) & set(other))
    differences = np.array([other[seed] - baseline[seed] for seed in seeds])
    if not len(differences):
        return float("nan"), None, 0
    error = differences.std(ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else None
    return float(differences.mean()), error, len(differences)


def difference_text(mean: float, error: float | None) -> str:
    """A paired difference as the tables print it: "+1.9 ± 0.1" (no "±" where one pair leaves no error)."""
    return f"{mean:+.1f}" + (f" ± {error:.1f}" if error is not None else "")


def interval(mean: float, error: float | None, pairs: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The two-sided `confidence` interval of a paired mean difference: mean ± t·SE with Student's t at
    pairs − 1 degrees of freedom (None below 2 pairs). With 3 seeds t is 4.30, not the normal 1.96: two
    degrees of freedom leave the spread itself uncertain, and a "2 SE" rule would call nearly one null
    effect in five a finding."""
    if error is None or pairs < 2:
        return None
    half = float(stats.t.ppf(0.5 + confidence / 2, pairs - 1)) * error
    return mean - half, mean + half
