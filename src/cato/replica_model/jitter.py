"""Per-step jitter of the replica model: mean-1 lognormal factors drawn from an injected
``numpy.random.Generator`` (never global randomness).

Jitter (``jitter_sigma > 0``)
-----------------------------
Step-by-step mode multiplies each step by ``exp(sigma*Z - sigma^2/2)`` (mean 1). In fast-forward
mode each segment of ``m`` steps (m = its length at planning time, before any truncation by a
later input) gets ONE factor ``exp(s*Z - s^2/2)`` with ``s^2 = log(1 + (exp(sigma^2) - 1)/m)``,
which matches the mean and variance of the sum of m equal, independently jittered steps (the
approximation: the steps of a segment share the factor, and a segment truncated by an input keeps
the factor drawn for its planned length). Single steps (prefill/preemption steps) get a full-sigma
factor. The Z values are drawn from ``rng`` in batches and indexed by the engine's unit counter, so
a run is reproducible for a given seed and call sequence, and look-ahead (``next_event_s``) and
execution always see the same factors.
"""

from __future__ import annotations

import math

import numpy as np


class _Normals:
    """Standard normals drawn from ``rng`` in fixed batches, addressed by a unit index, so that
    look-ahead on a copy of the engine and the real execution share the same draws."""

    __slots__ = ("rng", "buf", "base")
    _BATCH = 128

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.buf: list[float] = []
        self.base = 0

    def get(self, i: int) -> float:
        while i - self.base >= len(self.buf):
            self.buf.extend(self.rng.standard_normal(self._BATCH).tolist())
        return self.buf[i - self.base]

    def trim(self, i: int) -> None:
        """Forget the draws below index ``i`` (no longer reachable)."""
        k = i - self.base
        if k > 4 * self._BATCH:
            del self.buf[:k]
            self.base = i


def _jitter_factor(normals: _Normals | None, sigma: float, u: int, m: int) -> float:
    """The jitter factor of unit ``u`` planned as ``m`` steps (1.0 without jitter)."""
    if normals is None:
        return 1.0
    s2 = sigma * sigma if m <= 1 else math.log1p(math.expm1(sigma**2) / m)
    s = math.sqrt(s2)
    return math.exp(s * normals.get(u) - s2 / 2.0)
