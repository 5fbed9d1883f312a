"""The systems of ``cato bench compare`` (:mod:`cato.benchmarks.compare`): the engines of a
scenario as emulated presets, and starting and stopping each system over them
(``cato serve`` with one routing policy, or a Ray Serve variant)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
import yaml

from cato.core.catalog import single_step_tasks
from cato.core.coefficients import PRESETS, ReplicaCoefficients, preset, slowed
from cato.sim.policies import RAY_DEFAULT
from cato.sim.scenarios import PREFIX_ARRIVALS, Scenario

GATEWAY_SYSTEMS: dict[str, str] = {"cato": "cato", "cato-plus": "cato-plus",
                                   "round-robin": "round_robin",
                                   "least-outstanding": "least_outstanding",
                                   "cato-prefix": "cato-prefix", "llmd-prefix": "llmd_prefix",
                                   "prefix-aware": "prefix_aware",
                                   "session-affinity": "session_affinity"}
#: The gateway systems' routing parameters: the peer prefix routers at the best points of the
#: simulator's prefix sweep (docs/BENCHMARKS.md section 12: ``llmd_prefix[w=2]``,
#: ``prefix_aware[abs=64;match=0]``, ``session_affinity[key=8]`` on ide-sessions)
GATEWAY_PARAMS: dict[str, dict[str, Any]] = {
    "llmd-prefix": {"prefix_weight": 2.0},
    "prefix-aware": {"balance_abs_threshold": 64, "cache_threshold": 0.0},
    "session-affinity": {"key_blocks": 8}}
RAY_SYSTEMS: tuple[str, ...] = ("ray-serve", "ray-serve-tuned", "ray-serve-cato",
                                "ray-serve-prefix")
SYSTEMS: tuple[str, ...] = (*GATEWAY_SYSTEMS, *RAY_SYSTEMS)
#: Ray Serve's default ``max_ongoing_requests``: the ``ray-serve`` system's calls per engine.
RAY_DEFAULT_MAX_ONGOING: int = int(RAY_DEFAULT["max_ongoing_requests"])


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


def prefix_caching(sc: Scenario) -> bool:
    """Whether the scenario's engines run with prefix caching: a shared-prefix scenario's
    (its prompts share blocks; the simulator's replicas cache them), for every system alike."""
    return sc.arrival in PREFIX_ARRIVALS


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
                   concurrency: int | None = None,
                   params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``cato serve``'s config for the scenario's engines and one routing policy with
    ``params`` (SLAs scaled with the dilation unless ``sla_scale`` is given; calls per engine
    by :func:`engine_concurrency`; prefix caching by :func:`prefix_caching`)."""
    ms = []
    for m in models:
        emulated: dict[str, Any] = {"replicas": m.replicas, "preset": m.preset,
                                    "time_dilation": m.slowdown * dilation, "seed": seed}
        if m.max_num_seqs is not None:
            emulated["max_num_seqs"] = m.max_num_seqs
        # the engines honour the gateway's `priority` (vLLM --scheduling-policy priority); with
        # every priority equal that is FCFS, as Ray Serve's engines run
        emulated["scheduling_policy"] = "priority"
        if prefix_caching(sc):
            emulated["enable_prefix_caching"] = True
        conc = engine_concurrency(sc, m, concurrency)
        mc: dict[str, Any] = {"name": m.name, "coefficients": m.preset, "accepts_priority": True,
                              "concurrency": conc, "emulated": emulated}
        if autoscale:
            mc["autoscale"] = {**autoscale_policy(policy, conc, scaling),
                               "min_replicas": m.min_replicas, "max_replicas": m.max_replicas}
        ms.append(mc)
    routing: dict[str, Any] = {"policy": policy}
    if params:
        routing["params"] = dict(params)
    return {"listen": {"port": port}, "routing": routing, "models": ms,
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
                         concurrency=concurrency, params=GATEWAY_PARAMS.get(name))
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
                     concurrency: int | None = None,
                     ray_router: dict[str, Any] | None = None) -> RunningSystem:
    """A Ray Serve variant over the scenario's engines; ``ray_router``: the
    ``ray-serve-prefix`` router's kwargs (e.g. ``imbalanced_threshold``)."""
    from cato.edge.procs import free_port
    from cato.rayserve.launch import start_ray_serve
    specs = []
    for m in models:
        engine: dict[str, Any] = {
            "model": m.name, "preset": m.preset, "time_dilation": m.slowdown * dilation,
            "seed": seed, "concurrency": engine_concurrency(sc, m, concurrency),
            "sla_scale": sla_scale if sla_scale is not None else scenario_sla_scale(sc) * dilation}
        if m.max_num_seqs is not None:
            engine["max_num_seqs"] = m.max_num_seqs
        if prefix_caching(sc):
            engine["enable_prefix_caching"] = True
        spec: dict[str, Any] = {"engine": engine, "replicas": m.replicas}
        if autoscale:
            spec.update(min_replicas=m.min_replicas, max_replicas=m.max_replicas)
        specs.append(spec)
    total = sum(m.max_replicas if autoscale else m.replicas for m in models)
    rs = start_ray_serve(name, port=free_port(), models=specs, log_path=work / f"{name}.log",
                         timeout_s=300.0, num_cpus=max(4, total + 2),
                         cato_scaling=scaling if name == "ray-serve-cato" else None,
                         router=ray_router if name == "ray-serve-prefix" else None)

    def stop() -> None:
        rs.stop()

    return RunningSystem(name, rs.url, stop, rs.num_replicas, pid=rs.proc.pid)


def start_system(name: str, sc: Scenario, models: Sequence[LiveModel], **kw: Any
                 ) -> RunningSystem:
    ray_router = kw.pop("ray_router", None)
    if name in GATEWAY_SYSTEMS:
        return start_gateway_system(name, sc, models, **kw)
    kw["ray_router"] = ray_router
    if name in RAY_SYSTEMS:
        return start_ray_system(name, sc, models, **kw)
    raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
