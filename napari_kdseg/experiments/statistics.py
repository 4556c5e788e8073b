"""How sure a comparison is: distilled against baseline students, paired over seeds and cases.

A student trained with distillation and the same student trained alone are compared on the
same unseen cases, run by run with the same seeds, so each (seed, case) gives one paired
difference ``d[s, c] = Dice_with[s, c] - Dice_without[s, c]``. The reported gain is the mean
of ``d``; its 95% interval is a two-way percentile bootstrap: each replicate draws seeds and
cases with replacement, independently, and averages ``d`` over the drawn grid, so both the
training noise (seeds) and the choice of scans (cases) widen it. With one seed only the cases
vary, and the interval says nothing about training noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Bootstrap replicates; enough for the 2.5th and 97.5th percentiles to settle to ~0.002.
REPLICATES = 10_000


@dataclass(frozen=True)
class PairedGain:
    """Mean paired difference and its 95% bootstrap interval over ``seeds`` x ``cases``."""

    mean: float
    low: float
    high: float
    seeds: int
    cases: int

    def sentence(self, metric: str = "Dice") -> str:
        """The gain and its interval, in words."""
        over = f"{self.seeds} seed{'s' if self.seeds != 1 else ''} x {self.cases} cases"
        verdict = (
            "better"
            if self.low > 0
            else "worse"
            if self.high < 0
            else "not distinguishable from no change"
        )
        return (
            f"{self.mean:+.3f} {metric} (95% bootstrap interval {self.low:+.3f} to "
            f"{self.high:+.3f} over {over}): {verdict}"
        )


def paired_gain(
    with_scores: npt.ArrayLike, without_scores: npt.ArrayLike, seed: int = 0
) -> PairedGain:
    """The paired gain of ``with_scores`` over ``without_scores``, both ``(seeds, cases)``
    with row ``s`` from the same training seed and column ``c`` the same scan in both.

    Undefined scores (NaN) are refused: a paired comparison needs every pair.
    """
    treated = np.asarray(with_scores, dtype=np.float64)
    baseline = np.asarray(without_scores, dtype=np.float64)
    if treated.shape != baseline.shape or treated.ndim != 2 or 0 in treated.shape:
        raise ValueError(
            f"paired scores need the same (seeds, cases) shape, got {treated.shape} and "
            f"{baseline.shape}"
        )
    differences = treated - baseline
    if not np.isfinite(differences).all():
        raise ValueError("paired scores hold undefined values; every pair needs both scores")
    low, high = _bootstrap_interval(differences, np.random.default_rng(seed))
    seeds, cases = differences.shape
    return PairedGain(float(differences.mean()), low, high, seeds, cases)


def _bootstrap_interval(
    differences: npt.NDArray[np.float64], rng: np.random.Generator
) -> tuple[float, float]:
    seeds, cases = differences.shape
    rows = rng.integers(0, seeds, size=(REPLICATES, seeds))
    columns = rng.integers(0, cases, size=(REPLICATES, cases))
    # Mean over the drawn grid = mean over drawn rows of (mean over drawn columns of that row):
    # per replicate, the column means of every row first, then the drawn rows' average.
    per_row = np.take_along_axis(
        differences[None, :, :], columns[:, None, :].repeat(seeds, axis=1), axis=2
    ).mean(axis=2)  # (replicates, seeds)
    replicate_means = np.take_along_axis(per_row, rows, axis=1).mean(axis=1)
    low, high = np.percentile(replicate_means, [2.5, 97.5])
    return float(low), float(high)


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of per-seed results."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0
