"""``cato bench compare``: CATO, the real Ray Serve and round robin, live, on the same stream.

For each seed the stream is built once (:func:`cato.benchmarks.live_load.build_live_stream`: the
simulator's arrivals, tasks and lengths, real prompts). Each system is then started in turn over
the *same* emulated engines (the scenario's models, presets, batch caps and replica counts; all
slowed by ``time_dilation``, SLAs scaled by the same factor), the stream is replayed open loop,
and the system is stopped. The order of the systems rotates from seed to seed, so drift of the
machine does not always favour the same one.

Systems:

* ``cato``, ``cato-plus``, ``round-robin``, ``least-outstanding``: ``cato serve`` with that
  routing policy (the same gateway, queues and engines; only the policy differs);
* ``ray-serve``, ``ray-serve-tuned``, ``ray-serve-cato``: Ray Serve 2.60 (``python -m
  cato.rayserve``): its proxy and default power-of-two router with Ray's defaults, tuned for
  LLMs, or with CATO's router and autoscaling policy (``docs/RAY_SERVE.md``).

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
baseline's (:func:`cato.core.metrics.ratio_of_means_ci`, paired bootstrap 95 % interval over
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
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import yaml

from cato.benchmarks.cpu_accounting import TreeCpu, own_cpu_s
from cato.benchmarks.pinning import (PinPlan, cpu_ranges, pin_tree, pinned_self, plan_pinning,
                                     thread_affinity)
from cato.core.catalog import single_step_tasks
from cato.core.coefficients import PRESETS, ReplicaCoefficients, preset, slowed
from cato.core.seeds import ratio_of_means_ci
from cato.core.records import RequestRecord
from cato.sim.policies import RAY_DEFAULT
from cato.sim.scenarios import Scenario

GATEWAY_SYSTEMS: dict[str, str] = {"cato": "cato", "cato-plus": "cato-plus",
                                   "round-robin": "round_robin",
                                   "least-outstanding": "least_outstanding"}
RAY_SYSTEMS: tuple[str, ...] = ("ray-serve", "ray-serve-tuned", "ray-serve-cato")
SYSTEMS: tuple[str, ...] = (*GATEWAY_SYSTEMS, *RAY_SYSTEMS)
#: Ray Serve's default ``max_ongoing_requests``: the ``ray-serve`` system's calls per engine.
RAY_DEFAULT_MAX_ONGOING: int = int(RAY_DEFAULT["max_ongoing_requests"])
#: The protocol's minimum number of seeds for a comparison.
MIN_SEEDS = 5
#: Default tolerance for a late send (BENCHMARK_PROTOCOL.md section 4).
LATE_TOLERANCE_S = 0.05

#: The report's headline metrics: (summary path, label, lower is better).
HEADLINE: tuple[tuple[str, str, bool], ...] = (
    ("attainment", "attainment", False),
    ("attainment_feasible", "attainment (feasible)", False),
    ("request_goodput", "goodput (req/s)", False),
    ("tasks.generation.p95_ttft_ms", "P95 TTFT generation (ms)", True),
    ("tasks.completion.p95_ttft_ms", "P95 TTFT completion (ms)", True),
    ("tasks.summarization.p95_e2e_ms", "P95 E2E summarization (ms)", True),
    ("tasks.translation.p95_e2e_ms", "P95 E2E translation (ms)", True),
    ("utilization", "utilisation", False),
    ("replica_s_per_met", "replica-s / met", True),
    ("mean_replicas", "mean replicas", True),
    ("gateway_cpu_ms_per_request", "gateway CPU (ms) / request", True),
)


# ---- the engines of a scenario ------------------------------------------------------------------
@dataclass(frozen=True)
class LiveModel:
    """One model of a scenario as emulated engines: a preset slowed by ``slowdown`` (before the
    run's time dilation), an optional batch cap, and its replica bounds."""

    name: str
    preset: str
    slowdown: float
    max_num_seqs: int | None
    replicas: int
    min_replicas: int
    max_replicas: int


def _same(a: ReplicaCoefficients, b: ReplicaCoefficients) -> bool:
    """Equal but for the name and the batch cap."""
    names = [f.name for f in fields(a) if f.name not in ("name", "max_num_seqs")]
    return all(abs(float(getattr(a, n)) - float(getattr(b, n))) <= 1e-9 * max(
        1.0, abs(float(getattr(a, n)))) for n in names)


def match_preset(c: ReplicaCoefficients) -> tuple[str, float, int | None]:
    """(preset, slowdown, batch cap) such that ``c`` is that preset slowed, with that cap."""
    for name in PRESETS:
        base = preset(name)
        f = c.t_floor_ms / base.t_floor_ms
        cand = base if abs(f - 1.0) < 1e-12 else slowed(base, f, name=c.name)
        if _same(cand, c):
            cap = None if c.max_num_seqs == base.max_num_seqs else c.max_num_seqs
            return name, f, cap
    raise ValueError(f"coefficients {c.name!r} are no preset slowed down: cannot be emulated")


def live_models(sc: Scenario) -> list[LiveModel]:
    out = []
    for d in sc.deployments:
        p, f, cap = match_preset(d.coeffs)
        out.append(LiveModel(d.model, p, f, cap, d.initial_replicas, d.min_replicas,
                             d.max_replicas))
    return out


def scenario_sla_scale(sc: Scenario) -> float:
    """The factor between the scenario's SLAs and the catalogue's (e.g. 2.5 for ``paper``)."""
    base = single_step_tasks({t: "m" for t in sc.tasks})
    ratios = {round(sc.tasks[t].sla_s / base[t].sla_s, 9) for t in sc.tasks}
    if len(ratios) != 1:
        raise ValueError(f"scenario {sc.name!r} scales its tasks' SLAs unevenly: {ratios}")
    return ratios.pop()


def engine_concurrency(sc: Scenario, m: LiveModel, override: int | None = None) -> int:
    """Calls per engine of model ``m``: ``override``, else the scenario's
    ``engine_concurrency``, else the engine's batch cap -- one value given to the gateway
    (``concurrency``) and to Ray Serve (``max_ongoing_requests`` of the tuned variants)."""
    if override is not None:
        if override < 1:
            raise ValueError(f"per-engine concurrency must be >= 1, got {override}")
        return int(override)
    if sc.engine_concurrency is not None:
        return int(sc.engine_concurrency)
    return int(m.max_num_seqs if m.max_num_seqs is not None else preset(m.preset).max_num_seqs)


def system_concurrency(system: str, concurrency: int) -> int:
    """The calls per engine ``system`` actually runs with, given the comparison's setting:
    the setting, except ``ray-serve`` (Ray's defaults: ``max_ongoing_requests`` 5)."""
    return RAY_DEFAULT_MAX_ONGOING if system == "ray-serve" else concurrency


# ---- starting and stopping a system -------------------------------------------------------------
@dataclass
class RunningSystem:
    name: str
    url: str
    stop: Callable[[], None]
    replica_count: Callable[[], int | None]
    samples: list[tuple[float, int]] = field(default_factory=list)   # (unix time, replicas)
    pid: int | None = None
    """The root of the system's process tree (``cato serve``; Ray's driver)."""


def autoscale_policy(routing: str, concurrency: int, scaling: dict[str, Any] | None
                     ) -> dict[str, Any]:
    """The scaler each gateway system runs when autoscaled, as in the simulator's autoscaled
    scenarios: Algorithm 2 (``scaling`` overrides its parameters) under CATO routing, plus
    probe-down under CATO+; the SLA-blind routers get the tuned queue-length scaler."""
    if routing in ("cato", "cato-plus"):
        params = dict(scaling or {})
        if routing == "cato-plus":
            params.setdefault("quiet_windows_to_shrink", 6)
        return {"policy": "cato", "params": params}
    return {"policy": "ray", "params": {"target_ongoing_requests": max(1.0, 0.5 * concurrency)}}


def gateway_config(sc: Scenario, models: Sequence[LiveModel], policy: str, *, dilation: float,
                   seed: int, autoscale: bool, scaling: dict[str, Any] | None = None,
                   port: int = 0, sla_scale: float | None = None,
                   concurrency: int | None = None) -> dict[str, Any]:
    """``cato serve``'s config for the scenario's engines and one routing policy (SLAs scaled
    with the dilation unless ``sla_scale`` is given; calls per engine by
    :func:`engine_concurrency`)."""
    ms = []
    for m in models:
        emulated: dict[str, Any] = {"replicas": m.replicas, "preset": m.preset,
                                    "time_dilation": m.slowdown * dilation, "seed": seed}
        if m.max_num_seqs is not None:
            emulated["max_num_seqs"] = m.max_num_seqs
        # the engines honour the gateway's `priority` (vLLM --scheduling-policy priority); with
        # every priority equal that is FCFS, as Ray Serve's engines run
        emulated["scheduling_policy"] = "priority"
        conc = engine_concurrency(sc, m, concurrency)
        mc: dict[str, Any] = {"name": m.name, "coefficients": m.preset, "accepts_priority": True,
                              "concurrency": conc, "emulated": emulated}
        if autoscale:
            mc["autoscale"] = {**autoscale_policy(policy, conc, scaling),
                               "min_replicas": m.min_replicas, "max_replicas": m.max_replicas}
        ms.append(mc)
    return {"listen": {"port": port}, "routing": {"policy": policy}, "models": ms,
            "task_models": {t: sc.tasks[t].nodes[0].model for t in sc.tasks},
            "sla_scale": sla_scale if sla_scale is not None else scenario_sla_scale(sc) * dilation,
            "profile_at_startup": False,
            "limits": {"max_queue_per_replica": 100_000}}


def start_gateway_system(name: str, sc: Scenario, models: Sequence[LiveModel], *,
                         dilation: float, seed: int, autoscale: bool, work: Path,
                         scaling: dict[str, Any] | None = None,
                         sla_scale: float | None = None,
                         concurrency: int | None = None) -> RunningSystem:
    from cato.demo import start_gateway, stop
    cfg = gateway_config(sc, models, GATEWAY_SYSTEMS[name], dilation=dilation, seed=seed,
                         autoscale=autoscale, scaling=scaling, sla_scale=sla_scale,
                         concurrency=concurrency)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc, url = start_gateway(["--config", str(path), "--profile", str(work / "none.json")],
                              timeout_s=180.0, log_path=work / f"{name}.log")

    def count() -> int | None:
        try:
            reps = httpx.get(url + "/admin/replicas", timeout=2.0).json()["replicas"]
        except (httpx.HTTPError, ValueError, KeyError):
            return None
        return sum(r["state"] in ("ready", "draining") for r in reps)

    return RunningSystem(name, url, lambda: stop(proc), count, pid=proc.pid)


def start_ray_system(name: str, sc: Scenario, models: Sequence[LiveModel], *, dilation: float,
                     seed: int, autoscale: bool, work: Path,
                     scaling: dict[str, Any] | None = None,
                     sla_scale: float | None = None,
                     concurrency: int | None = None) -> RunningSystem:
    from cato.gateway.launcher import free_port
    from cato.rayserve.launch import start_ray_serve
    specs = []
    for m in models:
        engine: dict[str, Any] = {
            "model": m.name, "preset": m.preset, "time_dilation": m.slowdown * dilation,
            "seed": seed, "concurrency": engine_concurrency(sc, m, concurrency),
            "sla_scale": sla_scale if sla_scale is not None else scenario_sla_scale(sc) * dilation}
        if m.max_num_seqs is not None:
            engine["max_num_seqs"] = m.max_num_seqs
        spec: dict[str, Any] = {"engine": engine, "replicas": m.replicas}
        if autoscale:
            spec.update(min_replicas=m.min_replicas, max_replicas=m.max_replicas)
        specs.append(spec)
    total = sum(m.max_replicas if autoscale else m.replicas for m in models)
    rs = start_ray_serve(name, port=free_port(), models=specs, log_path=work / f"{name}.log",
                         timeout_s=300.0, num_cpus=max(4, total + 2),
                         cato_scaling=scaling if name == "ray-serve-cato" else None)

    def stop() -> None:
        rs.stop()

    return RunningSystem(name, rs.url, stop, rs.num_replicas, pid=rs.proc.pid)


def start_system(name: str, sc: Scenario, models: Sequence[LiveModel], **kw: Any
                 ) -> RunningSystem:
    if name in GATEWAY_SYSTEMS:
        return start_gateway_system(name, sc, models, **kw)
    if name in RAY_SYSTEMS:
        return start_ray_system(name, sc, models, **kw)
    raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")


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


# ---- cost -----------------------------------------------------------------------------------------
def busy_seconds(records: Sequence[RequestRecord]) -> float:
    """Replica-seconds with at least one request between its send and its last token."""
    by: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        end = r.last_token_s if r.last_token_s is not None else r.first_token_s
        if r.replica and end is not None:
            by.setdefault(r.replica, []).append((r.arrival_s, end))
    total = 0.0
    for spans in by.values():
        spans.sort()
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s > cur_e:
                total += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        total += cur_e - cur_s
    return total


def cost_fields(records: Sequence[RequestRecord], samples: Sequence[tuple[float, int]],
                started_at: float, duration_s: float, fallback_replicas: int) -> dict[str, Any]:
    window = [n for t, n in samples if started_at <= t <= started_at + duration_s]
    mean = statistics.fmean(window) if window else float(fallback_replicas)
    provisioned = mean * duration_s
    met = sum(r.met for r in records)
    busy = busy_seconds(records)
    have = sum(r.replica is not None for r in records) >= 0.9 * max(1, len(records))
    return {"mean_replicas": mean, "replica_seconds": provisioned,
            "replica_s_per_met": provisioned / met if met else None,
            "utilization": min(1.0, busy / provisioned) if have and provisioned > 0 else None}


# ---- one comparison -------------------------------------------------------------------------------
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

    def pin_plan(self) -> PinPlan:
        if self.plan is None:
            self.plan = plan_pinning(enabled=self.pin)
        return self.plan


def run_one(settings: CompareSettings, system: str, seed: int, stream: list[Any],
            sc: Scenario, models: Sequence[LiveModel], log: Callable[[str], None]
            ) -> dict[str, Any]:
    from cato.benchmarks.live_load import live_summary, run_live_load, write_outputs
    work = settings.out_dir / "runs" / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    plan = settings.pin_plan()
    t0 = time.monotonic()
    with thread_affinity(plan.gateway):      # the system and all it starts inherit these CPUs
        sysm = start_system(system, sc, models, dilation=settings.time_dilation, seed=seed,
                            autoscale=settings.autoscale, work=work, scaling=settings.scaling,
                            concurrency=settings.concurrency)
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
    summary["pinned_processes"] = pinned
    summary["replica_samples"] = [(round(t - run.started_at, 2), n) for t, n in sysm.samples]
    write_outputs(run, summary, work)
    goodput = summary["request_goodput"]
    cpu = summary["gateway_cpu_ms_per_request"]
    log(f"  {system}: attainment {summary['attainment']:.3f}, goodput "
        f"{'-' if goodput is None else format(goodput, '.2f')} req/s, "
        f"{summary['num_completed']}/{summary['num_arrived']} completed, "
        f"{summary['late_discarded']} late sends discarded, gateway CPU "
        f"{'-' if cpu is None else format(cpu, '.2f')} ms/request")
    return summary


def idle_cpu_rate(pid: int | None, seconds: float) -> float | None:
    """CPU-seconds per second the system's gateway processes spend with no request in flight,
    over ``seconds`` (``None`` when not measured)."""
    if pid is None or seconds <= 0:
        return None
    meter = TreeCpu(pid)
    meter.start()
    time.sleep(seconds)
    u = meter.stop()
    return None if u.gateway_cpu_s is None or u.wall_s <= 0 else u.gateway_cpu_s / u.wall_s


def cpu_fields(usage: Any, records: Sequence[RequestRecord], *,
               loadgen_cpu_s: float | None = None,
               idle_cpu_per_s: float | None = None) -> dict[str, Any]:
    """CPU-seconds of the system's gateway processes and engines over the load, and the
    gateway's per completed request (every ``ok`` request of the run: warm-up and late sends
    cost CPU too); with the system's idle rate (``idle_cpu_per_s``, measured before the load),
    also the CPU above idle per request. ``usage``: a
    :class:`~cato.benchmarks.cpu_accounting.CpuUsage`."""
    completed = sum(r.status == "ok" for r in records)
    per = usage.per_request(completed)
    above = None
    if per is not None and idle_cpu_per_s is not None:
        above = max(0.0, usage.gateway_cpu_s - idle_cpu_per_s * usage.wall_s) / completed
    return {"gateway_cpu_s": usage.gateway_cpu_s, "engine_cpu_s": usage.engine_cpu_s,
            "loadgen_cpu_s": loadgen_cpu_s, "cpu_s_per_request": per,
            "gateway_cpu_ms_per_request": None if per is None else per * 1000.0,
            "gateway_idle_cpu_per_s": idle_cpu_per_s,
            "gateway_cpu_ms_per_request_above_idle": None if above is None else above * 1000.0,
            "cpu_window_s": usage.wall_s,
            "gateway_cpu_by_process": dict(list(usage.gateway_by_process.items())[:10]),
            "gateway_processes": usage.gateway_processes,
            "engine_processes": usage.engine_processes}


class EmptyStream(ValueError):
    """A seed's stream has no request (a silent window of a replayed trace)."""


def run_compare(settings: CompareSettings, log: Callable[[str], None] = print
                ) -> dict[str, Any]:
    """Every system on every seed's stream; returns ``{"settings", "runs": [summary...]}``."""
    from cato.benchmarks.live_load import build_live_stream, live_scenario
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
                         "models": [vars(m) for m in models],
                         "pinning": plan.to_json(),
                         "per_engine_concurrency": conc,
                         "late_tolerance_ms": None if settings.late_tolerance_s is None
                         else settings.late_tolerance_s * 1000.0},
            "runs": runs}


# ---- the report -----------------------------------------------------------------------------------
def _get(summary: dict[str, Any], path: str) -> float | None:
    cur: Any = summary
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return None if cur is None else float(cur)


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    fmt = "{:.3f} ± {:.3f}" if abs(m) < 10 else "{:.0f} ± {:.0f}"
    return fmt.format(m, sd)


def ratio_table(result: dict[str, Any], baseline: str, *, resamples: int = 1000,
                seed: int = 0) -> dict[str, dict[str, dict[str, Any] | None]]:
    """Per system and headline metric, the ratio of means system / ``baseline`` over the seeds
    where both have the value, with its paired bootstrap 95 % interval
    (:func:`cato.core.metrics.ratio_of_means_ci`, ``resamples``, RNG ``seed``):
    ``{"ratio", "lo", "hi", "n", "seeds", "per_seed"}`` -- ``per_seed`` the per-seed ratios
    (``None`` where the baseline's value is 0), detail only. ``None`` when no seed has both
    values or the baseline's mean is 0."""
    by = {(r["system"], r["seed"]): r for r in result["runs"]}
    out: dict[str, dict[str, dict[str, Any] | None]] = {}
    for system in result["settings"]["systems"]:
        for path, _, _ in HEADLINE:
            seeds, xa, xb = [], [], []
            for s in result["settings"]["seeds"]:
                a, b = by.get((system, s)), by.get((baseline, s))
                va = _get(a, path) if a else None
                vb = _get(b, path) if b else None
                if va is not None and vb is not None:
                    seeds.append(s)
                    xa.append(va)
                    xb.append(vb)
            entry: dict[str, Any] | None = None
            if xa and sum(xb) != 0.0:
                ci = ratio_of_means_ci(xa, xb, resamples=resamples, seed=seed)
                entry = {"ratio": ci.ratio, "lo": ci.lo, "hi": ci.hi, "n": ci.n, "seeds": seeds,
                         "per_seed": [x / y if y else None for x, y in zip(xa, xb)]}
            out.setdefault(system, {})[path] = entry
    return out


def _ratio_cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    fmt = "{:.3f}" if abs(entry["ratio"]) < 10 else "{:.0f}"
    return (f"{fmt.format(entry['ratio'])} [{fmt.format(entry['lo'])}, "
            f"{fmt.format(entry['hi'])}]")


def _conc_cell(system: str, runs: Sequence[dict[str, Any]]) -> str:
    values = sorted({int(v) for r in runs for v in (r.get("per_engine_concurrency") or {})
                     .values()})
    if not values:
        return "–"
    text = "/".join(str(v) for v in values)
    return f"{text} (Ray's default)" if system == "ray-serve" else text


def measurement_lines(result: dict[str, Any]) -> list[str]:
    """How the systems were measured (BENCHMARK_PROTOCOL.md section 4): the pinning plan, the
    late-send rule with each system's discarded requests over all seeds, the calls per engine
    and each system's gateway CPU per request. Empty for a result without these fields."""
    st = result["settings"]
    runs = result["runs"]
    if not any("late_discarded" in r or "gateway_cpu_s" in r for r in runs):
        return []
    pin = st.get("pinning") or {}
    tol = st.get("late_tolerance_ms")
    lines = ["", "How the systems were measured (BENCHMARK_PROTOCOL.md section 4): "
             + _pin_text(pin) + "; "
             + (f"requests sent more than {tol:g} ms after their schedule are discarded"
                if tol is not None else "no late-send rule")
             + "; CPU is user + system time of each system's processes other than the "
               "engines (for Ray Serve: all of Ray), over the load, per completed request; "
               "'above idle' first subtracts what the system spends idle (measured before the "
               "load) over the same time."]
    if len(st["seeds"]) < MIN_SEEDS:
        lines[-1] += (f" **{len(st['seeds'])} seed(s): fewer than the protocol's {MIN_SEEDS};"
                      f" a first look.**")
    lines += ["", "| system | calls per engine | late sends discarded | gateway CPU-s "
                  "| gateway CPU (ms) / request | above idle (ms) / request | idle CPU-s/s "
                  "| engine CPU-s | load generator CPU-s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for system in st["systems"]:
        rs = [r for r in runs if r["system"] == system]
        late = sum(int(r.get("late_discarded") or 0) for r in rs)
        past = sum(int(r.get("num_arrived") or 0) + int(r.get("late_discarded") or 0)
                   for r in rs)
        late_cell = f"{late} of {past} ({100.0 * late / past:.2f} %)" if past else "–"

        def col(key: str) -> str:
            return _ms([float(v) for r in rs if (v := r.get(key)) is not None])
        lines.append(f"| {system} | {_conc_cell(system, rs)} | {late_cell} | "
                     f"{col('gateway_cpu_s')} | {col('gateway_cpu_ms_per_request')} | "
                     f"{col('gateway_cpu_ms_per_request_above_idle')} | "
                     f"{col('gateway_idle_cpu_per_s')} | "
                     f"{col('engine_cpu_s')} | {col('loadgen_cpu_s')} |")
    return lines


def _pin_text(pin: dict[str, Any]) -> str:
    if not pin:
        return "pinning not recorded"
    if pin.get("gateway") is None:
        return f"not pinned ({pin.get('mode')}: {'; '.join(pin.get('notes') or [])})"

    def cpus(key: str) -> str:
        return cpu_ranges(pin.get(key) or [])
    text = (f"pinned by {pin.get('unit', 'cpu')} -- load generator on CPU {cpus('loadgen')}, "
            f"gateway on {cpus('gateway')}, engines on {cpus('engines')}")
    if pin.get("mode") == "shared":
        text += " (2 CPUs: load generator and gateway share one)"
    return text


def report_markdown(result: dict[str, Any], baselines: Sequence[str]) -> str:
    st = result["settings"]
    lines = [f"**{st['scenario']}**, {st['rate_rps']} req/s, {st['arrival']} arrivals, "
             f"{st['duration_s']:.0f} s, seeds {st['seeds']}, engines slowed "
             f"{st['time_dilation']}x (SLAs x{st['time_dilation']}), "
             f"{'autoscaled' if st['autoscale'] else 'fixed replicas'}.", ""]
    shown = [(p, label, low) for p, label, low in HEADLINE
             if any(_get(r, p) is not None for r in result["runs"])]
    lines.append("| system | " + " | ".join(label for _, label, _ in shown) + " |")
    lines.append("|---" * (len(shown) + 1) + "|")
    for system in st["systems"]:
        rs = [r for r in result["runs"] if r["system"] == system]
        cells = [_ms([v for r in rs if (v := _get(r, p)) is not None]) for p, _, _ in shown]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += measurement_lines(result)
    for base in baselines:
        if base not in st["systems"]:
            continue
        rt = ratio_table(result, base)
        lines += ["", f"Ratios to **{base}** (ratio of the means over seeds [paired bootstrap "
                      f"95 % interval]):", "",
                  "| system | " + " | ".join(label for _, label, _ in shown) + " |",
                  "|---" * (len(shown) + 1) + "|"]
        for system in st["systems"]:
            if system == base:
                continue
            cells = [_ratio_cell(rt[system][p]) for p, _, _ in shown]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_compare(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    st = result["settings"]
    systems = st["systems"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    bars = [("attainment", "attainment"), ("tasks.generation.p95_ttft_ms",
                                           "P95 TTFT generation (ms)")]
    if not st["autoscale"]:
        bars.append(("tasks.summarization.p95_e2e_ms", "P95 E2E summarization (ms)"))
    for ax, (metric, label) in zip(axes, bars):
        vals = [[v for r in result["runs"] if r["system"] == s
                 and (v := _get(r, metric)) is not None] for s in systems]
        ax.bar(range(len(systems)), [statistics.fmean(v) if v else 0 for v in vals],
               yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in vals], capsize=4)
        ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right")
        ax.set_title(label)
    if not st["autoscale"]:
        return _save(fig, f"{st['scenario']} at {st['rate_rps']} req/s (live)", path)
    ax = axes[2]
    seed0 = st["seeds"][0]
    for s in systems:
        r = next((r for r in result["runs"] if r["system"] == s and r["seed"] == seed0), None)
        if r and r.get("replica_samples"):
            ts, ns = zip(*r["replica_samples"])
            ax.step(ts, ns, where="post", label=s)
    ax.set_title(f"replicas over time (seed {seed0})")
    ax.set_xlabel("s")
    ax.legend(fontsize=7)
    _save(fig, f"{st['scenario']} at {st['rate_rps']} req/s (live)", path)


def _save(fig: Any, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], out_dir: Path,
                 baselines: Sequence[str] = ("ray-serve", "ray-serve-tuned", "round-robin")
                 ) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{result['settings']['scenario']}-{result['settings']['rate_rps']:g}"
    js, md, png = (out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.png")
    ratios = {base: ratio_table(result, base) for base in baselines
              if base in result["settings"]["systems"]}
    js.write_text(json.dumps({**result, "ratios": ratios}, indent=1, default=str))
    md.write_text(report_markdown(result, baselines))
    plot_compare(result, png)
    return [js, md, png]
