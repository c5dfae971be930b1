"""Seed statistics shared by every results table: the paired difference of two arms over the seeds both ran."""
from __future__ import annotations

import numpy as np


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
