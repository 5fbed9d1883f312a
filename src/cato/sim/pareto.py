"""Autoscaling as Pareto fronts: SLA attainment against replica-seconds per met request over
each scaler's parameter sweep (BENCHMARK_PROTOCOL.md section 4), ``cato fronts``.

Method, for one autoscaled scenario at a fixed rate and seeds ``s_1..s_n`` (n >= 5):

1. **Families.** A family is one router + scaler pair with its scaler's parameters swept
   (:func:`family_grid`): ``cato`` and ``cato-plus`` (and ``pow2+cato``, ``oracle+cato``) over
   the CATO sweep of :func:`~cato.sim.scenarios.cato_scaling_sweep` (18 configurations); ``ray``
   over the protocol's Ray-like sweep (:func:`~cato.sim.scenarios.ray_sweep`; by default a
   reduced grid, ``max_ongoing_requests`` in {4, 16, unbounded, the scenario's engine
   concurrency} x every target, upscale and downscale delay, and with ``full`` all 210; or the
   subset ``ray_grid`` names); other ``*+ray`` pairs over the autoscaler part of it (30). Each
   family also holds the scenario's named configuration(s) (``ray`` and ``ray-tuned`` for the
   ``ray`` family).
2. **Points.** Every configuration runs at every seed on the same streams (common random
   numbers; a configuration shared by two families runs once). A point is the mean attainment
   over the seeds and the cost ``sum(provisioned replica-seconds) / sum(met requests)`` over the
   seeds (a ratio of means; each run's ``replica_seconds_per_met`` is the same ratio per seed:
   provisioned replica-seconds over the run, cold start and idle included, over the requests
   met after the warm-up cut).
3. **Fronts** (:func:`pareto_front`): the points no other point of the family *strictly*
   dominates (>= attainment and <= cost, one of them strictly); exactly tied points both stay.
   The *best baseline front* is the front of every baseline family's points together
   (:func:`~cato.sim.scenarios.is_baseline`).
4. **Cost at an attainment level** (:func:`cost_at`): on a front sorted by attainment, linear
   interpolation between adjacent points; below the front's lowest attainment the cost of its
   cheapest point (a configuration that reaches more); above its highest, not reachable (nan).
   The cost ratio at level ``a`` is ``cost_F(a) / cost_best_baseline(a)`` (the issue's goal:
   <= 0.8, "at equal attainment >= 20 % fewer replica-seconds"), at fixed levels and at the
   highest attainment the best baseline front reaches (where a baseline exists at all).
5. **Dominance** (:func:`analyse`, on the point estimates): for each point of the best baseline front, whether a
   point of family F has >= attainment and <= cost; and, on a grid of attainment levels, where
   F's front is cheaper, costlier, or where only one of the two reaches the level.
6. **Intervals.** ``num_resamples`` joint resamples of the seeds (the same index matrix for
   every configuration, so the pairing is kept). Each point's attainment and cost intervals are
   the 2.5th/97.5th percentiles of its resampled values; each cost ratio is recomputed in every
   resample with the fronts rebuilt from that resample's points (the choice of configuration,
   and the baseline's highest attainment, are resampled too). A ratio's interval is given only
   when both fronts reach the level in at least ``min_computable`` of the resamples.

Cost: (configurations, deduplicated) x seeds x rates simulations, estimated up front by
:func:`count_runs`; the analysis is O(resamples x configurations log configurations).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from cato.sim.capacity import percentile_interval
from cato.sim.runner import run_spec
from cato.sim.scenarios import (
    UNBOUNDED_ONGOING, PolicySpec, Scenario, build_stream_for, cato_scaling_sweep,
    describe_config, is_baseline, ray_scaling_sweep, ray_sweep,
)

#: ``max_ongoing_requests`` of the reduced default Ray grid (plus the engine concurrency).
RAY_REDUCED_MAX_ONGOING: tuple[int | None, ...] = (4, 16, None)
DEFAULT_FAMILIES = ("cato", "cato-plus", "ray")
DEFAULT_LEVELS = (0.85, 0.9, 0.95)
#: the issue's goal: at equal attainment, CATO needs <= 0.8 x the best baseline's cost
GOAL_RATIO = 0.8

Verdict = Literal["cheaper", "costlier", "equal", "only-family-reaches", "only-baseline-reaches"]


# ---- families and their grids ------------------------------------------------------------------
def _scaler_defaults(name: str) -> dict[str, object]:
    from cato.core.scaling.base import ScalingPolicy
    from cato.core.scaling.policies import CatoScaling, RayServeLikeScaling

    classes: dict[str, type[ScalingPolicy]] = {"cato": CatoScaling, "ray": RayServeLikeScaling}
    if name not in classes:
        return {}
    return {k: p.default for k, p in inspect.signature(classes[name]).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _config_key(spec: PolicySpec) -> tuple[object, ...]:
    """What a configuration runs, with the scaler's defaults filled in, so that ``ray-tuned``
    and the point of the Ray sweep that spells out its delays are one configuration."""
    scaling = {**_scaler_defaults(spec.scaling), **spec.scaling_params}
    return (spec.routing, tuple(sorted(spec.routing_params.items())), spec.scaling,
            tuple(sorted(scaling.items())))


def autoscaled_family_names(sc: Scenario) -> list[str]:
    """The families ``sc`` has: its policies that scale with ``cato`` or ``ray`` (``ray-tuned``
    is a point of the ``ray`` family, not a family)."""
    return [name for name, p in sc.policies.items()
            if p.scaling in ("cato", "ray") and name != "ray-tuned"]


@dataclass(frozen=True)
class Family:
    """One router + scaler with its configurations; ``named`` maps a configuration's label to
    the scenario's policy labels it is (e.g. the ``ray-tuned`` point of the Ray sweep)."""

    name: str
    baseline: bool
    specs: tuple[PolicySpec, ...]
    named: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


#: ``ray_grid`` keys of :func:`family_grid` -> (where the parameter lives, its name)
RAY_GRID_KEYS: dict[str, tuple[str, str]] = {
    "max_ongoing": ("routing", "max_ongoing_requests"),
    "target": ("scaling", "target_ongoing_requests"),
    "up": ("scaling", "upscale_delay_s"),
    "down": ("scaling", "downscale_delay_s"),
}


def parse_ray_grid(text: str) -> dict[str, tuple[float | None, ...]]:
    """``"max_ongoing=32,unbounded;target=4,8;up=10;down=120,600"`` -> a ``ray_grid``. Every
    value must be one of the protocol's sweep (a subset of it is measured, never another
    grid); errors name the bad key or value."""
    from cato.sim import scenarios as S

    allowed: dict[str, tuple[float | None, ...]] = {
        "max_ongoing": tuple(S.RAY_SWEEP_MAX_ONGOING), "target": S.RAY_SWEEP_TARGET_ONGOING,
        "up": S.RAY_SWEEP_UPSCALE_DELAY_S, "down": S.RAY_SWEEP_DOWNSCALE_DELAY_S}
    out: dict[str, tuple[float | None, ...]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        key, eq, vals = part.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            raise ValueError(f"ray grid part {part!r} must be KEY=v1,v2 with KEY one of "
                             f"{', '.join(allowed)}")
        chosen: list[float | None] = []
        for v in (v.strip() for v in vals.split(",") if v.strip()):
            try:
                x: float | None = None if v == "unbounded" else float(v.removesuffix("s"))
            except ValueError:
                raise ValueError(f"ray grid value {v!r} for {key!r} is not a number") from None
            if x not in allowed[key]:
                known = ", ".join("unbounded" if a is None else f"{a:g}" for a in allowed[key])
                raise ValueError(f"ray grid value {v!r} for {key!r} is not in the protocol's "
                                 f"sweep ({known})")
            chosen.append(x)
        if not chosen:
            raise ValueError(f"ray grid part {part!r} gives no value")
        out[key] = tuple(chosen)
    return out


def _in_ray_grid(spec: PolicySpec, ray_grid: Mapping[str, Sequence[float | None]]) -> bool:
    for key, vals in ray_grid.items():
        where, param = RAY_GRID_KEYS[key]
        params = spec.routing_params if where == "routing" else spec.scaling_params
        if param not in params:
            continue
        want = {UNBOUNDED_ONGOING if v is None else v for v in vals}
        if params[param] not in want:
            return False
    return True


def family_grid(sc: Scenario, name: str, *, full: bool = False, limit: int | None = None,
                ray_grid: Mapping[str, Sequence[float | None]] | None = None) -> Family:
    """The configurations of family ``name`` on ``sc`` (module docstring, step 1). ``ray_grid``
    (:func:`parse_ray_grid`) keeps only the points of the Ray-like sweep with those values
    (with a ``max_ongoing`` key, chosen from the full sweep). ``limit`` keeps only the first
    ``limit`` swept configurations (tests and quick looks). The named configurations are
    always kept."""
    families = autoscaled_family_names(sc)
    if not families:
        raise ValueError(f"scenario {sc.name!r} does not autoscale (no policy scales with cato "
                         f"or ray); pick one of the '-autoscaled' scenarios")
    if name not in families:
        raise ValueError(f"unknown family {name!r} for scenario {sc.name!r}; known: "
                         f"{', '.join(families)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    base = sc.policies[name]
    named_specs = [base]
    if base.scaling == "cato":
        grid = list(cato_scaling_sweep(base).values())
    elif name == "ray":
        grid = list(ray_sweep(sc).values())
        if not full and not (ray_grid and "max_ongoing" in ray_grid):
            keep = {UNBOUNDED_ONGOING if m is None else m for m in RAY_REDUCED_MAX_ONGOING}
            keep.add(sc.engine_concurrency)
            grid = [s for s in grid if s.routing_params.get("max_ongoing_requests") in keep]
        if "ray-tuned" in sc.policies:
            named_specs.append(sc.policies["ray-tuned"])
    else:
        grid = list(ray_scaling_sweep(base).values())
    if ray_grid and base.scaling == "ray":
        grid = [s for s in grid if _in_ray_grid(s, ray_grid)]
    if limit is not None:
        grid = grid[:limit]
    by_key = {_config_key(s): s for s in grid}
    named: dict[str, tuple[str, ...]] = {}
    specs = list(grid)
    for ns in named_specs:
        k = _config_key(ns)
        if k not in by_key:
            by_key[k] = ns
            specs.append(ns)
        lab = by_key[k].label
        named[lab] = (*named.get(lab, ()), ns.label)
    return Family(name, is_baseline(base), tuple(specs), named)


def count_runs(families: Sequence[Family], num_seeds: int, num_rates: int) -> int:
    """Simulations needed: distinct configurations x seeds x rates."""
    keys = {_config_key(s) for f in families for s in f.specs}
    return len(keys) * num_seeds * num_rates


# ---- fronts, interpolation and dominance (pure) ------------------------------------------------
def pareto_front(attainment: Sequence[float] | np.ndarray,
                 cost: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points, in ascending attainment (and cost). A point is
    dropped when another has >= attainment and <= cost with one of them strict; exactly equal
    points are both kept; points with a non-finite cost or attainment are never on the front."""
    a = np.asarray(attainment, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if a.shape != c.shape:
        raise ValueError(f"attainment and cost differ in length: {a.shape} vs {c.shape}")
    ok = np.flatnonzero(np.isfinite(a) & np.isfinite(c))
    order = ok[np.lexsort((-a[ok], c[ok]))]        # cost ascending, attainment descending
    keep: list[int] = []
    best_a, best_c = -math.inf, math.inf
    for i in order:
        if a[i] > best_a:
            keep.append(int(i))
            best_a, best_c = float(a[i]), float(c[i])
        elif a[i] == best_a and c[i] == best_c:
            keep.append(int(i))
    return np.array(keep, dtype=np.int64)


def cost_at(front_attainment: Sequence[float] | np.ndarray,
            front_cost: Sequence[float] | np.ndarray, level: float) -> float:
    """The cost a front needs for attainment ``level`` (step 4): linear interpolation between
    its points, the cheapest point's cost below them, nan above them. The front is given in
    ascending attainment (as :func:`pareto_front` orders it)."""
    a = np.asarray(front_attainment, dtype=np.float64)
    c = np.asarray(front_cost, dtype=np.float64)
    if len(a) == 0 or level > a[-1] + 1e-12:
        return math.nan
    if level <= a[0]:
        return float(c[0])
    ua, first = np.unique(a, return_index=True)
    return float(np.interp(level, ua, c[first]))


def dominates(a1: float, c1: float, a2: float, c2: float) -> bool:
    """Whether (a1, c1) has >= attainment and <= cost than (a2, c2) (weak dominance)."""
    return a1 >= a2 and c1 <= c2


def verdict_at(cost_family: float, cost_baseline: float, rel_tol: float = 1e-9) -> Verdict | None:
    """How family F compares with the baseline at one attainment level (None: neither reaches
    it)."""
    fin_f, fin_b = math.isfinite(cost_family), math.isfinite(cost_baseline)
    if not fin_f and not fin_b:
        return None
    if not fin_b:
        return "only-family-reaches"
    if not fin_f:
        return "only-baseline-reaches"
    if abs(cost_family - cost_baseline) <= rel_tol * max(abs(cost_baseline), 1e-300):
        return "equal"
    return "cheaper" if cost_family < cost_baseline else "costlier"


@dataclass(frozen=True)
class Range:
    """Attainment levels ``[low, high]`` (on the comparison grid) with one verdict."""

    low: float
    high: float
    verdict: Verdict


def verdict_ranges(front_f: tuple[np.ndarray, np.ndarray], front_b: tuple[np.ndarray, np.ndarray],
                   step: float = 0.0025) -> list[Range]:
    """The verdicts of F's front against the baseline's on a grid of attainment levels from
    the lowest to the highest attainment on either front, merged into ranges."""
    lows = [float(f[0][0]) for f in (front_f, front_b) if len(f[0])]
    highs = [float(f[0][-1]) for f in (front_f, front_b) if len(f[0])]
    if not lows:
        return []
    lo, hi = min(lows), max(highs)
    levels = np.unique(np.concatenate([np.arange(lo, hi, step), [hi]]))
    out: list[Range] = []
    for x in levels:
        v = verdict_at(cost_at(*front_f, float(x)), cost_at(*front_b, float(x)))
        if v is None:
            continue
        if out and out[-1].verdict == v:
            out[-1] = Range(out[-1].low, float(x), v)
        else:
            out.append(Range(float(x), float(x), v))
    return out


# ---- the bootstrap -----------------------------------------------------------------------------
def resample_plan(num_seeds: int, num_resamples: int, seed: int = 0) -> np.ndarray:
    """``[num_resamples, num_seeds]`` seed indices, drawn with replacement (fixed rng); the same
    plan serves every configuration (paired)."""
    if num_seeds < 1 or num_resamples < 1:
        raise ValueError(f"need >= 1 seed and resample, got {num_seeds} and {num_resamples}")
    return np.random.default_rng(seed).integers(0, num_seeds, size=(num_resamples, num_seeds))


def point_estimates(att: np.ndarray, replica_s: np.ndarray, met: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean attainment and ratio-of-means cost per configuration from ``[config, seed]``
    arrays (cost inf where nothing was met)."""
    tot_met = met.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.where(tot_met > 0, replica_s.sum(axis=-1) / np.where(tot_met > 0, tot_met, 1),
                        math.inf)
    return att.mean(axis=-1), cost


def resampled_points(att: np.ndarray, replica_s: np.ndarray, met: np.ndarray,
                     idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates in every resample: ``[config, resample]`` attainment and cost."""
    return point_estimates(att[:, idx], replica_s[:, idx], met[:, idx])


# ---- the measurement ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    family: str
    spec: PolicySpec
    named: tuple[str, ...]
    attainment: float
    attainment_ci: tuple[float, float]
    cost: float
    cost_ci: tuple[float, float]
    per_seed_attainment: tuple[float, ...]
    per_seed_replica_s: tuple[float, ...]
    per_seed_met: tuple[int, ...]


@dataclass(frozen=True)
class CostRatio:
    """``family``'s cost over the best baseline's at one attainment level."""

    level: float
    ratio: float
    ci: tuple[float, float] | None
    computable_fraction: float
    family_cost: float
    baseline_cost: float
    family_config: str | None
    baseline_config: str | None
    #: the level is the best baseline front's highest attainment (re-read in each resample)
    at_baseline_top: bool = False


@dataclass(frozen=True)
class Comparison:
    family: str
    front_points_dominated: tuple[str, ...]
    front_points_not_dominated: tuple[str, ...]
    ranges: tuple[Range, ...]
    ratios: tuple[CostRatio, ...]

    @property
    def dominates(self) -> bool:
        """Every point of the best baseline front is matched or beaten by a point of F."""
        return not self.front_points_not_dominated


@dataclass(frozen=True)
class RateFronts:
    rate_rps: float
    points: tuple[Point, ...]
    fronts: Mapping[str, tuple[int, ...]]          # family -> indices into points
    baseline_front: tuple[int, ...]
    comparisons: Mapping[str, Comparison]


@dataclass(frozen=True)
class FrontsReport:
    scenario: str
    duration_s: float
    knee_rps: float | None
    seeds: tuple[int, ...]
    families: tuple[Family, ...]
    levels: tuple[float, ...]
    num_resamples: int
    confidence: float
    rates: tuple[RateFronts, ...]
    num_runs: int
    wall_s: float


def _cheapest_reaching(points: Sequence[Point], members: Sequence[int], level: float) -> str | None:
    """The cheapest configuration among ``members`` with attainment >= ``level``."""
    ok = [i for i in members if points[i].attainment >= level and math.isfinite(points[i].cost)]
    if not ok:
        return None
    return points[min(ok, key=lambda i: points[i].cost)].spec.label


def analyse(families: Sequence[Family], points: Sequence[Point], att: np.ndarray,
            replica_s: np.ndarray, met: np.ndarray, idx: np.ndarray, levels: Sequence[float],
            confidence: float = 0.95, min_computable: float = 0.95
            ) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...], dict[str, Comparison]]:
    """Steps 3-6 on measured points (``att``, ``replica_s``, ``met``: ``[point, seed]`` in
    the order of ``points``): each family's front, the best baseline front, and every
    non-baseline family's comparison with it."""
    a_hat = np.array([p.attainment for p in points])
    c_hat = np.array([p.cost for p in points])
    members = {f.name: [i for i, p in enumerate(points) if p.family == f.name] for f in families}
    base_members = [i for f in families if f.baseline for i in members[f.name]]

    def front_of(m: Sequence[int], a: np.ndarray, c: np.ndarray) -> list[int]:
        return [m[j] for j in pareto_front(a[m], c[m])]

    fronts = {f.name: tuple(front_of(members[f.name], a_hat, c_hat)) for f in families}
    bfront = tuple(front_of(base_members, a_hat, c_hat)) if base_members else ()
    comps: dict[str, Comparison] = {}
    if not bfront:
        return fronts, bfront, comps
    a_b, c_b = resampled_points(att, replica_s, met, idx)         # [point, resample]
    nb = idx.shape[0]
    b_fronts = [front_of(base_members, a_b[:, b], c_b[:, b]) for b in range(nb)]
    fb = (a_hat[list(bfront)], c_hat[list(bfront)])
    top = float(fb[0][-1])           # the highest attainment the best baseline front reaches
    for f in families:
        if f.baseline:
            continue
        m = members[f.name]
        fr = fronts[f.name]
        dom = tuple(points[i].spec.label for i in bfront
                    if any(dominates(a_hat[j], c_hat[j], a_hat[i], c_hat[i]) for j in m))
        notdom = tuple(points[i].spec.label for i in bfront if points[i].spec.label not in dom)
        ff = (a_hat[list(fr)], c_hat[list(fr)])
        ranges = tuple(verdict_ranges(ff, fb))
        # rows: the fixed levels, then the baseline's top (in each resample, that resample's)
        boot = np.full((len(levels) + 1, nb), math.nan)
        for b in range(nb):
            rf, rb = front_of(m, a_b[:, b], c_b[:, b]), b_fronts[b]
            for k, lv in enumerate([*levels, float(a_b[rb[-1], b]) if rb else math.nan]):
                cf = cost_at(a_b[rf, b], c_b[rf, b], lv)
                cb = cost_at(a_b[rb, b], c_b[rb, b], lv)
                if math.isfinite(cf) and math.isfinite(cb) and cb > 0:
                    boot[k, b] = cf / cb
        ratios = []
        for k, lv in enumerate([*levels, top]):
            cf, cb = cost_at(*ff, lv), cost_at(*fb, lv)
            ratio = cf / cb if math.isfinite(cf) and math.isfinite(cb) and cb > 0 else math.nan
            frac = float(np.isfinite(boot[k]).mean())
            ci = percentile_interval(boot[k], confidence) if frac >= min_computable else None
            ratios.append(CostRatio(lv, ratio, ci, frac, cf, cb,
                                    _cheapest_reaching(points, m, lv),
                                    _cheapest_reaching(points, base_members, lv),
                                    at_baseline_top=k == len(levels)))
        comps[f.name] = Comparison(f.name, dom, notdom, ranges, tuple(ratios))
    return fronts, bfront, comps


def rate_fronts(rate_rps: float, families: Sequence[Family], att: np.ndarray,
                replica_s: np.ndarray, met: np.ndarray, idx: np.ndarray,
                levels: Sequence[float], confidence: float = 0.95) -> RateFronts:
    """Points with their intervals and :func:`analyse` for one rate; the ``[config, seed]``
    arrays are in the order of ``families`` and their specs."""
    members = [(f, s) for f in families for s in f.specs]
    if att.shape != (len(members), idx.shape[1]):
        raise ValueError(f"expected {len(members)} configurations x {idx.shape[1]} seeds, got "
                         f"{att.shape}")
    a_hat, c_hat = point_estimates(att, replica_s, met)
    a_bs, c_bs = resampled_points(att, replica_s, met, idx)
    points = tuple(
        Point(f.name, s, f.named.get(s.label, ()), float(a_hat[i]),
              percentile_interval(a_bs[i], confidence), float(c_hat[i]),
              percentile_interval(c_bs[i], confidence),
              tuple(float(x) for x in att[i]), tuple(float(x) for x in replica_s[i]),
              tuple(int(x) for x in met[i]))
        for i, (f, s) in enumerate(members))
    fronts, bfront, comps = analyse(families, points, att, replica_s, met, idx, levels,
                                    confidence)
    return RateFronts(rate_rps, points, fronts, bfront, comps)


def measure_fronts(sc: Scenario, families: Sequence[Family], seeds: Sequence[int],
                   rates: Sequence[float], *, levels: Sequence[float] = DEFAULT_LEVELS,
                   num_resamples: int = 1000, bootstrap_seed: int = 0, confidence: float = 0.95,
                   min_seeds: int = 5,
                   on_run: Callable[[str, float, int], None] | None = None) -> FrontsReport:
    """Steps 2-6 for every rate: simulate every distinct configuration at every seed (streams
    built once per (rate, seed), shared by every configuration), then :func:`analyse`."""
    if len(seeds) < min_seeds:
        raise ValueError(f"Pareto fronts need >= {min_seeds} seeds, got {len(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    if not families:
        raise ValueError("no family to measure")
    if not rates or any(not r > 0 for r in rates):
        raise ValueError(f"rates must be > 0 req/s, got {list(rates)}")
    if any(not 0.0 < lv <= 1.0 for lv in levels):
        raise ValueError(f"attainment levels must be in (0, 1], got {list(levels)}")
    t0 = time.perf_counter()
    specs: dict[tuple[object, ...], PolicySpec] = {}
    for f in families:
        for s in f.specs:
            specs.setdefault(_config_key(s), s)
    idx = resample_plan(len(seeds), num_resamples, bootstrap_seed)
    num_runs = 0
    out: list[RateFronts] = []
    for rate in rates:
        res: dict[tuple[object, ...], list[tuple[float, float, int]]] = {k: [] for k in specs}
        for seed in seeds:
            stream = build_stream_for(sc, rate, seed)
            for k, spec in specs.items():
                if on_run is not None:
                    on_run(spec.label, rate, seed)
                row, _ = run_spec(sc, spec, rate, seed, stream=stream)
                res[k].append((float(row["attainment"]), float(row["replica_seconds"] or 0.0),
                               int(row["num_met"])))
                num_runs += 1
        members = [(f, s) for f in families for s in f.specs]
        att = np.array([[x[0] for x in res[_config_key(s)]] for _, s in members])
        rs = np.array([[x[1] for x in res[_config_key(s)]] for _, s in members])
        met = np.array([[x[2] for x in res[_config_key(s)]] for _, s in members])
        out.append(rate_fronts(rate, families, att, rs, met, idx, levels, confidence))
    return FrontsReport(sc.name, sc.duration_s, sc.knee_rps, tuple(seeds), tuple(families),
                        tuple(levels), num_resamples, confidence, tuple(out), num_runs,
                        time.perf_counter() - t0)


# ---- JSON --------------------------------------------------------------------------------------
def _num(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def _pair(x: tuple[float, float] | None) -> list[float | None] | None:
    return None if x is None else [_num(x[0]), _num(x[1])]


def grids_json(full: bool, ray_grid: Mapping[str, Sequence[float | None]] | None = None
               ) -> dict[str, object]:
    """The swept values of every scaler, as the JSON states them (``restricted_to``: the
    ``ray_grid`` the Ray-like sweep was cut to, if any)."""
    from cato.sim import scenarios as S

    ray_mo: Sequence[int | None] = S.RAY_SWEEP_MAX_ONGOING if full else RAY_REDUCED_MAX_ONGOING
    return {
        "cato": {"replicas_per_violation": list(S.CATO_SWEEP_REPLICAS_PER_VIOLATION),
                 "max_exceeded_times": list(S.CATO_SWEEP_MAX_EXCEEDED_TIMES),
                 "interval_s": list(S.CATO_SWEEP_INTERVAL_S)},
        "ray": {"max_ongoing_requests": [("unbounded" if m is None else m) for m in ray_mo]
                + ([] if full else ["engine_concurrency"]),
                "target_ongoing_requests": list(S.RAY_SWEEP_TARGET_ONGOING),
                "upscale_delay_s": list(S.RAY_SWEEP_UPSCALE_DELAY_S),
                "downscale_delay_s": list(S.RAY_SWEEP_DOWNSCALE_DELAY_S), "full": full,
                "restricted_to": None if not ray_grid else {
                    k: [("unbounded" if v is None else v) for v in vals]
                    for k, vals in ray_grid.items()}},
    }


def goal_verdict(q: CostRatio, goal: float = GOAL_RATIO) -> str | None:
    """Whether a cost ratio meets the goal (<= ``goal``): ``met`` / ``not met`` when its whole
    interval is on one side, ``inconclusive`` when the interval spans the goal, with
    ``(point estimate only)`` where no interval could be given; None without a ratio."""
    if not math.isfinite(q.ratio):
        return None
    if q.ci is None:
        return ("met" if q.ratio <= goal else "not met") + " (point estimate only)"
    if q.ci[1] <= goal:
        return "met"
    if q.ci[0] > goal:
        return "not met"
    return "inconclusive"


def report_json(rep: FrontsReport, *, full: bool = False,
                ray_grid: Mapping[str, Sequence[float | None]] | None = None,
                grids: Mapping[str, object] | None = None) -> dict[str, object]:
    """The ``cato fronts --json`` document: every point (family, configuration, attainment and
    cost with their intervals, per-seed values), each family's front, the best baseline front,
    and per non-baseline family the dominance statements, verdict ranges and cost ratios."""
    rates: list[dict[str, object]] = []
    for rf in rep.rates:
        on_front = {i for fr in rf.fronts.values() for i in fr}
        pts = [{"family": p.family, "label": p.spec.label, "named": list(p.named),
                "baseline": next(f.baseline for f in rep.families if f.name == p.family),
                "config": describe_config(p.spec), "attainment": _num(p.attainment),
                "attainment_ci": _pair(p.attainment_ci),
                "replica_s_per_met": _num(p.cost), "replica_s_per_met_ci": _pair(p.cost_ci),
                "on_family_front": i in on_front, "on_best_baseline_front": i in rf.baseline_front,
                "per_seed": {"attainment": [_num(x) for x in p.per_seed_attainment],
                             "replica_seconds": [_num(x) for x in p.per_seed_replica_s],
                             "num_met": list(p.per_seed_met)}}
               for i, p in enumerate(rf.points)]

        def front(ix: Sequence[int]) -> list[dict[str, object]]:
            return [{"family": rf.points[i].family, "label": rf.points[i].spec.label,
                     "attainment": _num(rf.points[i].attainment),
                     "replica_s_per_met": _num(rf.points[i].cost)} for i in ix]

        comps = {name: {
            "dominates_best_baseline_front": c.dominates,
            "baseline_front_points_dominated": list(c.front_points_dominated),
            "baseline_front_points_not_dominated": list(c.front_points_not_dominated),
            "ranges": [{"from_attainment": _num(r.low), "to_attainment": _num(r.high),
                        "verdict": r.verdict} for r in c.ranges],
            "cost_ratio_at": [{"attainment": _num(q.level), "ratio": _num(q.ratio),
                               "at_best_baseline_top": q.at_baseline_top,
                               "ci": _pair(q.ci),
                               "computable_fraction": _num(q.computable_fraction),
                               "family_cost": _num(q.family_cost),
                               "baseline_cost": _num(q.baseline_cost),
                               "cheapest_family_config_reaching": q.family_config,
                               "cheapest_baseline_config_reaching": q.baseline_config,
                               "meets_goal": (None if not math.isfinite(q.ratio)
                                              else bool(q.ratio <= GOAL_RATIO)),
                               "goal_verdict": goal_verdict(q)}
                              for q in c.ratios]} for name, c in rf.comparisons.items()}
        rates.append({"rate_rps": rf.rate_rps,
                      "fraction_of_knee": _num(rf.rate_rps / rep.knee_rps) if rep.knee_rps
                      else None,
                      "points": pts,
                      "fronts": {k: front(v) for k, v in rf.fronts.items()},
                      "best_baseline_front": front(rf.baseline_front),
                      "comparisons": comps})
    return {"scenario": rep.scenario, "duration_s": rep.duration_s, "knee_rps": rep.knee_rps,
            "seeds": list(rep.seeds), "levels": list(rep.levels),
            "num_resamples": rep.num_resamples, "confidence": rep.confidence,
            "goal_ratio": GOAL_RATIO, "num_runs": rep.num_runs, "wall_s": round(rep.wall_s, 1),
            "families": [{"name": f.name, "baseline": f.baseline, "num_configs": len(f.specs),
                          "named": {k: list(v) for k, v in f.named.items()}}
                         for f in rep.families],
            "grids": dict(grids) if grids is not None else grids_json(full, ray_grid),
            "rates": rates}


def _spec_from_json(label: str, config: Mapping[str, Any]) -> PolicySpec:
    routing = {k: (UNBOUNDED_ONGOING if v == "unbounded" else v)
               for k, v in config["routing_params"].items()}
    return PolicySpec(label, config["routing"], config["scaling"], routing,
                      dict(config["scaling_params"]))


def reanalyse(doc: Mapping[str, Any], *, levels: Sequence[float] | None = None,
              num_resamples: int | None = None, confidence: float | None = None,
              bootstrap_seed: int = 0) -> FrontsReport:
    """The report of a saved ``cato fronts --json`` document recomputed from its per-seed
    values (no simulation): e.g. cost ratios at other attainment levels. Values are read as
    saved (6 decimals)."""
    try:
        seeds = tuple(int(x) for x in doc["seeds"])
        lv = tuple(levels if levels is not None else doc["levels"])
        nres = int(num_resamples if num_resamples is not None else doc["num_resamples"])
        conf = float(confidence if confidence is not None else doc["confidence"])
        fam_meta = {f["name"]: f for f in doc["families"]}
        out: list[RateFronts] = []
        families: tuple[Family, ...] = ()
        for r in doc["rates"]:
            specs: dict[str, list[PolicySpec]] = {n: [] for n in fam_meta}
            rows: list[Mapping[str, Any]] = []
            for p in r["points"]:
                specs[p["family"]].append(_spec_from_json(p["label"], p["config"]))
                rows.append(p)
            families = tuple(
                Family(n, bool(m["baseline"]), tuple(specs[n]),
                       {k: tuple(v) for k, v in m["named"].items()})
                for n, m in fam_meta.items())
            order = {n: i for i, n in enumerate(fam_meta)}
            rows.sort(key=lambda p: order[p["family"]])    # stable: the specs' order
            att = np.array([[float(x) for x in p["per_seed"]["attainment"]] for p in rows])
            rs = np.array([[float(x) for x in p["per_seed"]["replica_seconds"]] for p in rows])
            met = np.array([[int(x) for x in p["per_seed"]["num_met"]] for p in rows])
            idx = resample_plan(len(seeds), nres, bootstrap_seed)
            out.append(rate_fronts(float(r["rate_rps"]), families, att, rs, met, idx, lv, conf))
        return FrontsReport(str(doc["scenario"]), float(doc["duration_s"]), doc.get("knee_rps"),
                            seeds, families, lv, nres, conf, tuple(out),
                            int(doc.get("num_runs", 0)), float(doc.get("wall_s", 0.0)))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a `cato fronts --json` document: missing or bad {exc}") from None
