"""The protocol's parameter sweeps as policy specs (BENCHMARK_PROTOCOL.md section 4): the
Ray-like sweep (:func:`ray_sweep`), the gateway-concurrency sweep of the SLA-blind gateway-queue
baselines (:func:`gateway_sweep`), the grids of CATO's and Ray's scaling parameters
(:func:`cato_scaling_sweep`, :func:`ray_scaling_sweep`), the peer prefix-aware routers' grids
(:func:`prefix_sweep`), and :func:`resolve_policies`, which
expands the sweeps' names among a scenario's policy labels."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, Sequence

from cato.sim.policies import UNBOUNDED_ONGOING, PolicySpec
from cato.sim.scenarios import Scenario


#: The protocol's Ray-like sweep (BENCHMARK_PROTOCOL.md section 4). ``None`` = unbounded.
RAY_SWEEP_MAX_ONGOING: tuple[int | None, ...] = (1, 2, 4, 8, 16, 32, None)
RAY_SWEEP_TARGET_ONGOING: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
RAY_SWEEP_UPSCALE_DELAY_S: tuple[float, ...] = (10.0, 30.0)
RAY_SWEEP_DOWNSCALE_DELAY_S: tuple[float, ...] = (60.0, 120.0, 600.0)
#: The name that expands into the Ray-like sweep (:func:`ray_sweep`).
RAY_SWEEP = "ray-sweep"
#: The name that expands into the gateway-concurrency sweep of the SLA-blind gateway-queue
#: baselines (:func:`gateway_sweep`).
GATEWAY_SWEEP = "gateway-sweep"
#: Calls per engine swept for those baselines, beside the scenario's own concurrency.
GATEWAY_SWEEP_CONCURRENCY: tuple[int, ...] = (32,)
#: The baselines whose calls wait in the gateway's per-replica queues up to the gateway's
#: concurrency (Ray-like routing has its own cap, ``max_ongoing_requests``, swept apart).
GATEWAY_QUEUE_BASELINES = ("round_robin", "least_outstanding", "edf", "llmd")


#: The name that expands into the peer prefix-aware routers' sweep (:func:`prefix_sweep`).
PREFIX_SWEEP = "prefix-sweep"
#: The peer prefix-aware routers' parameter grids (issue 17, part 3), each router taken at its
#: best point: the session key's length in blocks; SGLang's absolute imbalance threshold (in
#: outstanding requests) and the minimum match share; llm-d's prefix-scorer weight against the
#: load scorers' 1 each.
PREFIX_SWEEP_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "session_affinity": {"key_blocks": (1, 8, 64)},
    "prefix_aware": {"balance_abs_threshold": (4, 16, 64), "cache_threshold": (0.0, 0.5)},
    "llmd_prefix": {"prefix_weight": (1.0, 2.0, 3.0, 5.0)},
}
_PREFIX_SWEEP_KEYS = {"key_blocks": "key", "balance_abs_threshold": "abs",
                      "cache_threshold": "match", "prefix_weight": "w"}


def prefix_sweep(sc: Scenario) -> dict[str, PolicySpec]:
    """Every peer prefix-aware router of ``sc`` (:data:`PREFIX_SWEEP_GRIDS`) at every point of
    its grid, labelled e.g. ``prefix_aware[abs=16;match=0.5]`` (``;``: a label stays one item of a
    comma-separated list; the spec's other parameters kept), so that CATO's ratio is taken
    against each router's best setting."""
    out: dict[str, PolicySpec] = {}
    for name, grid in PREFIX_SWEEP_GRIDS.items():
        base = sc.policies.get(name)
        if base is None:
            continue
        for point in itertools.product(*grid.values()):
            params = dict(zip(grid, point))
            label = name + "[" + ";".join(f"{_PREFIX_SWEEP_KEYS[k]}={v:g}"
                                          for k, v in params.items()) + "]"
            out[label] = replace(base, label=label,
                                 routing_params={**base.routing_params, **params})
    return out


def gateway_sweep(sc: Scenario) -> dict[str, PolicySpec]:
    """Every gateway-queue baseline of ``sc`` (:data:`GATEWAY_QUEUE_BASELINES`) at every
    concurrency of :data:`GATEWAY_SWEEP_CONCURRENCY` other than the scenario's own (which the
    baseline's plain label already runs), labelled e.g. ``llmd[conc=32]``: a baseline is taken at
    its best concurrency, never only at the one CATO prefers."""
    out: dict[str, PolicySpec] = {}
    for name in GATEWAY_QUEUE_BASELINES:
        base = sc.policies.get(name)
        if base is None:
            continue
        for conc in GATEWAY_SWEEP_CONCURRENCY:
            if conc == sc.engine_concurrency:
                continue
            label = f"{name}[conc={conc}]"
            out[label] = replace(base, label=label, engine_concurrency=conc)
    return out


def ray_sweep(sc: Scenario) -> dict[str, PolicySpec]:
    """The protocol's Ray-like sweep for ``sc``: power-of-two routing with every
    ``max_ongoing_requests`` of :data:`RAY_SWEEP_MAX_ONGOING` and, when the scenario autoscales
    (its policies scale with ``ray``), Ray's autoscaler with every ``target_ongoing_requests``,
    upscale delay and downscale delay of the sweep (7 x 5 x 2 x 3 = 210 configurations).

    Labels name the configuration, e.g. ``ray-sweep[max_ongoing=8]`` or
    ``ray-sweep[max_ongoing=8,target=4,up=10s,down=600s]``. The other autoscaler parameters
    stay at Ray's timing (metrics every 10 s, 30 s look-back)."""
    autoscaled = any(p.scaling == "ray" for p in sc.policies.values())
    out: dict[str, PolicySpec] = {}
    for m in RAY_SWEEP_MAX_ONGOING:
        routing = dict(max_ongoing_requests=UNBOUNDED_ONGOING if m is None else m)
        mo = "unbounded" if m is None else str(m)
        if not autoscaled:
            label = f"{RAY_SWEEP}[max_ongoing={mo}]"
            out[label] = PolicySpec(label, "pow2", routing_params=routing)
            continue
        for t in RAY_SWEEP_TARGET_ONGOING:
            for up in RAY_SWEEP_UPSCALE_DELAY_S:
                for down in RAY_SWEEP_DOWNSCALE_DELAY_S:
                    label = f"{RAY_SWEEP}[max_ongoing={mo},target={t:g},up={up:g}s,down={down:g}s]"
                    out[label] = PolicySpec(label, "pow2", "ray", routing, dict(
                        target_ongoing_requests=t, upscale_delay_s=up, downscale_delay_s=down))
    return out


#: The sweep of CATO's Algorithm 2 for its Pareto front (``cato fronts``): how many replicas
#: per violation, how many consecutive exceeding windows before scaling up, and the window
#: length (3 x 2 x 3 = 18 configurations; the paper's defaults, 0.25 / 2 / 10 s, are one of
#: them). The other parameters keep the policy's values (5 % violating share, 60 s idle timeout;
#: CATO+'s probe-down after 6 quiet windows): on paper-autoscaled neither the idle timeout
#: (30-180 s) nor the share (1-15 %) changed a run, while these three do.
CATO_SWEEP_REPLICAS_PER_VIOLATION: tuple[float, ...] = (0.1, 0.25, 0.5)
CATO_SWEEP_MAX_EXCEEDED_TIMES: tuple[int, ...] = (1, 2)
CATO_SWEEP_INTERVAL_S: tuple[float, ...] = (5.0, 10.0, 20.0)


#: The sweep of proactive scaling (``cato-plus-proactive``'s family): the headroom over the
#: load proven safe, the window length, and how Algorithm 2 underneath sizes an addition
#: (2 x 3 x 2 = 12 configurations; cold start, trend and calm windows keep their defaults).
PROACTIVE_SWEEP_HEADROOM: tuple[float, ...] = (1.0, 1.25)
PROACTIVE_SWEEP_INTERVAL_S: tuple[float, ...] = CATO_SWEEP_INTERVAL_S
PROACTIVE_SWEEP_SCALE_UP_BY: tuple[str, ...] = ("count", "fraction")


def _scaling_grid(spec: PolicySpec, scaling: str,
                  axes: Sequence[tuple[str, str, str, Sequence[Any]]]) -> dict[str, PolicySpec]:
    """``spec`` at every point of a grid of its scaling parameters: ``axes`` are (label key,
    label unit, parameter, values); the grid's values override the spec's, the others are kept,
    and the label names the point, e.g. ``cato[rpv=0.25,times=2,window=10s]``."""
    if spec.scaling != scaling:
        raise ValueError(f"{spec.label!r} does not scale with {scaling} "
                         f"(it uses {spec.scaling!r})")
    out: dict[str, PolicySpec] = {}
    for point in itertools.product(*(values for *_, values in axes)):
        label = spec.label + "[" + ",".join(
            f"{key}={v if isinstance(v, str) else format(v, 'g')}{unit}"
            for (key, unit, _, _), v in zip(axes, point)) + "]"
        out[label] = replace(spec, label=label, scaling_params={
            **spec.scaling_params, **{param: v for (_, _, param, _), v in zip(axes, point)}})
    return out


def cato_scaling_sweep(spec: PolicySpec) -> dict[str, PolicySpec]:
    """``spec`` (a policy scaling with ``cato``) at every point of the CATO sweep above,
    labelled e.g. ``cato[rpv=0.25,times=2,window=10s]``; the swept parameters override the
    spec's, the others are kept."""
    return _scaling_grid(spec, "cato", [
        ("rpv", "", "replicas_per_violation", CATO_SWEEP_REPLICAS_PER_VIOLATION),
        ("times", "", "max_exceeded_times", CATO_SWEEP_MAX_EXCEEDED_TIMES),
        ("window", "s", "interval_s", CATO_SWEEP_INTERVAL_S)])


def proactive_scaling_sweep(spec: PolicySpec) -> dict[str, PolicySpec]:
    """``spec`` (a policy scaling with ``proactive``) at every point of the proactive sweep,
    labelled e.g. ``cato-plus-proactive[headroom=1.25,window=10s,up=fraction]``."""
    return _scaling_grid(spec, "proactive", [
        ("headroom", "", "headroom", PROACTIVE_SWEEP_HEADROOM),
        ("window", "s", "interval_s", PROACTIVE_SWEEP_INTERVAL_S),
        ("up", "", "scale_up_by", PROACTIVE_SWEEP_SCALE_UP_BY)])


def ray_scaling_sweep(spec: PolicySpec) -> dict[str, PolicySpec]:
    """``spec`` (a policy scaling with ``ray`` whose router is not Ray's, e.g. ``llmd+ray``) at
    every autoscaler point of the Ray-like sweep (target x upscale x downscale delay, 30
    configurations); the routing parameters stay the spec's."""
    return _scaling_grid(spec, "ray", [
        ("target", "", "target_ongoing_requests", RAY_SWEEP_TARGET_ONGOING),
        ("up", "s", "upscale_delay_s", RAY_SWEEP_UPSCALE_DELAY_S),
        ("down", "s", "downscale_delay_s", RAY_SWEEP_DOWNSCALE_DELAY_S)])


def resolve_policies(sc: Scenario, names: Sequence[str]) -> list[PolicySpec]:
    """The specs of ``names`` in order: the scenario's policy labels, single points of the
    prefix sweep by their labels (e.g. ``prefix_aware[abs=16;match=0.5]``), and :data:`RAY_SWEEP`
    expanded by :func:`ray_sweep`. Unknown names raise a ValueError naming them."""
    out: dict[str, PolicySpec] = {}
    for name in names:
        if name == RAY_SWEEP:
            out.update(ray_sweep(sc))
        elif name == GATEWAY_SWEEP:
            out.update(gateway_sweep(sc))
        elif name == PREFIX_SWEEP:
            out.update(prefix_sweep(sc))
        elif name in sc.policies:
            out[name] = sc.policies[name]
        elif name in (points := prefix_sweep(sc)):   # one point of the prefix sweep
            out[name] = points[name]
        else:
            known = [*sc.policies, RAY_SWEEP, GATEWAY_SWEEP, PREFIX_SWEEP]
            raise ValueError(f"unknown policy {name!r} for scenario {sc.name!r}; known: "
                             f"{', '.join(known)}")
    return list(out.values())
