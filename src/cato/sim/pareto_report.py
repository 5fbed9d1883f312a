"""Autoscaling Pareto fronts measured and reported (``cato fronts``): every configuration of the
families run at every seed and rate, the points with their bootstrap intervals, each family's
front against the best baseline front (:func:`analyse`: dominance, verdict ranges, cost ratios),
and the ``cato fronts --json`` document (:func:`report_json`, :func:`reanalyse`). The method
(steps 1-6) is in :mod:`cato.sim.pareto`'s docstring."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cato.sim.capacity import percentile_interval
from cato.sim.pareto import (
    RAY_REDUCED_MAX_ONGOING, Family, Range, _config_key, cost_at, dominates, pareto_front,
    point_estimates, resample_plan, resampled_points, verdict_ranges,
)
from cato.sim.policies import UNBOUNDED_ONGOING, PolicySpec, describe_config
from cato.sim.runner import run_spec
from cato.sim.scenarios import Scenario, build_stream_for

DEFAULT_LEVELS = (0.85, 0.9, 0.95)
#: the issue's goal: at equal attainment, CATO needs <= 0.8 x the best baseline's cost
GOAL_RATIO = 0.8


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
    from cato.sim import sweeps as S

    ray_mo: Sequence[int | None] = S.RAY_SWEEP_MAX_ONGOING if full else RAY_REDUCED_MAX_ONGOING
    return {
        "cato": {"replicas_per_violation": list(S.CATO_SWEEP_REPLICAS_PER_VIOLATION),
                 "max_exceeded_times": list(S.CATO_SWEEP_MAX_EXCEEDED_TIMES),
                 "interval_s": list(S.CATO_SWEEP_INTERVAL_S)},
        "proactive": {"headroom": list(S.PROACTIVE_SWEEP_HEADROOM),
                      "interval_s": list(S.PROACTIVE_SWEEP_INTERVAL_S),
                      "scale_up_by": list(S.PROACTIVE_SWEEP_SCALE_UP_BY)},
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
