"""The SLA-class levers of ``cato-prefix`` as named policies of the shared-prefix scenarios
(``ide-mixed``, ``ide-sessions``, ``repo-shared``; BENCHMARKS section 12.3): the lax refusal
margin with early rejection, the lax KV cap and the class split
(:mod:`cato.core.routing.class_levers`). Each setting is one of the screen's
(seeds 0-1, 120 s); the screen's other values are reachable through ``routing_params``."""

from __future__ import annotations

from cato.sim.policies import PolicySpec

#: label -> ``cato-prefix`` parameters
CLASS_LEVER_PARAMS: dict[str, dict[str, object]] = {
    "cato-prefix-refuse-m90": {"refuse": "infeasible", "lax_refuse_margin": 0.9},
    "cato-prefix-refuse-m80": {"refuse": "infeasible", "lax_refuse_margin": 0.8},
    "cato-prefix-kv64k": {"lax_kv_tokens": 64_000},
    "cato-prefix-split25": {"ttft_share": 0.25},
}


def class_lever_policies() -> dict[str, PolicySpec]:
    """:data:`CLASS_LEVER_PARAMS` as policy specs on ``cato-prefix``."""
    return {label: PolicySpec(label, "cato-prefix", routing_params=dict(params))
            for label, params in CLASS_LEVER_PARAMS.items()}
