"""Arrival processes for benchmarks and simulations (BENCHMARK_PROTOCOL.md section 2).

Every generator is a pure function of its parameters and an injected
``numpy.random.Generator``: the same seed gives the identical array, which is what lets every
policy see the same request stream (common random numbers). Each returns a sorted ``float64``
array of arrival times in seconds within ``[0, duration_s)``.

Processes:

* :func:`poisson` -- homogeneous Poisson process;
* :func:`gamma_renewal` -- renewal process with gamma inter-arrival times of a given coefficient
  of variation (``vllm bench serve --burstiness b`` is gamma with shape ``b``, i.e. ``cv = 1/sqrt(b)``);
* :func:`on_off` -- two-state Markov-modulated Poisson process (ON bursts / OFF lulls) shaped
  like the Azure code trace;
* :func:`inhomogeneous_poisson` -- Poisson with a time-varying rate by thinning, with the rate
  builders :func:`step_surge`, :func:`ramp`, :func:`diurnal_sine` and :func:`idle_gaps`.

Trace replay of the Azure LLM inference trace 2023 is in :mod:`cato.sim.azure_trace`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


# ---- parameter checks ------------------------------------------------------------------------
def _positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _non_negative(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return v


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _uniform_points(
    starts: FloatArray, lengths: FloatArray, rates: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Poisson points on disjoint intervals ``[start, start+length)`` with per-interval rates.

    Conditional-uniform construction: the count on an interval is Poisson(rate * length) and,
    given the count, the points are i.i.d. uniform on the interval. Draw order: all counts,
    then all uniforms (fixed, so the result is a deterministic function of ``rng``).
    """
    counts = rng.poisson(rates * lengths)
    total = int(counts.sum())
    u = rng.random(total)
    base = np.repeat(starts, counts)
    span = np.repeat(lengths, counts)
    times = base + u * span
    # Guard against rounding pushing a point onto the interval's right end.
    end = np.repeat(starts + lengths, counts)
    times = np.where(times < end, times, np.nextafter(end, -np.inf))
    return np.sort(times).astype(np.float64)


# ---- homogeneous and renewal processes ------------------------------------------------------
def poisson(rate_rps: float, duration_s: float, rng: np.random.Generator) -> FloatArray:
    """Homogeneous Poisson arrivals at ``rate_rps`` on ``[0, duration_s)``.

    Algorithm: the count is Poisson(rate * duration) and, given the count, arrival times are
    i.i.d. uniform on the window, then sorted (equivalent to cumulating exponential gaps).

    Parameters: ``rate_rps`` > 0 (requests per second), ``duration_s`` > 0 (seconds).
    """
    rate = _positive("rate_rps", rate_rps)
    dur = _positive("duration_s", duration_s)
    _check_rng(rng)
    return _uniform_points(
        np.array([0.0]), np.array([dur]), np.array([rate]), rng
    )


def _renewal(
    draw_gaps: Callable[[int], FloatArray], expected: float, duration_s: float
) -> FloatArray:
    """Cumulate i.i.d. gaps drawn in chunks until the running sum reaches ``duration_s``.

    Chunk sizes depend only on ``expected`` (the expected count), so the draws are a fixed
    function of the parameters and the generator.
    """
    chunk = max(64, int(expected + 6.0 * math.sqrt(expected) + 16))
    parts: list[FloatArray] = []
    t0 = 0.0
    while True:
        times = t0 + np.cumsum(draw_gaps(chunk))
        if times[-1] >= duration_s:
            parts.append(times[times < duration_s])
            break
        parts.append(times)
        t0 = float(times[-1])
    return np.concatenate(parts).astype(np.float64)


def gamma_renewal(
    rate_rps: float, cv: float, duration_s: float, rng: np.random.Generator
) -> FloatArray:
    """Renewal arrivals with gamma inter-arrival times of mean ``1/rate_rps`` and CV ``cv``.

    Algorithm: gaps are Gamma(shape = 1/cv^2, scale = cv^2/rate) (mean 1/rate, coefficient of
    variation cv); arrival k is the sum of the first k gaps (an ordinary renewal process whose
    renewal epoch is t = 0, so the first arrival comes one gap after 0). ``cv = 1`` is Poisson;
    ``cv = 2`` and ``cv = 4`` are ``vllm bench serve --burstiness 0.25`` and ``0.0625``
    (burstiness = gamma shape = 1/cv^2).

    Parameters: ``rate_rps`` > 0, ``cv`` > 0, ``duration_s`` > 0.
    """
    rate = _positive("rate_rps", rate_rps)
    c = _positive("cv", cv)
    dur = _positive("duration_s", duration_s)
    g = _check_rng(rng)
    shape = 1.0 / (c * c)
    scale = (c * c) / rate

    def draw(n: int) -> FloatArray:
        return g.gamma(shape, scale, size=n).astype(np.float64)

    return _renewal(draw, rate * dur, dur)


@dataclass(frozen=True, slots=True)
class OnOffRates:
    """Per-state rates of :func:`on_off` (requests per second) and the resulting long-run mean."""

    on_rate_rps: float
    off_rate_rps: float
    long_run_mean_rps: float
    clipped: bool


def on_off_rates(
    mean_rate_rps: float,
    on_mean_s: float = 7.6,
    off_mean_s: float = 21.0,
    burst_factor: float = 3.7,
) -> OnOffRates:
    """Rates of the ON/OFF process for a target long-run mean.

    ON rate = ``burst_factor * mean_rate_rps``; OFF rate solves
    ``on_mean*on_rate + off_mean*off_rate = (on_mean + off_mean) * mean_rate`` and is clipped at
    0. When clipped (``burst_factor * on_mean > on_mean + off_mean``) the long-run mean exceeds
    ``mean_rate_rps`` (it is ``burst_factor * on_mean / (on_mean + off_mean) * mean_rate``);
    ``clipped`` says so. The defaults give an OFF rate of 0.48/21 = 2.3 % of the mean rate.
    """
    mean = _positive("mean_rate_rps", mean_rate_rps)
    on_m = _positive("on_mean_s", on_mean_s)
    off_m = _positive("off_mean_s", off_mean_s)
    bf = _positive("burst_factor", burst_factor)
    on_rate = bf * mean
    off_raw = mean * (on_m + off_m - bf * on_m) / off_m
    off_rate = max(0.0, off_raw)
    long_run = (on_m * on_rate + off_m * off_rate) / (on_m + off_m)
    return OnOffRates(on_rate, off_rate, long_run, off_raw < 0.0)


def on_off(
    mean_rate_rps: float,
    duration_s: float,
    rng: np.random.Generator,
    on_mean_s: float = 7.6,
    off_mean_s: float = 21.0,
    burst_factor: float = 3.7,
) -> FloatArray:
    """ON/OFF bursty arrivals (two-state Markov-modulated Poisson process).

    Algorithm: periods alternate ON and OFF with exponential lengths of means ``on_mean_s`` and
    ``off_mean_s``. During ON, arrivals are Poisson at ``burst_factor * mean_rate_rps``; during
    OFF, Poisson at the rate that keeps the long-run mean at ``mean_rate_rps``, clipped at 0
    (see :func:`on_off_rates`; with the defaults 3.7*7.6/28.6 = 0.98 of the mean comes from ON
    periods, so the OFF rate is small but positive). The process starts in a random phase drawn
    from its stationary law: ON with probability ``on_mean/(on_mean+off_mean)``, with a
    residual period that is again exponential (memoryless). The defaults follow the Azure code
    trace (ON mean 7.6 s at 3.7x the mean rate, OFF mean 21 s).

    Draw order: initial state, then period lengths in chunks, then the Poisson points.
    """
    rates = on_off_rates(mean_rate_rps, on_mean_s, off_mean_s, burst_factor)
    dur = _positive("duration_s", duration_s)
    g = _check_rng(rng)
    on_m, off_m = float(on_mean_s), float(off_mean_s)
    start_on = bool(g.random() < on_m / (on_m + off_m))
    cycle = on_m + off_m
    chunk = max(16, 2 * int(dur / cycle) + 16)
    lengths_parts: list[FloatArray] = []
    total = 0.0
    while total < dur:
        # Even positions hold the first state's period, odd positions the other's.
        means = np.empty(chunk)
        first, second = (on_m, off_m) if start_on else (off_m, on_m)
        means[0::2] = first
        means[1::2] = second
        part = g.exponential(1.0, size=chunk) * means
        lengths_parts.append(part)
        total += float(part.sum())
    lengths = np.concatenate(lengths_parts)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    keep = starts < dur
    starts, ends = starts[keep], np.minimum(ends[keep], dur)
    idx = np.arange(starts.size)
    is_on = (idx % 2 == 0) == start_on
    per_rate = np.where(is_on, rates.on_rate_rps, rates.off_rate_rps)
    return _uniform_points(starts, ends - starts, per_rate, g)


# ---- time-varying rates -----------------------------------------------------------------------
class RateFunction(ABC):
    """A non-negative arrival rate ``r(t)`` (requests per second) with a known upper bound.

    Concrete rate functions are frozen dataclasses; call one with a time in seconds.
    """

    __slots__ = ()

    @abstractmethod
    def __call__(self, t_s: float) -> float:
        """The rate at time ``t_s`` (seconds)."""

    @property
    @abstractmethod
    def max_rate_rps(self) -> float:
        """An upper bound of the rate over all t >= 0 (the thinning envelope)."""


@dataclass(frozen=True, slots=True)
class StepSurge(RateFunction):
    """``base_rps``, times ``factor`` on ``[start_s, end_s)``."""

    base_rps: float
    factor: float
    start_s: float
    end_s: float

    def __call__(self, t_s: float) -> float:
        if self.start_s <= t_s < self.end_s:
            return self.base_rps * self.factor
        return self.base_rps

    @property
    def max_rate_rps(self) -> float:
        return self.base_rps * max(1.0, self.factor)


@dataclass(frozen=True, slots=True)
class Ramp(RateFunction):
    """``from_rps`` before ``start_s``, linear to ``to_rps`` at ``end_s``, ``to_rps`` after."""

    from_rps: float
    to_rps: float
    start_s: float
    end_s: float

    def __call__(self, t_s: float) -> float:
        if t_s <= self.start_s:
            return self.from_rps
        if t_s >= self.end_s:
            return self.to_rps
        frac = (t_s - self.start_s) / (self.end_s - self.start_s)
        return self.from_rps + frac * (self.to_rps - self.from_rps)

    @property
    def max_rate_rps(self) -> float:
        return max(self.from_rps, self.to_rps)


@dataclass(frozen=True, slots=True)
class DiurnalSine(RateFunction):
    """``mean_rps * (1 + amplitude_frac * sin(2*pi*t/period_s))``: a compressed day."""

    mean_rps: float
    amplitude_frac: float
    period_s: float

    def __call__(self, t_s: float) -> float:
        return self.mean_rps * (
            1.0 + self.amplitude_frac * math.sin(2.0 * math.pi * t_s / self.period_s)
        )

    @property
    def max_rate_rps(self) -> float:
        return self.mean_rps * (1.0 + self.amplitude_frac)


@dataclass(frozen=True, slots=True)
class IdleGaps(RateFunction):
    """``base_rps`` except during the last ``gap_len_s`` of every ``gap_every_s`` (rate 0).

    The gaps are ``[k*gap_every_s - gap_len_s, k*gap_every_s)`` for k = 1, 2, ...: traffic
    first, then silence (a scale-to-zero opportunity), then traffic resumes.
    """

    base_rps: float
    gap_every_s: float
    gap_len_s: float

    def __call__(self, t_s: float) -> float:
        phase = math.fmod(t_s, self.gap_every_s)
        if phase < 0.0:
            phase += self.gap_every_s
        if phase >= self.gap_every_s - self.gap_len_s:
            return 0.0
        return self.base_rps

    @property
    def max_rate_rps(self) -> float:
        return self.base_rps


def step_surge(base_rps: float, factor: float, start_s: float, end_s: float) -> StepSurge:
    """Step surge: rate ``base_rps``, multiplied by ``factor`` on ``[start_s, end_s)``.

    ``factor`` > 0 (x2 and x4 in the protocol; < 1 gives a dip); ``0 <= start_s < end_s``.
    """
    b = _positive("base_rps", base_rps)
    f = _positive("factor", factor)
    s = _non_negative("start_s", start_s)
    e = _positive("end_s", end_s)
    if e <= s:
        raise ValueError(f"end_s must be greater than start_s={start_s!r}, got {end_s!r}")
    return StepSurge(b, f, s, e)


def ramp(from_rps: float, to_rps: float, start_s: float, end_s: float) -> Ramp:
    """Linear ramp of the rate from ``from_rps`` (at ``start_s``) to ``to_rps`` (at ``end_s``).

    Rates >= 0 and not both 0; ``0 <= start_s < end_s``. Constant outside the ramp.
    """
    a = _non_negative("from_rps", from_rps)
    b = _non_negative("to_rps", to_rps)
    if a == 0.0 and b == 0.0:
        raise ValueError(f"from_rps and to_rps must not both be 0, got {from_rps!r}, {to_rps!r}")
    s = _non_negative("start_s", start_s)
    e = _positive("end_s", end_s)
    if e <= s:
        raise ValueError(f"end_s must be greater than start_s={start_s!r}, got {end_s!r}")
    return Ramp(a, b, s, e)


def diurnal_sine(mean_rps: float, amplitude_frac: float, period_s: float) -> DiurnalSine:
    """Compressed diurnal cycle ``mean*(1 + amplitude*sin(2*pi*t/period))``, starting at the mean.

    ``mean_rps`` > 0, ``0 <= amplitude_frac <= 1`` (so the rate stays >= 0), ``period_s`` > 0.
    """
    m = _positive("mean_rps", mean_rps)
    a = _non_negative("amplitude_frac", amplitude_frac)
    if a > 1.0:
        raise ValueError(f"amplitude_frac must be in [0, 1], got {amplitude_frac!r}")
    p = _positive("period_s", period_s)
    return DiurnalSine(m, a, p)


def idle_gaps(base_rps: float, gap_every_s: float, gap_len_s: float) -> IdleGaps:
    """Rate ``base_rps`` with an idle gap of ``gap_len_s`` closing every ``gap_every_s``.

    ``base_rps`` > 0, ``0 < gap_len_s < gap_every_s``.
    """
    b = _positive("base_rps", base_rps)
    every = _positive("gap_every_s", gap_every_s)
    glen = _positive("gap_len_s", gap_len_s)
    if glen >= every:
        raise ValueError(
            f"gap_len_s must be less than gap_every_s={gap_every_s!r}, got {gap_len_s!r}"
        )
    return IdleGaps(b, every, glen)


def inhomogeneous_poisson(
    rate_fn: Callable[[float], float],
    max_rate_rps: float,
    duration_s: float,
    rng: np.random.Generator,
) -> FloatArray:
    """Poisson arrivals with time-varying rate ``rate_fn(t)`` by thinning (Lewis--Shedler 1979).

    Algorithm: draw candidates from a homogeneous Poisson process at the envelope rate
    ``max_rate_rps`` on ``[0, duration_s)``, then keep a candidate at time t with probability
    ``rate_fn(t) / max_rate_rps`` (one uniform per candidate, drawn after all candidates).

    Parameters: ``rate_fn`` maps seconds to requests per second and must satisfy
    ``0 <= rate_fn(t) <= max_rate_rps`` (a :class:`RateFunction` provides ``max_rate_rps``);
    a violation found at a candidate raises ValueError naming t and the rate.
    """
    lam = _positive("max_rate_rps", max_rate_rps)
    dur = _positive("duration_s", duration_s)
    g = _check_rng(rng)
    cand = _uniform_points(np.array([0.0]), np.array([dur]), np.array([lam]), g)
    u = g.random(cand.size)
    rates = np.empty(cand.size)
    for i, t in enumerate(cand.tolist()):
        r = float(rate_fn(t))
        if not (math.isfinite(r) and 0.0 <= r <= lam * (1.0 + 1e-12)):
            raise ValueError(
                f"rate_fn({t!r}) = {r!r} is outside [0, max_rate_rps={max_rate_rps!r}]"
            )
        rates[i] = r
    return cand[u * lam < rates].astype(np.float64)
