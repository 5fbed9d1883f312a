"""What a gateway costs: the request rate it sustains on this machine in front of (nearly)
instant engines, and the latency it adds, for CATO and Ray Serve in the same run.

Engines are ``cato engine`` processes slowed by a tiny time dilation (model time x 0.001: a
16-token completion takes well under a millisecond of model time), so what is measured is the
gateway, the HTTP hops and the load generator, all on this machine. For each system, and for the
engines addressed directly (round robin from the client: the floor), an open-loop Poisson
stream of short completion requests is sent at increasing rates; per rate: achieved
throughput, errors, and P50/P99 TTFT measured at the client. A rate is *sustained* when at least
99 % of the requests succeed, throughput is at least 95 % of the offered rate and P99 TTFT
stays under ``p99_limit_ms``. The overhead at a rate is the system's P50 TTFT less the direct
P50 at the same rate.

Measured as BENCHMARK_PROTOCOL.md section 4 asks of live comparisons:

* the same calls per engine for every system (``concurrency``, default the scenario's
  ``engine_concurrency``): the gateway's ``concurrency`` and Ray Serve's
  ``max_ongoing_requests`` -- which is why the Ray system measured by default is
  ``ray-serve-tuned`` (Ray's default router and proxy, fixed replicas, ``max_ongoing_requests``
  = the setting); ``ray-serve`` keeps Ray's default of 5, and each point says what it ran with
  (``per_engine_concurrency``);
* load generator, gateway (all of Ray for Ray Serve) and engines pinned to separate CPUs where
  they fit (:mod:`cato.benchmarks.pinning`; each point names the plan in ``pinning``);
* requests the load generator sent more than ``late_tolerance_s`` after their schedule are
  counted (``late``) and left out of the TTFT percentiles;
* the gateway's CPU-seconds over each rate's load (every process of the system but the
  engines: :mod:`cato.benchmarks.cpu_accounting`) per completed request
  (``cpu_ms_per_request``).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import replace
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cato.benchmarks.compare import LATE_TOLERANCE_S
from cato.benchmarks.compare_systems import (LiveModel, engine_concurrency, start_system,
                                             system_concurrency)
from cato.benchmarks.cpu_accounting import TreeCpu
from cato.benchmarks.live_load import LiveRun, run_live_load
from cato.benchmarks.live_stream import LiveRequest
from cato.benchmarks.live_summary import late_sends
from cato.benchmarks.pinning import PinPlan, pin_tree, pinned_self, plan_pinning, thread_affinity
from cato.core.metrics import percentile_ms
from cato.sim.arrivals import poisson
from cato.sim.scenarios import scenario
from cato.text import count_tokens
from cato.workloads.prompts import PromptSource

INSTANT = 0.001


@dataclass(frozen=True)
class CapacityPoint:
    system: str
    offered_rps: float
    requests: int
    ok: int
    throughput_rps: float
    p50_ttft_ms: float | None
    p99_ttft_ms: float | None
    sustained: bool
    overhead_p50_ms: float | None = None
    per_engine_concurrency: int | None = None
    """Calls per engine the system ran with (``None`` for ``direct``)."""
    late: int = 0
    """Requests sent later than the tolerance after their schedule (not in the percentiles)."""
    gateway_cpu_s: float | None = None
    """CPU-seconds of the system's processes but the engines over this rate's load."""
    cpu_ms_per_request: float | None = None
    """``gateway_cpu_s`` per completed request, in ms."""
    pinning: str = ""
    """The pinning plan the point ran under (:meth:`~cato.benchmarks.pinning.PinPlan.describe`)."""


def capacity_stream(rate: float, duration_s: float, seed: int) -> list[LiveRequest]:
    rng = np.random.default_rng(seed)
    times = poisson(rate, duration_s, rng)
    prompts = PromptSource(seed)
    out = []
    for i, t in enumerate(times):
        text = prompts.prompt_near_tokens("completion", 100).text
        out.append(LiveRequest(id=i, arrival_s=float(t), task="completion", model="llama-7b",
                               prompt=text, max_tokens=16, prompt_tokens=count_tokens(text),
                               sla_kind="ttft", sla_s=60.0))
    return out


def _ttft_s(runs: Sequence[LiveRun], late_tolerance_s: float | None) -> list[float]:
    """TTFTs (s) of the ``ok`` requests sent on time."""
    out = []
    for run in runs:
        late = late_sends(run, late_tolerance_s)
        out += [r.ttft_s for r in run.records
                if r.status == "ok" and r.ttft_s is not None and r.id not in late]
    return out


def _point(system: str, rate: float, stream: list[LiveRequest], url: str,
           p99_limit_ms: float, *, late_tolerance_s: float | None = LATE_TOLERANCE_S,
           pid: int | None = None, concurrency: int | None = None) -> CapacityPoint:
    meter = TreeCpu(pid)
    meter.start()
    run = asyncio.run(run_live_load(url, stream, progress=False, system=system, timeout_s=60.0))
    usage = meter.stop()
    ok = [r for r in run.records if r.status == "ok"]
    ttft = _ttft_s([run], late_tolerance_s)
    thr = len(ok) / run.duration_s
    p50, p99 = percentile_ms(ttft, 50.0), percentile_ms(ttft, 99.0)
    sustained = (len(ok) >= 0.99 * len(stream) and thr >= 0.95 * rate
                 and p99 is not None and p99 <= p99_limit_ms)
    per = usage.per_request(len(ok))
    return CapacityPoint(system, rate, len(stream), len(ok), thr, p50, p99, sustained,
                         per_engine_concurrency=concurrency,
                         late=len(late_sends(run, late_tolerance_s)),
                         gateway_cpu_s=usage.gateway_cpu_s,
                         cpu_ms_per_request=None if per is None else per * 1000.0)


def bench_capacity(systems: Sequence[str] = ("cato", "ray-serve-tuned"), *,
                   rates: Sequence[float] = (25, 50, 100, 200), duration_s: float = 10.0,
                   replicas: int = 2, seed: int = 0, p99_limit_ms: float = 1000.0,
                   on_point: Callable[[CapacityPoint], None] | None = None,
                   work: Path | None = None, concurrency: int | None = None,
                   pin: bool = True, plan: PinPlan | None = None,
                   late_tolerance_s: float | None = LATE_TOLERANCE_S) -> list[CapacityPoint]:
    """Every system (and ``direct``) at every rate, on the same streams, with the same calls
    per engine (``concurrency``; default the scenario's), pinned by ``plan`` (default:
    :func:`~cato.benchmarks.pinning.plan_pinning` of this process's CPUs, unless not ``pin``).
    """
    from cato.edge.procs import free_port, wait_ready
    from cato.serving.launcher import emulated_engine_argv, start_process
    work = work or Path(tempfile.mkdtemp(prefix="cato-capacity-"))
    sc = scenario("mixA-poisson")
    models = [LiveModel("llama-7b", "a100-llama7b", 1.0, None, replicas, replicas, replicas)]
    conc = engine_concurrency(sc, models[0], concurrency)
    plan = plan or plan_pinning(enabled=pin)
    streams = {r: capacity_stream(r, duration_s, seed) for r in rates}
    points: list[CapacityPoint] = []

    def record(p: CapacityPoint) -> None:
        p = replace(p, pinning=plan.describe())
        points.append(p)
        if on_point:
            on_point(p)

    # the floor: the same engines addressed directly, round robin from the client
    ports = [free_port() for _ in range(replicas)]
    with thread_affinity(plan.engines):
        engines = [start_process(emulated_engine_argv(p, model="llama-7b",
                                                      preset="a100-llama7b",
                                                      time_dilation=INSTANT, seed=seed + i),
                                 f"http://127.0.0.1:{p}", work) for i, p in enumerate(ports)]
    try:
        wait_ready(engines, 60.0)
        with pinned_self(plan.loadgen):
            for rate in rates:
                stream = streams[rate]
                record(_direct_point(rate, stream, [e.url for e in engines], p99_limit_ms,
                                     late_tolerance_s))
    finally:
        for e in engines:
            e.stop()
    for system in systems:
        with thread_affinity(plan.gateway):
            sysm = start_system(system, sc, models, dilation=INSTANT, seed=seed,
                                autoscale=False, work=work, sla_scale=1.0, concurrency=conc)
        try:
            with pinned_self(plan.loadgen):
                for rate in rates:
                    pin_tree(sysm.pid, plan)
                    record(_point(system, rate, streams[rate], sysm.url, p99_limit_ms,
                                  late_tolerance_s=late_tolerance_s, pid=sysm.pid,
                                  concurrency=system_concurrency(system, conc)))
        finally:
            sysm.stop()
    direct = {p.offered_rps: p.p50_ttft_ms for p in points if p.system == "direct"}
    out = []
    for p in points:
        base = direct.get(p.offered_rps)
        over = None if p.system == "direct" or base is None or p.p50_ttft_ms is None \
            else p.p50_ttft_ms - base
        out.append(CapacityPoint(**{**asdict(p), "overhead_p50_ms": over}))
    return out


def _direct_point(rate: float, stream: list[LiveRequest], urls: list[str],
                  p99_limit_ms: float, late_tolerance_s: float | None = LATE_TOLERANCE_S
                  ) -> CapacityPoint:
    """The engines without a gateway: requests spread round robin over ``urls``."""
    parts = [[r for i, r in enumerate(stream) if i % len(urls) == k] for k in range(len(urls))]

    async def all_parts() -> list[Any]:
        return list(await asyncio.gather(*(run_live_load(u, p, progress=False, system="direct",
                                                         timeout_s=60.0)
                                           for u, p in zip(urls, parts) if p)))
    runs = asyncio.run(all_parts())
    recs = [r for run in runs for r in run.records]
    ok = [r for r in recs if r.status == "ok"]
    ttft = _ttft_s(runs, late_tolerance_s)
    dur = max(run.duration_s for run in runs)
    thr = len(ok) / dur
    p50, p99 = percentile_ms(ttft, 50.0), percentile_ms(ttft, 99.0)
    return CapacityPoint("direct", rate, len(stream), len(ok), thr, p50, p99,
                         len(ok) >= 0.99 * len(stream) and thr >= 0.95 * rate
                         and p99 is not None and p99 <= p99_limit_ms,
                         late=sum(len(late_sends(run, late_tolerance_s)) for run in runs))


def sustained_rate(points: Sequence[CapacityPoint], system: str) -> float | None:
    """The highest offered rate the system sustained, with every lower rate sustained too."""
    best = None
    for p in sorted((p for p in points if p.system == system), key=lambda p: p.offered_rps):
        if not p.sustained:
            break
        best = p.offered_rps
    return best
