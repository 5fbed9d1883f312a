"""Autoscaling as Pareto fronts: SLA attainment against replica-seconds per met request over
each scaler's parameter sweep (BENCHMARK_PROTOCOL.md section 4), ``cato fronts``.

Method, for one autoscaled scenario at a fixed rate and seeds ``s_1..s_n`` (n >= 5):

1. **Families.** A family is one router + scaler pair with its scaler's parameters swept
   (:func:`family_grid`): ``cato`` and ``cato-plus`` (and ``pow2+cato``, ``oracle+cato``) over
   the CATO sweep of :func:`~cato.sim.sweeps.cato_scaling_sweep` (18 configurations);
   ``cato-plus-proactive`` over :func:`~cato.sim.sweeps.proactive_scaling_sweep` (12); ``ray``
   over the protocol's Ray-like sweep (:func:`~cato.sim.sweeps.ray_sweep`; by default a
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
   (:func:`~cato.sim.policies.is_baseline`).
4. **Cost at an attainment level** (:func:`cost_at`): on a front sorted by attainment, linear
   interpolation between adjacent points; below the front's lowest attainment the cost of its
   cheapest point (a configuration that reaches more); above its highest, not reachable (nan).
   The cost ratio at level ``a`` is ``cost_F(a) / cost_best_baseline(a)`` (the issue's goal:
   <= 0.8, "at equal attainment >= 20 % fewer replica-seconds"), at fixed levels and at the
   highest attainment the best baseline front reaches (where a baseline exists at all).
5. **Dominance** (:func:`~cato.sim.pareto_report.analyse`, on the point estimates): for each
   point of the best baseline front, whether a point of family F has >= attainment and <= cost;
   and, on a grid of attainment levels, where F's front is cheaper, costlier, or where only one
   of the two reaches the level.
6. **Intervals.** ``num_resamples`` joint resamples of the seeds (the same index matrix for
   every configuration, so the pairing is kept). Each point's attainment and cost intervals are
   the 2.5th/97.5th percentiles of its resampled values; each cost ratio is recomputed in every
   resample with the fronts rebuilt from that resample's points (the choice of configuration,
   and the baseline's highest attainment, are resampled too). A ratio's interval is given only
   when both fronts reach the level in at least ``min_computable`` of the resamples.

Cost: (configurations, deduplicated) x seeds x rates simulations, estimated up front by
:func:`count_runs`; the analysis is O(resamples x configurations log configurations).

This module holds the families and their grids (step 1), the fronts, interpolation and dominance
(steps 3-5, pure) and the paired bootstrap's arithmetic; the measurement, the analysis and the
``cato fronts --json`` document are in :mod:`cato.sim.pareto_report`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np

from cato.sim.policies import UNBOUNDED_ONGOING, PolicySpec, is_baseline
from cato.sim.scenarios import Scenario
from cato.sim.sweeps import (cato_scaling_sweep, proactive_scaling_sweep, ray_scaling_sweep,
                             ray_sweep)

#: ``max_ongoing_requests`` of the reduced default Ray grid (plus the engine concurrency).
RAY_REDUCED_MAX_ONGOING: tuple[int | None, ...] = (4, 16, None)
DEFAULT_FAMILIES = ("cato", "cato-plus", "cato-plus-proactive", "ray")

Verdict = Literal["cheaper", "costlier", "equal", "only-family-reaches", "only-baseline-reaches"]


# ---- families and their grids ------------------------------------------------------------------
def _scaler_defaults(name: str) -> dict[str, object]:
    from cato.core.scaling.base import ScalingPolicy
    from cato.core.scaling.policies import CatoScaling, RayServeLikeScaling
    from cato.core.scaling.proactive import ProactiveScaling

    classes: dict[str, tuple[type[ScalingPolicy], ...]] = {
        "cato": (CatoScaling,), "ray": (RayServeLikeScaling,),
        "proactive": (CatoScaling, ProactiveScaling)}   # its own on top of Algorithm 2's
    return {k: p.default for cls in classes.get(name, ())
            for k, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _config_key(spec: PolicySpec) -> tuple[object, ...]:
    """What a configuration runs, with the scaler's defaults filled in, so that ``ray-tuned``
    and the point of the Ray sweep that spells out its delays are one configuration."""
    scaling = {**_scaler_defaults(spec.scaling), **spec.scaling_params}
    return (spec.routing, tuple(sorted(spec.routing_params.items())), spec.scaling,
            tuple(sorted(scaling.items())))


def autoscaled_family_names(sc: Scenario) -> list[str]:
    """The families ``sc`` has: its policies that scale with ``cato``, ``proactive`` or ``ray``
    (``ray-tuned``
    is a point of the ``ray`` family, not a family)."""
    return [name for name, p in sc.policies.items()
            if p.scaling in ("cato", "proactive", "ray") and name != "ray-tuned"]


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
    from cato.sim import sweeps as S

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
    if base.scaling == "proactive":
        grid = list(proactive_scaling_sweep(base).values())
    elif base.scaling == "cato":
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
