"""SLO capacity: the largest rate at which a policy holds a target attainment, with a bootstrap
interval over seeds (BENCHMARK_PROTOCOL.md section 3, the headline metric).

Method, for one policy, seeds ``s_1..s_n`` (n >= 5; each seed is an independent arrival and
request stream, :func:`~cato.sim.scenarios.build_stream_for`) and a target ``T``:

1. **Curve.** Attainment ``a(r, s)`` is simulated on a grid of rates, ``curve_factors`` times the
   scenario's knee (0.2x-1.5x), and memoised per (policy configuration, rate, seed); every later
   step only adds rates. ``m(r)`` = the mean of ``a(r, s)`` over the seeds.
2. **Estimator on a grid** (:func:`capacity_on_grid`): mean attainment is not monotone in the
   rate (each rate has its own streams, so one hard stream makes a dip that every policy shares),
   so ``m`` is first replaced by its non-increasing least-squares fit ``m*`` over the evaluated
   rates (isotonic regression, :func:`monotone_fit`: a dip is pooled with its neighbours, not
   taken as the end). The capacity is where ``m*`` crosses ``T``: the first rate ``r_j`` with
   ``m*(r_j) < T`` and linear interpolation of ``m*`` between ``r_{j-1}`` and ``r_j``. It is 0
   when even the lowest rate misses ``T`` (censored "below") and the highest rate when none
   misses (censored "above").
3. **Bracket and bisection** (:func:`search_capacity`): if the lowest rate misses ``T`` halve it,
   if the highest holds ``T`` double it (``max_widen`` times each); then bisect the estimator's
   bracket ``[r_{j-1}, r_j]`` (evaluating its midpoint at every seed) until
   ``r_j - r_{j-1} <= rel_tol * r_{j-1}`` (the bracket is read off ``m*``, so the estimate and
   the bracket stay consistent as points are added).
4. **Bootstrap** (:func:`bootstrap_capacities`): ``num_resamples`` resamples of the seeds with
   replacement (numpy ``default_rng(bootstrap_seed)``, the same index matrix for every policy:
   seeds are resampled *jointly*, which keeps the common random numbers paired); each resample's
   mean curve on the evaluated grid goes through the same estimator. The interval is the 2.5th
   and 97.5th percentiles. Where an end of the interval falls in a grid interval wider than
   ``rel_tol``, that rate is simulated too, and where it is censored (resamples that hold the
   target at every rate tried, or miss it at every one) the grid is doubled up or halved down;
   then the bootstrap is redone (``refine_rounds`` times at most), so that neither interpolation
   over coarse grid steps nor the grid's ends set the interval.
5. **Ratios** (:func:`capacity_ratio`): capacity of policy A over that of the best of a set of
   baselines, a ratio of capacities of mean curves (never a mean of per-seed ratios); its
   interval comes from the same joint resamples, taking in each resample A's capacity over the
   best baseline's capacity *in that resample* (so the choice of the best is resampled too).

Bounds: per policy and target about ``len(curve_factors) + log2(0.1 / rel_tol) + 2 *
refine_rounds`` rates, each at every seed; the bootstrap is O(resamples x rates x seeds) numpy.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from cato.sim.policies import PolicySpec, describe_config, is_baseline
from cato.sim.runner import run_spec
from cato.sim.scenarios import Scenario, build_stream_for
from cato.sim.workload import TaskArrival

#: (rate_rps, seed) -> attainment in [0, 1].
AttainmentFn = Callable[[float, int], float]
Censored = Literal["below", "above"] | None


@dataclass(frozen=True)
class SearchSettings:
    """How capacities are searched and their intervals drawn (module docstring, steps 1-4)."""

    #: the attainment-vs-rate curve, as fractions of the knee
    curve_factors: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5)
    #: bisection stops when the bracket is at most this fraction of its lower end
    rel_tol: float = 0.02
    #: halvings of the lowest / doublings of the highest rate at most
    max_widen: int = 4
    num_resamples: int = 1000
    bootstrap_seed: int = 0
    confidence: float = 0.95
    refine_rounds: int = 3
    min_seeds: int = 5

    def __post_init__(self) -> None:
        if not self.curve_factors or any(f <= 0 for f in self.curve_factors):
            raise ValueError(f"curve_factors must be positive, got {self.curve_factors}")
        if not 0.0 < self.rel_tol < 1.0:
            raise ValueError(f"rel_tol must be in (0, 1), got {self.rel_tol}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.num_resamples < 10:
            raise ValueError(f"num_resamples must be >= 10, got {self.num_resamples}")


def _rate(x: float) -> float:
    """Rates are kept to 6 significant digits so that a rate is one cache key."""
    return float(f"{x:.6g}")


class AttainmentTable:
    """Attainment of one policy per (rate, seed), simulated on demand and memoised."""

    def __init__(self, fn: AttainmentFn, seeds: Sequence[int]) -> None:
        if len(set(seeds)) != len(seeds) or not seeds:
            raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
        self.fn = fn
        self.seeds = tuple(seeds)
        self._rows: dict[float, np.ndarray] = {}

    def evaluate(self, rate_rps: float) -> np.ndarray:
        """Attainment at every seed for ``rate_rps`` (simulated once)."""
        r = _rate(rate_rps)
        if r <= 0:
            raise ValueError(f"rate must be > 0 req/s, got {rate_rps}")
        if r not in self._rows:
            self._rows[r] = np.array([float(self.fn(r, s)) for s in self.seeds])
        return self._rows[r]

    def mean(self, rate_rps: float) -> float:
        return float(self.evaluate(rate_rps).mean())

    def __contains__(self, rate_rps: float) -> bool:
        return _rate(rate_rps) in self._rows

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Evaluated rates ascending, and attainment ``[rate, seed]``."""
        rates = sorted(self._rows)
        return np.array(rates), np.array([self._rows[r] for r in rates]).reshape(
            len(rates), len(self.seeds))


def monotone_fit(means: np.ndarray) -> np.ndarray:
    """The non-increasing least-squares fit (isotonic regression, equal weights) of each column
    of ``means`` (``[rate, k]`` in ascending rate), by the min-max formula
    ``fit_i = min_{j <= i} max_{k >= i} mean(y_j..y_k)``; O(rates^2) per column, vectorised."""
    m = means.reshape(means.shape[0], -1)
    n = m.shape[0]
    c = np.concatenate([np.zeros((1, m.shape[1])), np.cumsum(m, axis=0)])
    j, k = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = (c[k + 1] - c[j]) / (k - j + 1)[..., None]            # [j, k, col]
    avg = np.where((j <= k)[..., None], avg, -np.inf)
    suffix_max = np.maximum.accumulate(avg[:, ::-1], axis=1)[:, ::-1]   # max over k >= i
    suffix_max = np.where((j <= k)[..., None], suffix_max, np.inf)      # [j, i, col], j <= i
    fit: np.ndarray = suffix_max.min(axis=0)
    return fit.reshape(means.shape)


def capacity_on_grid(rates: np.ndarray, means: np.ndarray, target: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The estimator of step 2 for each column of ``means`` (``[rate, k]``, or a vector):
    capacities ``[k]`` and a code per column (0 crossing, -1 censored below, +1 above)."""
    m = monotone_fit(means.reshape(len(rates), -1))
    fails = m < target
    any_fail = fails.any(axis=0)
    j = np.where(any_fail, fails.argmax(axis=0), len(rates))
    cols = np.arange(m.shape[1])
    prev = np.clip(j - 1, 0, len(rates) - 1)
    nxt = np.clip(j, 0, len(rates) - 1)
    m0, m1 = m[prev, cols], m[nxt, cols]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(m0 > m1, (m0 - target) / (m0 - m1), 0.0)
    cap = rates[prev] + (rates[nxt] - rates[prev]) * np.clip(frac, 0.0, 1.0)
    code = np.zeros(m.shape[1], dtype=int)
    code[j == 0] = -1
    code[j == len(rates)] = 1
    cap = np.where(j == 0, 0.0, np.where(j == len(rates), rates[-1], cap))
    return cap, code


def _bracket(table: AttainmentTable, target: float) -> tuple[float, float] | None:
    rates, att = table.grid()
    m = monotone_fit(att.mean(axis=1))
    fails = np.flatnonzero(m < target)
    if len(fails) == 0 or fails[0] == 0:
        return None
    j = int(fails[0])
    return float(rates[j - 1]), float(rates[j])


def search_capacity(table: AttainmentTable, target: float, *, knee_rps: float,
                    settings: SearchSettings = SearchSettings()) -> None:
    """Steps 1 and 3: evaluate the curve, widen the bracket, bisect to ``rel_tol``. Adds rates
    to ``table``; the estimate is read with :func:`capacity_on_grid`."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    if not knee_rps > 0:
        raise ValueError(f"knee_rps must be > 0, got {knee_rps}")
    for f in settings.curve_factors:
        table.evaluate(f * knee_rps)
    for _ in range(settings.max_widen):
        rates, _att = table.grid()
        if table.mean(float(rates[0])) >= target:
            break
        table.evaluate(float(rates[0]) / 2.0)
    for _ in range(settings.max_widen):
        rates, _att = table.grid()
        lowest_fail = _bracket(table, target)
        if lowest_fail is not None or table.mean(float(rates[0])) < target:
            break
        table.evaluate(float(rates[-1]) * 2.0)
    for _ in range(64):
        br = _bracket(table, target)
        if br is None or br[1] - br[0] <= settings.rel_tol * br[0]:
            return
        mid = _rate((br[0] + br[1]) / 2.0)
        if mid in table or mid <= br[0] or mid >= br[1]:
            return
        table.evaluate(mid)


def resample_indices(num_seeds: int, settings: SearchSettings) -> np.ndarray:
    """The joint resampling plan: ``[num_resamples, num_seeds]`` seed indices (fixed rng)."""
    rng = np.random.default_rng(settings.bootstrap_seed)
    return rng.integers(0, num_seeds, size=(settings.num_resamples, num_seeds))


def bootstrap_capacities(table: AttainmentTable, target: float, idx: np.ndarray) -> np.ndarray:
    """Step 4: the estimator on each resample's mean curve (``idx`` from
    :func:`resample_indices`)."""
    rates, att = table.grid()
    means = att[:, idx].mean(axis=2)          # [rate, resample]
    cap, _ = capacity_on_grid(rates, means, target)
    return cap


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The equal-tailed percentile interval of the finite ``values`` (nan when none): the
    bootstrap interval of `cato capacity` and `cato fronts`."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return math.nan, math.nan
    q = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [q, 1.0 - q])
    return float(lo), float(hi)


@dataclass(frozen=True)
class CapacityEstimate:
    """One policy's SLO capacity at one target, with its bootstrap interval."""

    target: float
    capacity_rps: float
    ci_low_rps: float
    ci_high_rps: float
    censored: Censored
    boot_rps: np.ndarray = field(repr=False, compare=False)


def estimate_capacity(table: AttainmentTable, target: float, *, knee_rps: float,
                      settings: SearchSettings = SearchSettings(),
                      idx: np.ndarray | None = None) -> CapacityEstimate:
    """Steps 1-4 for one policy and target (the table keeps what was simulated)."""
    if len(table.seeds) < settings.min_seeds:
        raise ValueError(f"SLO capacity needs >= {settings.min_seeds} seeds, got "
                         f"{len(table.seeds)}")
    search_capacity(table, target, knee_rps=knee_rps, settings=settings)
    if idx is None:
        idx = resample_indices(len(table.seeds), settings)
    top = max(settings.curve_factors) * knee_rps * 2.0 ** settings.max_widen
    bottom = min(settings.curve_factors) * knee_rps * 2.0 ** -settings.max_widen
    for _ in range(settings.refine_rounds + 1):
        boot = bootstrap_capacities(table, target, idx)
        lo, hi = percentile_interval(boot, settings.confidence)
        rates, _att = table.grid()
        added = False
        for q in (lo, hi):
            k = int(np.searchsorted(rates, q))
            if q >= rates[-1]:          # resamples that hold the target at every rate tried
                if 2.0 * rates[-1] <= top * (1 + 1e-9):
                    table.evaluate(2.0 * rates[-1])
                    added = True
            elif q <= 0.0:              # ... or that miss it at every rate tried
                if rates[0] / 2.0 >= bottom * (1 - 1e-9):
                    table.evaluate(rates[0] / 2.0)
                    added = True
            elif 0 < k < len(rates) and q not in table \
                    and rates[k] - rates[k - 1] > settings.rel_tol * rates[k - 1]:
                table.evaluate(q)
                added = True
        if not added:
            break
    rates, att = table.grid()
    cap, code = capacity_on_grid(rates, att.mean(axis=1), target)
    censored: Censored = "below" if code[0] < 0 else "above" if code[0] > 0 else None
    boot = bootstrap_capacities(table, target, idx)
    lo, hi = percentile_interval(boot, settings.confidence)
    return CapacityEstimate(target, float(cap[0]), lo, hi, censored, boot)


@dataclass(frozen=True)
class CapacityRatio:
    """``policy``'s capacity over the best baseline's, with the joint-resample interval."""

    policy: str
    ratio: float
    ci_low: float
    ci_high: float


def capacity_ratio(policy: str, estimate: CapacityEstimate,
                   baselines: Mapping[str, CapacityEstimate],
                   confidence: float = 0.95) -> CapacityRatio:
    """Step 5. Every estimate must come from the same resample indices. A zero best-baseline
    capacity gives an infinite ratio (``math.inf``)."""
    if not baselines:
        raise ValueError("no baseline to take the ratio against")
    best = max(e.capacity_rps for e in baselines.values())
    best_boot = np.max(np.stack([e.boot_rps for e in baselines.values()]), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.where(best_boot > 0, estimate.boot_rps / np.where(best_boot > 0, best_boot, 1),
                        math.inf)
    ratio = estimate.capacity_rps / best if best > 0 else math.inf
    lo, hi = percentile_interval(boot, confidence)
    return CapacityRatio(policy, ratio, lo, hi)


# ---- the simulator's side: memoised cells, every policy of a scenario, the JSON contract -------
class SimAttainment:
    """Attainment of (policy configuration, rate, seed) cells of one scenario, simulated once.

    The cache key is the configuration (routing and scaling policies and their parameters), not
    the label, so two labels for one configuration (``ray-tuned`` and a point of the Ray sweep)
    share their runs. Streams depend only on (rate, seed) and the last few are kept, so a rate
    evaluated for several policies in a row builds each stream once."""

    def __init__(self, sc: Scenario,
                 on_run: Callable[[str, float, int], None] | None = None,
                 max_streams: int = 16) -> None:
        self.sc = sc
        self.on_run = on_run
        self.num_runs = 0
        self._cache: dict[tuple[object, ...], float] = {}
        self._streams: OrderedDict[tuple[float, int], list[TaskArrival]] = OrderedDict()
        self._max_streams = max_streams

    def _stream(self, rate_rps: float, seed: int) -> list[TaskArrival]:
        key = (rate_rps, seed)
        if key in self._streams:
            self._streams.move_to_end(key)
        else:
            self._streams[key] = build_stream_for(self.sc, rate_rps, seed)
            while len(self._streams) > self._max_streams:
                self._streams.popitem(last=False)
        return self._streams[key]

    def attainment(self, spec: PolicySpec, rate_rps: float, seed: int) -> float:
        key = (spec.routing, tuple(sorted(spec.routing_params.items())), spec.scaling,
               tuple(sorted(spec.scaling_params.items())), spec.engine_concurrency,
               spec.engine_scheduling, _rate(rate_rps), seed)
        if key not in self._cache:
            if self.on_run is not None:
                self.on_run(spec.label, rate_rps, seed)
            row, _ = run_spec(self.sc, spec, rate_rps, seed, stream=self._stream(rate_rps, seed))
            self._cache[key] = float(row["attainment"])
            self.num_runs += 1
        return self._cache[key]

    def fn(self, spec: PolicySpec) -> AttainmentFn:
        return lambda rate, seed: self.attainment(spec, rate, seed)


@dataclass(frozen=True)
class PolicyCapacity:
    spec: PolicySpec
    table: AttainmentTable
    estimates: Mapping[float, CapacityEstimate]


@dataclass(frozen=True)
class CapacityReport:
    """Every policy's capacity per target; per target the best tuned baseline (a label of
    ``policies``, None when no policy is a baseline) and the ratio of every other policy to it."""

    scenario: str
    knee_rps: float
    seeds: tuple[int, ...]
    targets: tuple[float, ...]
    policies: Mapping[str, PolicyCapacity]
    best_baseline: Mapping[float, str | None]
    ratios: Mapping[float, tuple[CapacityRatio, ...]]
    num_runs: int


def measure_capacity(sc: Scenario, specs: Sequence[PolicySpec], seeds: Sequence[int],
                     targets: Sequence[float], *, settings: SearchSettings = SearchSettings(),
                     on_run: Callable[[str, float, int], None] | None = None) -> CapacityReport:
    """SLO capacity of every spec at every target on ``sc`` (module docstring), the best tuned
    baseline (:func:`~cato.sim.policies.is_baseline`, highest capacity) and the ratio of every
    non-baseline policy (CATO, CATO+, the oracle) to it."""
    if len(seeds) < settings.min_seeds:
        raise ValueError(f"SLO capacity needs >= {settings.min_seeds} seeds, got {len(seeds)}")
    if not specs:
        raise ValueError("no policy to measure")
    knee = sc.knee_rps or max(sc.rates_rps)
    sim = SimAttainment(sc, on_run, max_streams=max(16, len(seeds)))
    tables = {s.label: AttainmentTable(sim.fn(s), seeds) for s in specs}
    for f in settings.curve_factors:       # rate-major: each stream serves every policy
        for t in tables.values():
            t.evaluate(f * knee)
    idx = resample_indices(len(seeds), settings)
    est: dict[str, dict[float, CapacityEstimate]] = {s.label: {} for s in specs}
    for target in targets:
        for s in specs:
            est[s.label][target] = estimate_capacity(tables[s.label], target, knee_rps=knee,
                                                     settings=settings, idx=idx)
    base = [s.label for s in specs if is_baseline(s)]
    best: dict[float, str | None] = {}
    ratios: dict[float, tuple[CapacityRatio, ...]] = {}
    for target in targets:
        best[target] = max(base, key=lambda b: est[b][target].capacity_rps) if base else None
        ratios[target] = tuple(
            capacity_ratio(s.label, est[s.label][target],
                           {b: est[b][target] for b in base}, settings.confidence)
            for s in specs if base and not is_baseline(s))
    return CapacityReport(sc.name, knee, tuple(seeds), tuple(targets),
                          {s.label: PolicyCapacity(s, tables[s.label], est[s.label])
                           for s in specs}, best, ratios, sim.num_runs)


def _num(x: float) -> float | None:
    """A JSON number (a plain float to 6 decimals; None for inf/nan)."""
    return round(float(x), 6) if math.isfinite(x) else None


def report_json(rep: CapacityReport) -> dict[str, object]:
    """The ``cato capacity --json`` document. ``results`` rows carry exactly ``policy``,
    ``scenario``, ``target``, ``slo_capacity_rps``, ``ci_low_rps``, ``ci_high_rps``, ``seeds``,
    ``config``; ``best_tuned_baseline`` one entry per target; ``details`` and ``curves`` the
    censoring and the attainment-vs-rate curves behind every figure."""
    results: list[dict[str, object]] = []
    details: list[dict[str, object]] = []
    curves: list[dict[str, object]] = []
    for label, pc in rep.policies.items():
        for target, e in pc.estimates.items():
            results.append({"policy": label, "scenario": rep.scenario, "target": target,
                            "slo_capacity_rps": _num(e.capacity_rps),
                            "ci_low_rps": _num(e.ci_low_rps), "ci_high_rps": _num(e.ci_high_rps),
                            "seeds": list(rep.seeds), "config": describe_config(pc.spec)})
            details.append({"policy": label, "target": target, "censored": e.censored,
                            "capacity_fraction_of_knee": _num(e.capacity_rps / rep.knee_rps),
                            "baseline": is_baseline(pc.spec)})
        rates, att = pc.table.grid()
        curves.append({"policy": label, "rates_rps": [_num(r) for r in rates],
                       "fraction_of_knee": [_num(r / rep.knee_rps) for r in rates],
                       "mean_attainment": [_num(x) for x in att.mean(axis=1)],
                       "min_attainment": [_num(x) for x in att.min(axis=1)],
                       "max_attainment": [_num(x) for x in att.max(axis=1)]})
    best_rows: list[dict[str, object]] = []
    for target in rep.targets:
        b = rep.best_baseline[target]
        if b is None:
            continue
        e = rep.policies[b].estimates[target]
        best_rows.append({
            "scenario": rep.scenario, "target": target, "policy": b,
            "config": describe_config(rep.policies[b].spec),
            "slo_capacity_rps": _num(e.capacity_rps), "ci_low_rps": _num(e.ci_low_rps),
            "ci_high_rps": _num(e.ci_high_rps),
            "ratios": {r.policy: {"ratio": _num(r.ratio), "ci_low": _num(r.ci_low),
                                  "ci_high": _num(r.ci_high)} for r in rep.ratios[target]}})
    return {"scenario": rep.scenario, "knee_rps": rep.knee_rps, "seeds": list(rep.seeds),
            "targets": list(rep.targets), "num_runs": rep.num_runs, "results": results,
            "best_tuned_baseline": best_rows, "details": details, "curves": curves}
