"""The policies a scenario compares: a :class:`PolicySpec` (a routing policy plus a scaling
policy under one label), the named policy sets of fixed and autoscaled scenarios (Ray Serve's
defaults and a tuned variant among them), whether a policy is a baseline (:func:`is_baseline`),
and a policy's configuration as JSON (:func:`describe_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class PolicySpec:
    """A routing policy plus a scaling policy under one label."""

    label: str
    routing: str
    scaling: str = "fixed"
    routing_params: Mapping[str, Any] = field(default_factory=dict)
    scaling_params: Mapping[str, Any] = field(default_factory=dict)
    engine_concurrency: int | None = None
    """The gateway's calls per engine under this policy (``None``: the scenario's); a sweep
    point of :func:`~cato.sim.sweeps.gateway_sweep`."""
    engine_scheduling: str = "fcfs"
    """How the engines order their waiting queues: ``"fcfs"`` (vLLM's default) or
    ``"priority"`` (``--scheduling-policy priority``: by the ``priority`` the gateway sends)."""


#: Ray Serve's defaults: max_ongoing_requests=5, target_ongoing_requests=2.
RAY_DEFAULT = dict(max_ongoing_requests=5)
RAY_DEFAULT_SCALING = dict(target_ongoing_requests=2.0)
#: "Tuned for LLMs": as many ongoing requests per replica as the gateway's engine concurrency,
#: and a target at half of it (Ray's LLM serving guidance raises both well above the defaults).
RAY_TUNED_FACTOR = 0.5


def fixed_policies(engine_concurrency: int) -> dict[str, PolicySpec]:
    return {
        "cato": PolicySpec("cato", "cato"),
        "cato-plus": PolicySpec("cato-plus", "cato-plus"),
        "cato-plus-refuse": PolicySpec("cato-plus-refuse", "cato-plus",
                                       routing_params=dict(refuse="infeasible")),
        "round_robin": PolicySpec("round_robin", "round_robin"),
        "least_outstanding": PolicySpec("least_outstanding", "least_outstanding"),
        "ray": PolicySpec("ray", "pow2", routing_params=RAY_DEFAULT),
        "ray-tuned": PolicySpec("ray-tuned", "pow2",
                                routing_params=dict(max_ongoing_requests=engine_concurrency)),
        "edf": PolicySpec("edf", "edf"),
        "llmd": PolicySpec("llmd", "llmd"),
        "oracle": PolicySpec("oracle", "oracle"),
    }


def prefix_policies() -> dict[str, PolicySpec]:
    """The policies of the shared-prefix scenarios (issue 17): CATO with and without cache
    affinity, prefix-blind baselines, and the peer prefix-aware routers at their default
    settings (their sweeps: :func:`~cato.sim.sweeps.prefix_sweep`)."""
    return {
        "cato": PolicySpec("cato", "cato"),
        "cato-plus": PolicySpec("cato-plus", "cato-plus"),
        "cato-prefix": PolicySpec("cato-prefix", "cato-prefix"),
        "round_robin": PolicySpec("round_robin", "round_robin"),
        "least_outstanding": PolicySpec("least_outstanding", "least_outstanding"),
        "llmd": PolicySpec("llmd", "llmd"),
        "session_affinity": PolicySpec("session_affinity", "session_affinity"),
        "prefix_aware": PolicySpec("prefix_aware", "prefix_aware"),
        "llmd_prefix": PolicySpec("llmd_prefix", "llmd_prefix"),
    }


def autoscaled_policies(engine_concurrency: int, **cato_scaling: Any) -> dict[str, PolicySpec]:
    tuned_target = max(1.0, RAY_TUNED_FACTOR * engine_concurrency)
    return {
        "cato": PolicySpec("cato", "cato", "cato", scaling_params=dict(cato_scaling)),
        "cato-plus": PolicySpec("cato-plus", "cato-plus", "cato",
                                scaling_params=dict(quiet_windows_to_shrink=6,
                                                    **cato_scaling)),
        # CATO+ routing with proactive scaling (issue 14, lever 5; core/scaling/proactive.py):
        # Algorithm 2 as CATO+ runs it, sized up by the violating share, plus the forecast
        "cato-plus-proactive": PolicySpec(
            "cato-plus-proactive", "cato-plus", "proactive",
            scaling_params=dict(quiet_windows_to_shrink=6, scale_up_by="fraction",
                                **cato_scaling)),
        "ray": PolicySpec("ray", "pow2", "ray", RAY_DEFAULT, RAY_DEFAULT_SCALING),
        "ray-tuned": PolicySpec("ray-tuned", "pow2", "ray",
                                dict(max_ongoing_requests=engine_concurrency),
                                dict(target_ongoing_requests=tuned_target)),
        "pow2+cato": PolicySpec("pow2+cato", "pow2", "cato",
                                dict(max_ongoing_requests=engine_concurrency),
                                dict(cato_scaling)),
        "round_robin+ray": PolicySpec("round_robin+ray", "round_robin", "ray",
                                      scaling_params=dict(target_ongoing_requests=tuned_target)),
        "llmd+ray": PolicySpec("llmd+ray", "llmd", "ray",
                               scaling_params=dict(target_ongoing_requests=tuned_target)),
        "oracle+cato": PolicySpec("oracle+cato", "oracle", "cato",
                                  scaling_params=dict(cato_scaling)),
    }


#: ``max_ongoing_requests`` standing for "unbounded": more than any run ever has in flight, so
#: the gateway never holds a call back and every replica's engine queues it instead.
UNBOUNDED_ONGOING = 1_000_000_000


#: The scalers that are CATO's own (not baselines): Algorithm 2 and proactive scaling.
CATO_SCALERS = ("cato", "proactive")


def is_baseline(spec: PolicySpec) -> bool:
    """Whether ``spec`` is a baseline CATO's ratio may be taken against: neither CATO's
    routing or scaling nor a clairvoyant oracle (an upper bound, not a baseline)."""
    return (spec.routing not in ("cato", "cato-plus", "cato-prefix", "oracle")
            and spec.scaling not in CATO_SCALERS)


def describe_config(spec: PolicySpec) -> dict[str, Any]:
    """A policy's configuration as JSON: routing and scaling policies and their parameters
    (``max_ongoing_requests`` of :data:`UNBOUNDED_ONGOING` written as ``"unbounded"``)."""
    routing = {k: ("unbounded" if k == "max_ongoing_requests" and v == UNBOUNDED_ONGOING else v)
               for k, v in sorted(spec.routing_params.items())}
    out: dict[str, Any] = {"routing": spec.routing, "routing_params": routing,
                           "scaling": spec.scaling,
                           "scaling_params": dict(sorted(spec.scaling_params.items()))}
    if spec.engine_concurrency is not None:
        out["engine_concurrency"] = spec.engine_concurrency
    if spec.engine_scheduling != "fcfs":
        out["engine_scheduling"] = spec.engine_scheduling
    return out
