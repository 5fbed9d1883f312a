"""The four Ray Serve variants as plain settings (Ray-free: the benchmark and the docs read them;
:func:`cato.rayserve.app.build_app` turns them into Ray's config objects)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from cato.core.coefficients import preset as preset_coeffs
from cato.rayserve.autoscaling import CatoParams
from cato.rayserve.engine import EngineOptions

VARIANTS = ("ray-serve", "ray-serve-tuned", "ray-serve-cato", "ray-serve-prefix")

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
#: ``ray-serve-prefix``: Ray Serve LLM's ``PrefixCacheAffinityRouter`` at Ray's own defaults
#: (imbalanced_threshold inf: prefix match always, never falling back on load; match rate 0.1)
#: with eviction on, each replica's share of the prefix tree kept to its engine's KV capacity
#: in characters (4 a token; evicted to 90 % of it every 10 s): what the engine can still hold
PREFIX_ROUTER_DEFAULTS: dict[str, Any] = {"imbalanced_threshold": math.inf,
                                          "match_rate_threshold": 0.1, "do_eviction": True,
                                          "eviction_interval_secs": 10}
PREFIX_ROUTER_KWARGS = ("imbalanced_threshold", "match_rate_threshold", "do_eviction",
                        "eviction_threshold_chars", "eviction_target_chars",
                        "eviction_interval_secs")
PREFIX_EVICTION_TARGET = 0.9


def variant_settings(variant: str, engine: EngineOptions | Mapping[str, Any] | None = None, *,
                     num_replicas: int = 2, min_replicas: int | None = None,
                     max_replicas: int | None = None,
                     autoscaling: Mapping[str, Any] | None = None,
                     cato_scaling: Mapping[str, Any] | None = None,
                     router: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a variant sets on the deployment: ``max_ongoing_requests`` (None: Ray's default),
    ``graceful_shutdown_timeout_s`` (None: Ray's), ``router`` (None: Ray's default router; else
    the router's ``kind`` (``cato``: CATO's router; ``prefix``: Ray's
    ``PrefixCacheAffinityRouter``), kwargs and stats period), ``ingress`` (True: the
    :class:`~cato.rayserve.app.OpenAIIngress` stands in front even of one model -- the prefix
    router reads the prompt from the handle call's argument, as behind Ray Serve LLM's ingress),
    ``autoscaling`` (None: fixed ``num_replicas``; else the ``AutoscalingConfig`` fields, with
    ``cato_policy`` holding Algorithm 2's parameters for the CATO variant). ``router`` overrides
    the router's kwargs (CATO's, or the prefix router's :data:`PREFIX_ROUTER_KWARGS`)."""
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
                           "autoscaling": None, "ingress": False}
    scaling: dict[str, Any] = {"min_replicas": lo, "max_replicas": hi,
                               "initial_replicas": num_replicas}
    if variant in ("ray-serve-tuned", "ray-serve-prefix"):
        out["max_ongoing_requests"] = conc
        out["graceful_shutdown_timeout_s"] = LLM_GRACEFUL_SHUTDOWN_S
        scaling.update(TUNED_AUTOSCALING,
                       target_ongoing_requests=max(1.0, TUNED_TARGET_FRACTION * conc))
        if variant == "ray-serve-prefix":
            out["router"] = {"kind": "prefix", "kwargs": prefix_router_kwargs(opts, router),
                             "routing_stats_period_s": None}
            out["ingress"] = True
    elif variant == "ray-serve-cato":
        out["max_ongoing_requests"] = conc
        out["graceful_shutdown_timeout_s"] = LLM_GRACEFUL_SHUTDOWN_S
        kwargs = {"model": opts.model, "coefficients": opts.preset,
                  "time_scale": opts.time_dilation, "max_num_seqs": opts.max_num_seqs,
                  "sla_scale": opts.sla_scale, "default_task": opts.default_task}
        kwargs.update(router or {})
        out["router"] = {"kind": "cato", "kwargs": kwargs,
                         "routing_stats_period_s": CATO_ROUTING_STATS_PERIOD_S}
        params = CatoParams(**dict(cato_scaling or {}))
        params.scaling()   # validates
        scaling.update(CATO_AUTOSCALING, cato_policy=dict(cato_scaling or {}))
    if autoscaled:
        scaling.update(autoscaling or {})
        out["autoscaling"] = scaling
    return out


def prefix_router_kwargs(engine: EngineOptions | Mapping[str, Any] | None = None,
                         overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``PrefixCacheAffinityRouter``'s kwargs for replicas of ``engine``:
    :data:`PREFIX_ROUTER_DEFAULTS`, eviction sized to the engine's KV capacity, then
    ``overrides`` (``imbalanced_threshold`` may be a number >= 0, ``"inf"`` or None for inf).
    ValueError naming an unknown key or a bad value."""
    opts = EngineOptions.from_dict(engine)
    unknown = sorted(set(overrides or {}) - set(PREFIX_ROUTER_KWARGS))
    if unknown:
        raise ValueError(f"unknown prefix router options {unknown}; known: "
                         f"{', '.join(PREFIX_ROUTER_KWARGS)}")
    chars = preset_coeffs(opts.preset).kv_capacity_tokens * 4
    out = dict(PREFIX_ROUTER_DEFAULTS, eviction_threshold_chars=chars,
               eviction_target_chars=int(chars * PREFIX_EVICTION_TARGET))
    out.update(overrides or {})
    thr = out["imbalanced_threshold"]
    try:
        thr = math.inf if thr is None else float(thr)
    except (TypeError, ValueError):
        raise ValueError(f"imbalanced_threshold must be a number >= 0 or 'inf', "
                         f"got {out['imbalanced_threshold']!r}") from None
    if not thr >= 0:
        raise ValueError(f"imbalanced_threshold must be >= 0, got {thr!r}")
    out["imbalanced_threshold"] = thr
    rate = out["match_rate_threshold"]
    if not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"match_rate_threshold must be in [0, 1], got {rate!r}")
    for k in ("eviction_threshold_chars", "eviction_target_chars", "eviction_interval_secs"):
        v = out[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"{k} must be a number > 0, got {v!r}")
    if out["eviction_target_chars"] > out["eviction_threshold_chars"]:
        raise ValueError(f"eviction_target_chars ({out['eviction_target_chars']}) must be <= "
                         f"eviction_threshold_chars ({out['eviction_threshold_chars']})")
    out["do_eviction"] = bool(out["do_eviction"])
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
