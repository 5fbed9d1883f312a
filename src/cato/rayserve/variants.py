"""The three Ray Serve variants as plain settings (Ray-free: the benchmark and the docs read them;
:func:`cato.rayserve.app.build_app` turns them into Ray's config objects)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from cato.rayserve.autoscaling import CatoParams
from cato.rayserve.engine import EngineOptions

VARIANTS = ("ray-serve", "ray-serve-tuned", "ray-serve-cato")

#: ``ray-serve-tuned``: target ongoing requests as a fraction of the engine's concurrency (the
#: simulator's ``ray-tuned`` uses the same factor), and delays for LLM latency: scale up after
#: 20 s (CATO's two 10 s windows), down after 60 s (CATO's idle timeout)
TUNED_TARGET_FRACTION = 0.5
TUNED_AUTOSCALING: dict[str, Any] = {"upscale_delay_s": 20.0, "downscale_delay_s": 60.0,
                                     "look_back_period_s": 20.0}
#: ``ray-serve-cato``: Ray's own delays off (Algorithm 2 has its hysteresis), metrics pushed
#: every 2 s (five reports per 10 s window), replicas' load reported to the router every 1 s
CATO_AUTOSCALING: dict[str, Any] = {"upscale_delay_s": 0.0, "downscale_delay_s": 0.0,
                                    "metrics_interval_s": 2.0, "look_back_period_s": 10.0}
CATO_ROUTING_STATS_PERIOD_S = 1.0
#: LLM calls can run for minutes: let a replica being scaled down finish them (Ray's default
#: is 20 s); the ``ray-serve`` variant keeps Ray's default
LLM_GRACEFUL_SHUTDOWN_S = 120.0


def variant_settings(variant: str, engine: EngineOptions | Mapping[str, Any] | None = None, *,
                     num_replicas: int = 2, min_replicas: int | None = None,
                     max_replicas: int | None = None,
                     autoscaling: Mapping[str, Any] | None = None,
                     cato_scaling: Mapping[str, Any] | None = None,
                     router: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a variant sets on the deployment: ``max_ongoing_requests`` (None: Ray's default),
    ``graceful_shutdown_timeout_s`` (None: Ray's), ``router`` (None: Ray's default router; else
    the CATO router's kwargs and stats period), ``autoscaling`` (None: fixed ``num_replicas``;
    else the ``AutoscalingConfig`` fields, with ``cato_policy`` holding Algorithm 2's
    parameters for the CATO variant)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Ray Serve variant {variant!r}; known: {', '.join(VARIANTS)}")
    opts = EngineOptions.from_dict(engine)
    if num_replicas < 0:
        raise ValueError(f"num_replicas must be >= 0, got {num_replicas}")
    autoscaled = min_replicas is not None or max_replicas is not None
    lo = 1 if min_replicas is None else min_replicas
    hi = max(lo, num_replicas) if max_replicas is None else max_replicas
    if autoscaled and not 0 <= lo <= num_replicas <= hi:
        raise ValueError(f"need 0 <= min_replicas ({lo}) <= replicas ({num_replicas}) <= "
                         f"max_replicas ({hi})")
    conc = opts.resolved_concurrency
    out: dict[str, Any] = {"variant": variant, "max_ongoing_requests": None,
                           "graceful_shutdown_timeout_s": None, "router": None,
                           "autoscaling": None}
    scaling: dict[str, Any] = {"min_replicas": lo, "max_replicas": hi,
                               "initial_replicas": num_replicas}
    if variant == "ray-serve-tuned":
        out["max_ongoing_requests"] = conc
        out["graceful_shutdown_timeout_s"] = LLM_GRACEFUL_SHUTDOWN_S
        scaling.update(TUNED_AUTOSCALING,
                       target_ongoing_requests=max(1.0, TUNED_TARGET_FRACTION * conc))
    elif variant == "ray-serve-cato":
        out["max_ongoing_requests"] = conc
        out["graceful_shutdown_timeout_s"] = LLM_GRACEFUL_SHUTDOWN_S
        kwargs = {"model": opts.model, "coefficients": opts.preset,
                  "time_scale": opts.time_dilation, "max_num_seqs": opts.max_num_seqs,
                  "sla_scale": opts.sla_scale, "default_task": opts.default_task}
        kwargs.update(router or {})
        out["router"] = {"kwargs": kwargs, "routing_stats_period_s": CATO_ROUTING_STATS_PERIOD_S}
        params = CatoParams(**dict(cato_scaling or {}))
        params.scaling()   # validates
        scaling.update(CATO_AUTOSCALING, cato_policy=dict(cato_scaling or {}))
    if autoscaled:
        scaling.update(autoscaling or {})
        out["autoscaling"] = scaling
    return out


@dataclass(frozen=True)
class ModelSpec:
    """One model of an application: its engines and replica count (bounds: autoscaling)."""

    engine: EngineOptions
    replicas: int = 2
    min_replicas: int | None = None
    max_replicas: int | None = None


def model_specs(models: Sequence[Mapping[str, Any]] | None, *,
                engine: EngineOptions | Mapping[str, Any] | None = None, num_replicas: int = 2,
                min_replicas: int | None = None,
                max_replicas: int | None = None) -> list[ModelSpec]:
    """The models of an application: ``models`` (``[{"engine", "replicas", "min_replicas",
    "max_replicas"}, ...]``), or the one model of the other arguments."""
    if not models:
        return [ModelSpec(EngineOptions.from_dict(engine), num_replicas, min_replicas,
                          max_replicas)]
    out = []
    for i, m in enumerate(models):
        unknown = sorted(set(m) - {"engine", "replicas", "min_replicas", "max_replicas"})
        if unknown:
            raise ValueError(f"models[{i}]: unknown keys {unknown}")
        out.append(ModelSpec(EngineOptions.from_dict(m.get("engine")),
                             int(m.get("replicas", num_replicas)),
                             None if m.get("min_replicas") is None else int(m["min_replicas"]),
                             None if m.get("max_replicas") is None else int(m["max_replicas"])))
    return out
