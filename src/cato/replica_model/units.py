"""The two units the replica model executes: one step whose composition was planned at its start
(:class:`_StepPlan`), or a fast-forward *segment* of identical pure-decode steps whose end times
have a closed form (:class:`_Segment`).

Fast-forward (``fast_forward=True``, the default)
-------------------------------------------------
Decoding requests are stored lazily against the global step counter S: a decoding request keeps
``base = ctx - S`` (constant while it decodes), its finish step ``P + O - base`` sits in a heap,
and the engine keeps ``n_dec``, ``sum(base)`` and a histogram of ``base mod block``. A pure-decode
step (no preemption, no prefill chunk) therefore costs O(1) to describe, and while nothing can
change the composition — no request prefilling or admissible, no input pending — the next m steps
are all pure decode with ``K_j = K_0 + n*j``. Their end times have the closed form
``t0 + (j*F + e*(j*K_0 + n*j*(j-1)/2)) / 1000`` with ``F = max(T_floor, a + b*n) + c_step +
c_req*n``. Such a *segment* ends at the earliest of: the first completion (heap top), the first
step whose new KV blocks no longer fit (found in O(block) from the residue histogram; that step is
then run exactly, with its preemption), and the first step that starts at or after a pending
input's time (found by solving the quadratic, then corrected with the exact same time
expression). ``advance`` may stop inside a segment (steps ending <= until_s are done) and resumes
it later with the same closed form, so times never drift. Without jitter, fast-forward and the
step-by-step mode (``fast_forward=False``) produce identical event sequences; times agree to
floating-point rounding (~1e-12 s; the tests require < 1e-9 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cato.replica_model.request import _Req


@dataclass(slots=True)
class _StepPlan:
    """Composition of one step, decided at its start ``t_start`` (pure function of the state)."""

    t_start: float
    t_end: float
    victims: list[_Req]  # in preemption order (FCFS: newest first)
    admits: list[_Req]  # a prefix of the waiting queue (in its order)
    chunks: list[tuple[_Req, int]]  # (request, chunk tokens) in scheduling order
    n_dec: int  # decodes after preemption
    need: int  # new KV blocks for the decodes
    num_tokens: int
    num_seqs: int
    num_running: int
    cached: dict[int, int] | None = None  # id(admitted request) -> prompt tokens from the cache


@dataclass(frozen=True, slots=True)
class _Segment:
    """``m`` pure-decode steps starting at (t0, S0): step j (0-based) lasts
    ``f * (F + e*(K0 + n*j))`` ms. ``mc`` is the offset of the first completion."""

    t0: float
    s0: int
    k0: int
    n: int
    fixed_ms: float
    e: float
    f: float
    m: int
    mc: int

    def time(self, j: int) -> float:
        """End of the segment's j-th step (= start of step j), seconds. The one expression used
        for every boundary of the segment."""
        return self.t0 + self.f * (j * self.fixed_ms + self.e * (j * self.k0 + self.n * (j * (j - 1) // 2))) / 1000.0

    def with_m(self, m: int) -> _Segment:
        """The same segment cut to ``m`` steps (same factor, same time expression)."""
        return _Segment(self.t0, self.s0, self.k0, self.n, self.fixed_ms, self.e, self.f, m, self.mc)

    def approx_index(self, v: float) -> float:
        """Real j with ``time(j) ~= v`` (solution of the quadratic), for a first guess."""
        y = (v - self.t0) * 1000.0 / self.f
        qa = self.e * self.n / 2.0
        qb = self.fixed_ms + self.e * self.k0 - qa
        if y <= 0.0:
            return 0.0
        if qa <= 0.0:
            return y / qb
        return 2.0 * y / (qb + math.sqrt(qb * qb + 4.0 * qa * y))

    def first_start_ge(self, lo: int, hi: int, x: float) -> int:
        """Smallest j in [lo, hi] with ``time(j) >= x``; ``hi`` when none is."""
        j = min(hi, max(lo, math.ceil(self.approx_index(x))))
        while j > lo and self.time(j - 1) >= x:
            j -= 1
        while j < hi and self.time(j) < x:
            j += 1
        return j

    def last_end_le(self, lo: int, hi: int, v: float) -> int:
        """Largest j in [lo, hi] with ``time(j) <= v``, given ``time(lo) <= v``."""
        j = min(hi, max(lo, math.floor(self.approx_index(v))))
        while j < hi and self.time(j + 1) <= v:
            j += 1
        while j > lo and self.time(j) > v:
            j -= 1
        return j
