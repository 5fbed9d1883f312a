"""Across seeds (BENCHMARK_PROTOCOL.md section 3): the spread of a metric over seeds, and
ratios between two systems as ratios of means with a paired bootstrap interval. Pure.

* **Ratios between systems** over seeds (:func:`ratio_of_means_ci`) are ratios of means
  ``mean(a) / mean(b)`` over the seeds both systems ran, with a paired percentile-bootstrap 95 %
  interval (seeds resampled with replacement, the same indices for ``a`` and ``b``; fixed RNG
  seed, so reports are reproducible) -- never means of per-seed ratios.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DEFAULT_AGGREGATE_KEYS", "RatioCI", "aggregate_seeds", "ratio_of_means_ci"]

DEFAULT_AGGREGATE_KEYS: tuple[str, ...] = (
    "attainment",
    "request_goodput",
    "utilization",
    "p95_ttft_ms",
    "p95_e2e_ms",
)


def aggregate_seeds(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = DEFAULT_AGGREGATE_KEYS,
) -> dict[str, dict[str, float]]:
    """Spread of ``keys`` over ``rows`` (one per seed): ``{key: {"mean", "std", "min", "max",
    "n"}}``.

    ``None`` (and missing) values are skipped; a key with no value left is omitted. ``std`` is the
    sample standard deviation (``ddof=1``), ``0.0`` for a single value; ``n`` is the number of
    values used.
    """
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        vals = [float(v) for row in rows if (v := row.get(key)) is not None]
        if not vals:
            continue
        arr = np.asarray(vals, dtype=np.float64)
        std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
        out[key] = {
            "mean": float(np.mean(arr)),
            "std": std,
            "min": float(np.min(arr)),
            "max": float(np.max(arr)),
            "n": float(arr.size),
        }
    return out


@dataclass(frozen=True, slots=True)
class RatioCI:
    """``ratio = mean(a) / mean(b)`` with a bootstrap interval ``[lo, hi]`` over ``n`` pairs."""

    ratio: float
    lo: float
    hi: float
    n: int
    confidence: float = 0.95
    resamples: int = 1000

    def to_json(self) -> dict[str, float]:
        return {"ratio": self.ratio, "lo": self.lo, "hi": self.hi, "n": float(self.n),
                "confidence": self.confidence}


def ratio_of_means_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> RatioCI:
    """Ratio of means ``mean(a) / mean(b)`` of paired samples (``a[i]`` and ``b[i]`` from the
    same seed) with a percentile-bootstrap interval: ``resamples`` times, draw ``n`` pair indices
    with replacement (``numpy.random.default_rng(seed)``: reproducible), take the ratio of the
    resampled means; the interval is the ``(1 - confidence)/2`` and ``(1 + confidence)/2``
    quantiles (empirical, no interpolation) of those ratios. Constant data give an exact,
    zero-width interval.

    Raises ValueError for unequal lengths, no pair, a non-finite value, ``mean(b) == 0`` (the
    ratio is undefined), ``resamples < 1`` or ``confidence`` outside (0, 1). A resample whose
    ``b`` mean is 0 counts as an infinite ratio (NaN for ``0/0`` is dropped), so a baseline that
    sometimes scores 0 widens the interval instead of failing.
    """
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.ndim != 1 or xa.shape != xb.shape:
        raise ValueError(f"a and b must be paired 1-D samples of equal length, got {xa.shape} "
                         f"and {xb.shape}")
    n = int(xa.size)
    if n == 0:
        raise ValueError("ratio of means of no pairs: need at least one (a, b) pair")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(xb))):
        raise ValueError("ratio of means: every value must be finite")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mb = float(np.mean(xb))
    if mb == 0.0:
        raise ValueError("ratio of means undefined: the mean of b (the denominator) is 0")
    point = float(np.mean(xa)) / mb
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    num = xa[idx].mean(axis=1)
    den = xb[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num / den
    ratios = ratios[~np.isnan(ratios)]
    if ratios.size == 0:   # every resample was 0/0 (a tiny number of resamples)
        return RatioCI(point, point, point, n, confidence, resamples)
    tail = (1.0 - confidence) / 2.0
    lo, hi = (float(v) for v in np.quantile(ratios, [tail, 1.0 - tail], method="inverted_cdf"))
    if np.all(xa == xa[0]) and np.all(xb == xb[0]):
        lo = hi = point   # exact for constant data (no rounding of resampled means)
    return RatioCI(point, lo, hi, n, confidence, resamples)
