"""``cato bench compare``: CATO, the real Ray Serve and round robin, live, on the same stream.

For each seed the stream is built once (:func:`~cato.benchmarks.live_stream.build_live_stream`:
the simulator's arrivals, tasks and lengths, real prompts). Each system is then started in turn over
the *same* emulated engines (the scenario's models, presets, batch caps and replica counts; all
slowed by ``time_dilation``, SLAs scaled by the same factor), the stream is replayed open loop,
and the system is stopped. The order of the systems rotates from seed to seed, so drift of the
machine does not always favour the same one.

Systems:

* ``cato``, ``cato-plus``, ``round-robin``, ``least-outstanding``: ``cato serve`` with that
  routing policy (the same gateway, queues and engines; only the policy differs);
* ``cato-prefix``, ``llmd-prefix``, ``prefix-aware``, ``session-affinity``: ``cato serve`` with
  a prefix-aware policy, the peers at their best sweep points
  (:data:`~cato.benchmarks.compare_systems.GATEWAY_PARAMS`);
* ``ray-serve``, ``ray-serve-tuned``, ``ray-serve-cato``: Ray Serve 2.60 (``python -m
  cato.rayserve``): its proxy and default power-of-two router with Ray's defaults, tuned for
  LLMs, or with CATO's router and autoscaling policy (``docs/RAY_SERVE.md``);
  ``ray-serve-prefix``: ``-tuned`` with Ray Serve LLM's ``PrefixCacheAffinityRouter`` behind
  an ingress (``ray_router``: its kwargs, e.g. ``imbalanced_threshold``).

On a shared-prefix scenario (``ide-sessions``, ``repo-shared``, ``ide-mixed``) every system's
engines run with prefix caching, the prompts share the simulator's blocks
(:mod:`cato.benchmarks.live_stream`), and each run reports the engines' own prefix-cache hit
rate (``engine_prefix_hit_rate``, :mod:`cato.benchmarks.engine_prefix`).

With ``autoscale`` every system scales its replicas between the scenario's bounds with its own
policy (CATO's Algorithm 2, Ray Serve's queue-length autoscaler, ...) and the report adds the
replicas over time, replica-seconds per met request and utilisation.

Utilisation is measured the same way for every system, from the client's records: a replica is
busy while at least one request it serves is between its send and its last token (the replica
is reported by ``x-cato-replica``); provisioned replica-seconds are the mean replica count
sampled every second times the run's length.

Metric hygiene (BENCHMARK_PROTOCOL.md section 3): goodput is over the stream's arrival span (the
same denominator for every system); each seed replays an independent stream (for a trace, its
own window of it); attainment among the requests feasible in isolation is reported beside plain
attainment; and a system's ratio to a baseline is the ratio of its mean over the seeds to the
baseline's (:func:`cato.core.seeds.ratio_of_means_ci`, paired bootstrap 95 % interval over
seeds), never the mean of per-seed ratios -- which stay in the JSON as detail.

Measuring the systems, not the machine (BENCHMARK_PROTOCOL.md section 4):

* **Pinning** (:mod:`cato.benchmarks.pinning`): the load generator, the gateway (for Ray Serve:
  every Ray process) and the engines run on separate CPUs where they fit; one plan for every
  system, written into the JSON (``settings.pinning``).
* **Late sends**: a request the load generator sent more than ``late_tolerance_s`` (50 ms)
  after its scheduled time is left out of the figures; each run counts them
  (``late_discarded``, ``late_share``) and the report gives them per system.
* **Same per-engine concurrency**: one setting (``concurrency``; default the scenario's
  ``engine_concurrency``) is the gateway's calls per engine and Ray Serve's
  ``max_ongoing_requests`` per replica (``ray-serve-tuned``, ``ray-serve-cato``); ``ray-serve``
  is Ray's defaults by definition (5) and the report says so beside it.
* **CPU per request** (:mod:`cato.benchmarks.cpu_accounting`): user + system CPU-seconds of each
  system's processes other than the engines over the load, divided by the completed requests
  (``gateway_cpu_s``, ``cpu_s_per_request``; the engines' in ``engine_cpu_s``, the load
  generator's in ``loadgen_cpu_s``).

This module runs a comparison (:func:`run_compare`); the systems and the engines of a scenario
are in :mod:`cato.benchmarks.compare_systems`, a run's cost and CPU accounting in
:mod:`cato.benchmarks.compare_cost`, and the report (tables with ratios, plots) in
:mod:`cato.benchmarks.compare_report`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cato.benchmarks.compare_cost import cost_fields, cpu_fields, idle_cpu_rate
from cato.benchmarks.compare_systems import (RAY_DEFAULT_MAX_ONGOING, SYSTEMS, LiveModel,
                                             RunningSystem, engine_concurrency, live_models,
                                             start_system, system_concurrency)
from cato.benchmarks.cpu_accounting import TreeCpu, own_cpu_s
from cato.benchmarks.engine_prefix import engine_prefix_stats
from cato.benchmarks.pinning import PinPlan, pin_tree, pinned_self, plan_pinning, thread_affinity
from cato.sim.scenarios import Scenario

#: The protocol's minimum number of seeds for a comparison.
MIN_SEEDS = 5
#: Default tolerance for a late send (BENCHMARK_PROTOCOL.md section 4).
LATE_TOLERANCE_S = 0.05


class _Sampler:
    """Replica count of a running system, every ``every_s``; ``also`` is called at each tick
    (re-pinning the system's processes, sampling their CPU time)."""

    def __init__(self, system: RunningSystem, every_s: float = 1.0,
                 also: Callable[[], None] | None = None) -> None:
        self.system, self.every_s, self.also = system, every_s, also
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            n = self.system.replica_count()
            if n is not None:
                self.system.samples.append((time.time(), n))
            if self.also is not None:
                self.also()
            self._stop.wait(self.every_s)

    def __enter__(self) -> _Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5.0)


@dataclass
class CompareSettings:
    scenario: str
    rate: float
    seeds: Sequence[int]
    systems: Sequence[str]
    duration_s: float | None = None
    time_dilation: float = 1.0
    arrival: str | None = None
    autoscale: bool = False
    scaling: dict[str, Any] | None = None
    trace_start_s: float | None = None
    """azure: > 0 pins every seed's window there; ``None``/0: each seed its own window."""
    out_dir: Path = Path("out/compare")
    progress: bool = True
    pin: bool = True
    """Pin load generator, gateway and engines to separate CPUs (:mod:`.pinning`)."""
    late_tolerance_s: float | None = LATE_TOLERANCE_S
    """A request sent later than this after its schedule is discarded (``None``: none is)."""
    concurrency: int | None = None
    """Calls per engine for every system (``None``: the scenario's ``engine_concurrency``)."""
    plan: PinPlan | None = None
    """The pinning plan (``None``: :func:`.pinning.plan_pinning` of this process's CPUs)."""
    idle_s: float = 2.0
    """Seconds the system's idle CPU is measured for before the load (0: not measured)."""
    ray_router: dict[str, Any] | None = None
    """``ray-serve-prefix``'s router kwargs over its defaults (e.g. ``imbalanced_threshold``;
    :func:`cato.rayserve.variants.prefix_router_kwargs`)."""

    def pin_plan(self) -> PinPlan:
        if self.plan is None:
            self.plan = plan_pinning(enabled=self.pin)
        return self.plan


def run_one(settings: CompareSettings, system: str, seed: int, stream: list[Any],
            sc: Scenario, models: Sequence[LiveModel], log: Callable[[str], None]
            ) -> dict[str, Any]:
    from cato.benchmarks.live_load import run_live_load
    from cato.benchmarks.live_outputs import write_outputs
    from cato.benchmarks.live_summary import live_summary
    work = settings.out_dir / "runs" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    plan = settings.pin_plan()
    t0 = time.monotonic()
    with thread_affinity(plan.gateway):      # the system and all it starts inherit these CPUs
        sysm = start_system(system, sc, models, dilation=settings.time_dilation, seed=seed,
                            autoscale=settings.autoscale, work=work, scaling=settings.scaling,
                            concurrency=settings.concurrency,
                            ray_router=settings.ray_router)
    meter = TreeCpu(sysm.pid)
    pinned = pin_tree(sysm.pid, plan)

    def tick() -> None:
        roles = meter.sample()
        pin_tree(sysm.pid, plan, roles)      # engines started since (autoscaling) move too

    log(f"  {system}: up in {time.monotonic() - t0:.1f} s at {sysm.url}"
        + (f"; pinned {pinned['gateway']} gateway and {pinned['engines']} engine processes"
           if plan.active else ""))
    try:
        with pinned_self(plan.loadgen), _Sampler(sysm, also=tick):
            idle_rate = idle_cpu_rate(sysm.pid, settings.idle_s)
            meter.start()
            own0 = own_cpu_s()
            run = asyncio.run(run_live_load(sysm.url, stream, progress=settings.progress,
                                            system=system))
            own = own_cpu_s() - own0
            usage = meter.stop()
            cache = engine_prefix_stats(sysm.pid)   # the engines' own counters, before stopping
    finally:
        sysm.stop()
    summary = live_summary(run, system=system, scenario=sc.name, rate_rps=settings.rate,
                           seed=seed, late_tolerance_s=settings.late_tolerance_s)
    fixed = sum(m.replicas for m in models)
    summary.update(cost_fields(run.records, sysm.samples, run.started_at, run.duration_s, fixed))
    summary.update(cpu_fields(usage, run.records, loadgen_cpu_s=own, idle_cpu_per_s=idle_rate))
    conc = {m.name: system_concurrency(system, engine_concurrency(sc, m, settings.concurrency))
            for m in models}
    summary["per_engine_concurrency"] = conc
    summary["engine_prefix_cache"] = None if cache is None else cache.to_json()
    summary["engine_prefix_hit_rate"] = None if cache is None else cache.hit_rate
    summary["pinned_processes"] = pinned
    summary["replica_samples"] = [(round(t - run.started_at, 2), n) for t, n in sysm.samples]
    write_outputs(run, summary, work)
    goodput = summary["request_goodput"]
    cpu = summary["gateway_cpu_ms_per_request"]
    log(f"  {system}: attainment {summary['attainment']:.3f}, goodput "
        f"{'-' if goodput is None else format(goodput, '.2f')} req/s, "
        f"{summary['num_completed']}/{summary['num_arrived']} completed, "
        f"{summary['late_discarded']} late sends discarded, gateway CPU "
        f"{'-' if cpu is None else format(cpu, '.2f')} ms/request"
        + ("" if cache is None or cache.hit_rate is None
           else f", engines' prefix-cache hit rate {cache.hit_rate:.3f}"))
    return summary


class EmptyStream(ValueError):
    """A seed's stream has no request (a silent window of a replayed trace)."""


def run_compare(settings: CompareSettings, log: Callable[[str], None] = print
                ) -> dict[str, Any]:
    """Every system on every seed's stream; returns ``{"settings", "runs": [summary...]}``."""
    from cato.benchmarks.live_stream import build_live_stream, live_scenario
    unknown = [s for s in settings.systems if s not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    sc = live_scenario(settings.scenario, duration_s=settings.duration_s,
                       arrival=settings.arrival, trace_start_s=settings.trace_start_s)
    models = live_models(sc)
    plan = settings.pin_plan()
    log(plan.describe())
    conc = {m.name: engine_concurrency(sc, m, settings.concurrency) for m in models}
    log(f"calls per engine: {conc}" + ("; ray-serve keeps Ray's default max_ongoing_requests "
                                       f"({RAY_DEFAULT_MAX_ONGOING})"
                                       if "ray-serve" in settings.systems else ""))
    if len(settings.seeds) < MIN_SEEDS:
        log(f"{len(settings.seeds)} seed(s): the protocol asks for >= {MIN_SEEDS}")
    streams = {seed: build_live_stream(settings.scenario, settings.rate, seed,
                                       duration_s=settings.duration_s, arrival=settings.arrival,
                                       sla_scale=settings.time_dilation,
                                       trace_start_s=settings.trace_start_s)
               for seed in settings.seeds}
    empty = [seed for seed, stream in streams.items() if not stream]
    if empty:   # a replayed trace's window can be silent: say so before any system starts
        raise EmptyStream(
            f"seed(s) {empty}: no request arrives in their {settings.duration_s or 'default'} s "
            f"window of the {settings.scenario} stream at {settings.rate} req/s (a replayed "
            "trace has silent stretches); choose other seeds or a longer --duration")
    runs = []
    for k, seed in enumerate(settings.seeds):
        stream = streams[seed]
        log(f"seed {seed}: {len(stream)} requests over {stream[-1].arrival_s:.0f} s")
        order = list(settings.systems)
        order = order[k % len(order):] + order[:k % len(order)]
        for system in order:
            runs.append(run_one(settings, system, seed, stream, sc, models, log))
    return {"settings": {"scenario": settings.scenario, "rate_rps": settings.rate,
                         "seeds": list(settings.seeds), "systems": list(settings.systems),
                         "duration_s": sc.duration_s, "time_dilation": settings.time_dilation,
                         "arrival": settings.arrival or sc.arrival,
                         "autoscale": settings.autoscale, "scaling": settings.scaling,
                         "trace_start_s": settings.trace_start_s,
                         "ray_router": settings.ray_router,
                         "models": [vars(m) for m in models],
                         "pinning": plan.to_json(),
                         "per_engine_concurrency": conc,
                         "late_tolerance_ms": None if settings.late_tolerance_s is None
                         else settings.late_tolerance_s * 1000.0},
            "runs": runs}
