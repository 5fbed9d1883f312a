"""The capacity planner behind ``cato plan``: how many replicas of each model hold a target SLA
attainment at a workload's rate, at 1.5x and 2x it, and under which routing policy.

Inputs (:class:`PlanWorkload`): a deployment's tasks (SLAs already scaled) and models, and either
a team's own trace (:mod:`cato.sim.user_trace`) or a Poisson process at a stated rate. The rate
factors (default 1, 1.5, 2) scale the trace **in time** (each arrival at ``t / factor``: the same
requests, ``factor`` times as fast) or scale the Poisson rate (``factor x rate`` for the same
duration).

Search (:func:`plan_policy`), for one policy, the factors in ascending order and seeds
``s_1..s_n`` (n >= 3; each seed an independent stream for Poisson arrivals, or independent draws
of the non-user-facing nodes for a trace):

1. **Start** from one replica of every model some task uses (models no task calls get 0 and are
   left out of the simulation); for every factor after the first, start from the previous
   factor's plan (*warm start*: a faster stream is assumed never to need fewer replicas of any
   model, so the plans are monotone in the rate by construction).
2. **Grow.** Simulate the counts at every seed; the attainment is the mean over the seeds of
   each run's ``attainment`` (met / arrived, :mod:`cato.core.metrics`). While it is below the
   target, add one replica to the model whose calls miss most: every request that misses its
   SLA counts one miss against each model its task's LLM nodes call, summed over the seeds (ties:
   the model with fewer replicas, then by name); models at ``max_replicas`` are skipped.
3. **Trim.** Once the target holds, try each model one replica lower (never below 1, nor below
   its warm-start count) and keep any removal that still holds the target, until none does: the
   greedy growth may overshoot a model whose misses were caused by another.
4. **Bound.** When every model that misses is at ``max_replicas`` and the target still fails, the
   plan is *infeasible* at that factor (and, by the warm start, at every higher one).

The result is the fewest replicas the greedy search finds, not a proven minimum (the search visits
one path through the lattice of counts); with one model it is exact up to the simulation's noise.
Cost: at most ``n_seeds x (sum over models of (max_replicas - 1) + models x (trims + 1))``
simulations per policy, memoised per (policy, factor, counts, seed).

:func:`plan` runs the search per policy and names the winner: the policy with the fewest total
replicas at the base rate, then at each higher factor in turn, then the higher mean attainment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cato.core.task import NodeKind, TaskType
from cato.sim.config import ModelDeployment
from cato.sim.runner import run_spec
from cato.sim.scenarios import Scenario, user_scenario
from cato.sim.user_trace import TraceRow, build_user_trace_stream, trace_rate_rps
from cato.sim.workload import TaskArrival

DEFAULT_POLICIES = ("cato-plus", "cato", "least_outstanding")
DEFAULT_FACTORS = (1.0, 1.5, 2.0)
MIN_SEEDS = 3

#: (policy, factor, seed) were simulated at these counts; called after every simulation
OnRun = Callable[[str, float, Mapping[str, int], int], None]


@dataclass(frozen=True)
class PlanWorkload:
    """What is planned for: tasks, models (their replica counts are ignored), and arrivals.

    Exactly one of ``trace`` (rows from :func:`~cato.sim.user_trace.load_user_trace`) and
    ``rate_rps`` (Poisson arrivals with ``mix`` for ``duration_s`` seconds) is given."""

    name: str
    tasks: Mapping[str, TaskType]
    deployments: tuple[ModelDeployment, ...]
    mix: Mapping[str, float]
    trace: Sequence[TraceRow] | None = None
    rate_rps: float | None = None
    duration_s: float = 60.0
    engine_concurrency: int = 32

    def __post_init__(self) -> None:
        if (self.trace is None) == (self.rate_rps is None):
            raise ValueError("give either a trace or a rate, not both or neither")
        if self.rate_rps is not None and not (math.isfinite(self.rate_rps)
                                              and self.rate_rps > 0):
            raise ValueError(f"rate must be a finite number > 0 req/s, got {self.rate_rps}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"duration must be > 0 s, got {self.duration_s}")
        if self.trace is not None and not self.trace:
            raise ValueError("the trace has no rows")

    @property
    def base_rate_rps(self) -> float:
        """The rate that factor 1 stands for: the trace's mean rate, or ``rate_rps``."""
        if self.trace is not None:
            return trace_rate_rps(list(self.trace))
        assert self.rate_rps is not None
        return self.rate_rps

    def models_used(self) -> dict[str, set[str]]:
        """Task name -> the models its LLM nodes call."""
        return {name: {n.model for n in t.nodes if n.kind is NodeKind.LLM and n.model}
                for name, t in self.tasks.items()}


@dataclass(frozen=True)
class RatePlan:
    """One policy's plan at one rate factor."""

    factor: float
    rate_rps: float
    replicas: dict[str, int]
    attainment: float               # mean over seeds at ``replicas`` (nan when infeasible)
    per_seed: tuple[float, ...]
    feasible: bool
    evaluations: int                # distinct replica vectors simulated for this factor

    @property
    def total(self) -> int:
        return sum(self.replicas.values())


@dataclass(frozen=True)
class PolicyPlan:
    policy: str
    rates: tuple[RatePlan, ...]


@dataclass(frozen=True)
class CapacityPlan:
    target: float
    seeds: tuple[int, ...]
    max_replicas: int
    base_rate_rps: float
    source: str                     # "trace" or "poisson"
    policies: tuple[PolicyPlan, ...]
    winner: str | None              # None when no policy is feasible at the base rate


class _Evaluator:
    """Attainment and per-model misses of (policy, factor, counts, seed), simulated once."""

    def __init__(self, wl: PlanWorkload, on_run: OnRun | None) -> None:
        self.wl = wl
        self.on_run = on_run
        self.used = wl.models_used()
        self._cache: dict[tuple[str, float, tuple[tuple[str, int], ...], int],
                          tuple[float, dict[str, int]]] = {}

    def scenario(self, counts: Mapping[str, int], factor: float) -> Scenario:
        deps = tuple(replace(d, initial_replicas=counts[d.model], min_replicas=counts[d.model],
                             max_replicas=counts[d.model])
                     for d in self.wl.deployments if counts.get(d.model, 0) > 0)
        span = self.wl.duration_s if self.wl.trace is None else \
            max(1e-3, self.wl.trace[-1].arrival_s / factor)
        return user_scenario(self.wl.name, self.wl.tasks, deps, mix=self.wl.mix,
                             arrival="poisson", duration_s=span,
                             rates_rps=(self.wl.base_rate_rps * factor,),
                             engine_concurrency=self.wl.engine_concurrency)

    def stream(self, factor: float, seed: int) -> list[TaskArrival] | None:
        if self.wl.trace is None:
            return None         # run_spec draws the Poisson stream of (rate, seed)
        rows = [replace(r, arrival_s=r.arrival_s / factor) for r in self.wl.trace]
        return build_user_trace_stream(rows, self.wl.tasks, np.random.default_rng(seed))

    def run(self, policy: str, factor: float, counts: Mapping[str, int], seed: int
            ) -> tuple[float, dict[str, int]]:
        key = (policy, factor, tuple(sorted(counts.items())), seed)
        if key not in self._cache:
            sc = self.scenario(counts, factor)
            if policy not in sc.policies:
                raise ValueError(f"unknown policy {policy!r}; known: "
                                 f"{', '.join(sorted(sc.policies))}")
            row, res = run_spec(sc, sc.policies[policy], self.wl.base_rate_rps * factor, seed,
                                stream=self.stream(factor, seed))
            misses = {m: 0 for m in counts}
            for r in res.records:
                if not r.met:
                    for m in self.used.get(r.task, ()):
                        misses[m] = misses.get(m, 0) + 1
            self._cache[key] = (float(row["attainment"]), misses)
            if self.on_run is not None:
                self.on_run(policy, factor, counts, seed)
        return self._cache[key]

    def mean(self, policy: str, factor: float, counts: Mapping[str, int],
             seeds: Sequence[int]) -> tuple[float, tuple[float, ...], dict[str, int]]:
        atts, total = [], {m: 0 for m in counts}
        for s in seeds:
            a, miss = self.run(policy, factor, counts, s)
            atts.append(a)
            for m, k in miss.items():
                total[m] = total.get(m, 0) + k
        return float(np.mean(atts)), tuple(atts), total


def plan_policy(wl: PlanWorkload, policy: str, *, target: float, seeds: Sequence[int],
                max_replicas: int, factors: Sequence[float] = DEFAULT_FACTORS,
                on_run: OnRun | None = None, _ev: _Evaluator | None = None) -> PolicyPlan:
    """Steps 1-4 of the module docstring for one policy."""
    _check(target, seeds, max_replicas, factors)
    ev = _ev or _Evaluator(wl, on_run)
    used = sorted({m for ms in ev.used.values() for m in ms})
    if not used:
        raise ValueError("no task calls an LLM model: nothing to plan")
    known = {d.model for d in wl.deployments}
    missing = [m for m in used if m not in known]
    if missing:
        raise ValueError(f"tasks call model(s) {', '.join(missing)} that no deployment serves")
    floor = {m: 1 for m in used}
    out: list[RatePlan] = []
    for f in sorted(factors):
        counts = dict(floor)
        tried: set[tuple[tuple[str, int], ...]] = set()

        def score(c: Mapping[str, int], f: float = f) -> tuple[float, tuple[float, ...],
                                                               dict[str, int]]:
            tried.add(tuple(sorted(c.items())))
            return ev.mean(policy, f, c, seeds)

        att, per, miss = score(counts)
        feasible = att >= target
        while not feasible:
            grow = [m for m in used if counts[m] < max_replicas and miss.get(m, 0) > 0] or \
                [m for m in used if counts[m] < max_replicas]
            if not grow:
                break
            pick = min(grow, key=lambda m: (-miss.get(m, 0), counts[m], m))
            counts[pick] += 1
            att, per, miss = score(counts)
            feasible = att >= target
        if feasible:
            trimmed = True
            while trimmed:
                trimmed = False
                for m in sorted(used, key=lambda m: (-counts[m], m)):
                    if counts[m] <= floor[m]:
                        continue
                    lower = {**counts, m: counts[m] - 1}
                    a2, p2, m2 = score(lower)
                    if a2 >= target:
                        counts, att, per, miss, trimmed = lower, a2, p2, m2, True
                        break
        out.append(RatePlan(f, wl.base_rate_rps * f, dict(counts),
                            att if feasible else math.nan, per, feasible, len(tried)))
        floor = counts
    return PolicyPlan(policy, tuple(out))


def plan(wl: PlanWorkload, *, target: float, seeds: Sequence[int], max_replicas: int,
         policies: Sequence[str] = DEFAULT_POLICIES, factors: Sequence[float] = DEFAULT_FACTORS,
         on_run: OnRun | None = None) -> CapacityPlan:
    """The plan of every policy and the winner (module docstring)."""
    _check(target, seeds, max_replicas, factors)
    if not policies:
        raise ValueError("no policy to plan with")
    ev = _Evaluator(wl, on_run)
    plans = tuple(plan_policy(wl, p, target=target, seeds=seeds, max_replicas=max_replicas,
                              factors=factors, _ev=ev) for p in dict.fromkeys(policies))
    return CapacityPlan(target, tuple(seeds), max_replicas, wl.base_rate_rps,
                        "trace" if wl.trace is not None else "poisson", plans, _winner(plans))


def _winner(plans: Sequence[PolicyPlan]) -> str | None:
    def key(p: PolicyPlan) -> tuple[Any, ...]:
        totals = tuple(r.total if r.feasible else math.inf for r in p.rates)
        return (*totals, -(p.rates[0].attainment if p.rates[0].feasible else 0.0))
    ok = [p for p in plans if p.rates and p.rates[0].feasible]
    return min(ok, key=key).policy if ok else None


def _check(target: float, seeds: Sequence[int], max_replicas: int,
           factors: Sequence[float]) -> None:
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    if len(seeds) < MIN_SEEDS or len(set(seeds)) != len(seeds):
        raise ValueError(f"a plan needs >= {MIN_SEEDS} distinct seeds, got {list(seeds)}")
    if max_replicas < 1:
        raise ValueError(f"max_replicas must be >= 1, got {max_replicas}")
    if not factors or any(not (math.isfinite(f) and f > 0) for f in factors):
        raise ValueError(f"rate factors must be finite and > 0, got {list(factors)}")


def plan_json(p: CapacityPlan) -> dict[str, Any]:
    """The JSON document of ``cato plan --json``: ``target``, ``seeds``, ``max_replicas``,
    ``base_rate_rps``, ``source``, ``winner``, and per policy its ``rates``: ``factor``,
    ``rate_rps``, ``replicas`` (model -> count), ``total_replicas``, ``attainment`` (mean over
    seeds; null when infeasible), ``per_seed``, ``feasible``, ``evaluations``."""
    return {
        "target": p.target, "seeds": list(p.seeds), "max_replicas": p.max_replicas,
        "base_rate_rps": p.base_rate_rps, "source": p.source, "winner": p.winner,
        "policies": [{"policy": pp.policy, "rates": [
            {"factor": r.factor, "rate_rps": r.rate_rps, "replicas": dict(r.replicas),
             "total_replicas": r.total,
             "attainment": None if math.isnan(r.attainment) else r.attainment,
             "per_seed": list(r.per_seed), "feasible": r.feasible,
             "evaluations": r.evaluations} for r in pp.rates]} for pp in p.policies],
    }
