"""Tenants in the simulator: tagged request streams, per-key rate limits, per-tenant attainment,
and the ``tenants`` scenario (issue 18: one tenant floods, does the other keep its SLAs?).

A :class:`TenantLoad` is one tenant's Poisson stream (its own rate, the scenario's task mix),
its fair-share weight and guaranteed share (:mod:`cato.core.fairness`) and an optional
token-bucket rate limit modelled as the gateway applies it (:mod:`cato.gateway.auth`: a bucket
of ``burst`` requests refilled at ``requests_per_s``; a request finding it empty is refused with
429). :func:`tenant_stream` draws each tenant's stream from its own seed -- (seed, the tenant's
name) -- so a tenant's requests are identical whoever else is present (common random numbers:
"B alone" and "B beside A" see the same B). Requests a rate limit refuses never reach the
simulator and count as misses for their tenant (:func:`tenant_attainment`).

:func:`compare_tenants` runs the scenario's four cases over seeds: B alone; A + B under CATO
without fairness; A + B with A rate-limited to its share (no fairness); A + B with fair shares;
and reports each tenant's attainment as a mean with a 95 % Student-t interval over seeds.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from cato.core.catalog import single_step_tasks
from cato.core.coefficients import A100_LLAMA7B
from cato.core.fairness import FairnessPolicy, TenantShare
from cato.core.records import RequestRecord
from cato.core.task import TaskType
from cato.sim.arrivals import poisson
from cato.sim.config import ModelDeployment, SimConfig
from cato.sim.simulator import Simulator
from cato.sim.workload import MIX_B, TaskArrival, build_stream


@dataclass(frozen=True, slots=True)
class TenantLoad:
    """One tenant: its name, its arrival rate (req/s, Poisson), its fair-share ``weight`` and
    ``guaranteed_share``, and an optional per-key rate limit (``limit_rps`` refilling a bucket
    of ``limit_burst`` requests, default ``max(1, ceil(limit_rps))``, as at the gateway)."""

    name: str
    rate_rps: float
    weight: float = 1.0
    guaranteed_share: float = 0.0
    limit_rps: float | None = None
    limit_burst: int | None = None

    def __post_init__(self) -> None:
        if not self.rate_rps > 0:
            raise ValueError(f"tenant {self.name!r}: rate_rps must be > 0, got {self.rate_rps}")
        if self.limit_rps is not None and not self.limit_rps > 0:
            raise ValueError(f"tenant {self.name!r}: limit_rps must be > 0, got "
                             f"{self.limit_rps}")
        if self.limit_burst is not None and self.limit_burst < 1:
            raise ValueError(f"tenant {self.name!r}: limit_burst must be >= 1, got "
                             f"{self.limit_burst}")
        TenantShare(self.weight, self.guaranteed_share)   # validates both


def fairness_policy(loads: Sequence[TenantLoad]) -> FairnessPolicy:
    """The fair-share policy of ``loads``' weights and guaranteed shares."""
    return FairnessPolicy({t.name: TenantShare(t.weight, t.guaranteed_share) for t in loads})


def tenant_stream(loads: Sequence[TenantLoad], tasks: Mapping[str, TaskType],
                  mix: Mapping[str, float], duration_s: float, seed: int) -> list[TaskArrival]:
    """Every tenant's stream, merged in arrival order and numbered 0.. (ids), each arrival
    tagged with its tenant. Tenant ``t``'s draws come from ``SeedSequence([seed, crc32(t)])``
    alone."""
    names = [t.name for t in loads]
    if len(set(names)) != len(names):
        raise ValueError(f"tenant names must be unique, got {names}")
    merged: list[TaskArrival] = []
    for t in loads:
        ss = np.random.SeedSequence([seed, zlib.crc32(t.name.encode())])
        arr_rng, stream_rng = (np.random.default_rng(s) for s in ss.spawn(2))
        times = poisson(t.rate_rps, duration_s, arr_rng)
        merged.extend(replace(a, tenant=t.name) for a in build_stream(times, tasks, mix,
                                                                      stream_rng))
    merged.sort(key=lambda a: (a.arrival_s, a.tenant, a.id))
    return [replace(a, id=i) for i, a in enumerate(merged)]


def rate_limited(stream: Sequence[TaskArrival], loads: Sequence[TenantLoad]
                 ) -> tuple[list[TaskArrival], dict[str, int]]:
    """``stream`` less the requests each tenant's token bucket refuses (full at the first
    arrival), and the number refused per tenant."""
    buckets: dict[str, list[float]] = {}   # tenant -> [rate, capacity, tokens, last]
    for t in loads:
        if t.limit_rps is not None:
            cap = float(t.limit_burst or max(1, math.ceil(t.limit_rps)))
            buckets[t.name] = [t.limit_rps, cap, cap, -math.inf]
    kept: list[TaskArrival] = []
    refused = {t.name: 0 for t in loads}
    for a in stream:
        b = buckets.get(a.tenant)
        if b is not None:
            rate, cap, tokens, last = b
            tokens = cap if last == -math.inf else min(cap, tokens + (a.arrival_s - last) * rate)
            b[3] = a.arrival_s
            if tokens < 1.0:
                b[2] = tokens
                refused[a.tenant] += 1
                continue
            b[2] = tokens - 1.0
        kept.append(a)
    return kept, refused


def tenant_attainment(records: Sequence[RequestRecord], stream: Sequence[TaskArrival],
                      refused: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """``{tenant: (met, requests)}``: requests counts those a rate limit refused (misses)."""
    tenant_of = {a.id: a.tenant for a in stream}
    out = {t: [0, n] for t, n in refused.items()}
    for r in records:
        c = out.setdefault(tenant_of[r.id], [0, 0])
        c[0] += bool(r.met)
        c[1] += 1
    return {t: (m, n) for t, (m, n) in out.items()}


# ---- the scenario -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TenantScenario:
    """Two tenants of equal weight on one model, the same task mix: B sends its share
    (``share_rps``), A ``flood`` times as much; in the rate-limit case A's key is limited to
    ``share_rps`` (bucket of ``ceil(share_rps)``)."""

    deployment: ModelDeployment
    tasks: Mapping[str, TaskType]
    mix: Mapping[str, float]
    engine_concurrency: int
    share_rps: float
    flood: float = 5.0
    duration_s: float = 120.0
    routing: str = "cato"


#: The ``tenants`` scenario: 4 A100/Llama-7B-like replicas (16 calls each), mix B; the pool
#: holds 0.95 attainment up to ~47 req/s with one tenant, so B's 10 req/s is ~21 % of it and
#: A's flood (50 req/s) with B's overloads it ~1.3x.
TENANTS = TenantScenario(
    deployment=ModelDeployment("llama-7b", A100_LLAMA7B, 4, 4, 4),
    tasks=single_step_tasks({t: "llama-7b" for t in MIX_B}), mix=MIX_B,
    engine_concurrency=16, share_rps=10.0)

#: The compared cases, in report order.
CASES = ("B alone", "A+B no fairness", "A+B rate-limit A", "A+B fair shares")


def case_loads(sc: TenantScenario, case: str) -> tuple[list[TenantLoad], bool]:
    """The tenants of ``case`` and whether fair shares are on."""
    b = TenantLoad("B", sc.share_rps)
    a = TenantLoad("A", sc.flood * sc.share_rps)
    if case == "B alone":
        return [b], False
    if case == "A+B no fairness":
        return [a, b], False
    if case == "A+B rate-limit A":
        return [replace(a, limit_rps=sc.share_rps), b], False
    if case == "A+B fair shares":
        return [a, b], True
    raise ValueError(f"unknown case {case!r}; known: {', '.join(CASES)}")


def run_case(sc: TenantScenario, case: str, seed: int) -> dict[str, tuple[int, int]]:
    """One case on one seed: ``{tenant: (met, requests)}``."""
    loads, fair = case_loads(sc, case)
    stream, refused = rate_limited(tenant_stream(loads, sc.tasks, sc.mix, sc.duration_s, seed),
                                   loads)
    cfg = SimConfig(deployments=(sc.deployment,), tasks=sc.tasks, routing=sc.routing,
                    engine_concurrency=sc.engine_concurrency,
                    fairness=fairness_policy(loads) if fair else None, label=case)
    result = Simulator(cfg, stream, seed=seed).run()
    return tenant_attainment(result.records, stream, refused)


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % Student-t interval (0 for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean of no values")
    m = float(np.mean(values))
    if n == 1:
        return m, 0.0
    t = _T975[n - 2] if n - 2 < len(_T975) else 1.96
    return m, t * float(np.std(values, ddof=1)) / math.sqrt(n)


def compare_tenants(sc: TenantScenario, seeds: Sequence[int], *,
                    cases: Sequence[str] = CASES,
                    on_run: Callable[[str, int], None] | None = None
                    ) -> list[dict[str, object]]:
    """Each case over ``seeds``: rows ``{"case", "tenant", "attainment", "ci95", "n_seeds",
    "requests"}`` (attainment as a fraction, mean over seeds; requests summed)."""
    rows: list[dict[str, object]] = []
    for case in cases:
        per: dict[str, list[float]] = {}
        reqs: dict[str, int] = {}
        for s in seeds:
            if on_run is not None:
                on_run(case, s)
            for t, (met, n) in run_case(sc, case, s).items():
                per.setdefault(t, []).append(met / n if n else 0.0)
                reqs[t] = reqs.get(t, 0) + n
        for t in sorted(per):
            m, h = mean_ci95(per[t])
            rows.append({"case": case, "tenant": t, "attainment": m, "ci95": h,
                         "n_seeds": len(per[t]), "requests": reqs[t]})
    return rows
