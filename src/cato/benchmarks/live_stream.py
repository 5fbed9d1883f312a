"""The stream of ``cato bench run`` (:mod:`cato.benchmarks.live_load`): the simulator's arrivals,
tasks and lengths for (scenario, rate, seed), the scenario's arrival process, duration and mix
optionally overridden, with a real coding prompt and a feasibility flag per request.

A shared-prefix scenario (``ide-sessions``, ``repo-shared``, ``ide-mixed``: the simulator's
arrivals carry each prompt's KV block hashes) gets prompts built from those hashes
(:func:`cato.workloads.prefix_prompts.block_prompt_text`): real text, one 64-character piece per
16-token block, so two live prompts share exactly the leading blocks their simulated
counterparts share, and an engine's prefix cache, the gateway's prefix index and Ray Serve's
``PrefixCacheAffinityRouter`` see the scenario's sharing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from cato.core.coefficients import ReplicaCoefficients, slowed
from cato.core.feasibility import feasible_in_isolation
from cato.sim import arrivals as arr
from cato.sim.scenarios import Scenario, build_stream_for, scenario as get_scenario, with_sla_scale
from cato.sim.workload import TASK_NAMES, TaskArrival, parse_mix
from cato.text import count_tokens
from cato.workloads.prefix_prompts import block_prompt_text
from cato.workloads.prompts import PromptSource

__all__ = [
    "ARRIVAL_OVERRIDES",
    "LiveRequest",
    "build_live_stream",
    "live_scenario",
    "scenario_stream",
]

#: Arrival processes that can replace a scenario's own (``None`` keeps the scenario's).
ARRIVAL_OVERRIDES: tuple[str, ...] = ("poisson", "gamma", "onoff", "azure")


@dataclass(frozen=True, slots=True)
class LiveRequest:
    """One request of a live stream: when to send it, to which model, what, and its SLA.

    ``prompt_tokens`` is the prompt's length under the 4-characters rule
    (:func:`cato.text.count_tokens`, how ``cato engine`` and the gateway count), which is close
    to, not equal to, the drawn input length; ``max_tokens`` is the drawn output length.
    ``feasible``: whether the request meets its SLA alone on an idle replica by the scenario's
    latency model (``None``: unknown), copied into its record.
    """

    id: int
    arrival_s: float
    task: str
    model: str
    prompt: str
    max_tokens: int
    prompt_tokens: int
    sla_kind: Literal["ttft", "e2e"]
    sla_s: float
    feasible: bool | None = None
    e2e_bound_s: float | None = None
    """The task's secondary E2E bound (TTFT tasks), judged at the client like the SLA."""

    def body(self) -> dict[str, Any]:
        return {"model": self.model, "prompt": self.prompt, "max_tokens": self.max_tokens,
                "stream": True, "ignore_eos": True}


@dataclass(frozen=True)
class _GammaScenario(Scenario):
    """A scenario whose arrivals are a gamma renewal process of any CV (the scenarios module
    names only CV 2 and 4); ``build_stream_for`` seeds it exactly as any other."""

    cv: float = 4.0

    def arrivals(self, rate_rps: float, rng: np.random.Generator) -> np.ndarray:
        return arr.gamma_renewal(rate_rps, self.cv, self.duration_s, rng)


def _with_arrival(sc: Scenario, arrival: str, cv: float) -> Scenario:
    if arrival not in ARRIVAL_OVERRIDES:
        raise ValueError(f"unknown arrival process {arrival!r}; known: "
                         f"{', '.join(ARRIVAL_OVERRIDES)}")
    if arrival != "gamma":
        return replace(sc, arrival=arrival)
    if not (math.isfinite(cv) and cv > 0):
        raise ValueError(f"gamma CV must be a positive number, got {cv!r}")
    base = {f.name: getattr(sc, f.name) for f in fields(Scenario)}
    base["arrival"] = f"gamma-cv{cv:g}"
    return _GammaScenario(**base, cv=cv)


def _check_single_step(sc: Scenario) -> None:
    names = TASK_NAMES if sc.arrival == "azure" else [k for k, w in sc.mix.items() if w > 0]
    for name in names:
        task = sc.tasks.get(name)
        if task is None:
            continue
        if len(task.nodes) != 1 or not task.nodes[0].is_llm:
            steps = " -> ".join(n.name for n in task.nodes)
            raise ValueError(
                f"scenario {sc.name!r}: task {name!r} is multi-step ({steps}); a live run sends "
                f"single-step tasks only (one LLM call each) -- choose a single-step scenario or "
                f"a --mix without {name!r}")


def live_scenario(scenario: str, *, duration_s: float | None = None, arrival: str | None = None,
                  cv: float = 4.0, mix: str | Mapping[str, float] | None = None,
                  sla_scale: float = 1.0, trace_start_s: float | None = None) -> Scenario:
    """The named scenario with the overrides applied; ValueError naming a bad value.
    ``trace_start_s`` (0 included) starts a replayed trace's window that many (scaled) seconds
    in, for every seed; ``None`` (the CLI's default) keeps one window per seed (seed 0's starts
    at the trace's beginning)."""
    sc = get_scenario(scenario)
    if trace_start_s is not None:
        if not (math.isfinite(trace_start_s) and trace_start_s >= 0):
            raise ValueError(f"trace start must be >= 0 s, got {trace_start_s!r}")
        sc = replace(sc, trace_start_s=float(trace_start_s))
    if duration_s is not None:
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration must be > 0 s, got {duration_s!r}")
        sc = replace(sc, duration_s=float(duration_s))
    if mix is not None:
        sc = replace(sc, mix=parse_mix(mix, known=sc.tasks) if isinstance(mix, str)
                     else dict(mix))
    if arrival is not None:
        sc = _with_arrival(sc, arrival, cv)
    if sla_scale != 1.0:
        sc = with_sla_scale(sc, sla_scale)
    _check_single_step(sc)
    return sc


def scenario_stream(scenario: str, rate: float, seed: int, *, duration_s: float | None = None,
                    arrival: str | None = None, cv: float = 4.0,
                    mix: str | Mapping[str, float] | None = None,
                    sla_scale: float = 1.0, trace_start_s: float | None = None
                    ) -> tuple[Scenario, list[TaskArrival]]:
    """The scenario (overrides applied) and its simulator stream for (rate, seed)."""
    sc = live_scenario(scenario, duration_s=duration_s, arrival=arrival, cv=cv, mix=mix,
                       sla_scale=sla_scale, trace_start_s=trace_start_s)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be > 0 req/s, got {rate!r}")
    return sc, build_stream_for(sc, rate, seed)


def build_live_stream(scenario: str, rate: float, seed: int, *, duration_s: float | None = None,
                      arrival: str | None = None, mix: str | Mapping[str, float] | None = None,
                      sla_scale: float = 1.0, model: str | None = None,
                      cv: float = 4.0, trace_start_s: float | None = None
                      ) -> list[LiveRequest]:
    """The live stream of (scenario, rate, seed): the simulator's arrivals, tasks and lengths
    with a real prompt each; identical for every system under comparison.

    ``arrival``: one of :data:`ARRIVAL_OVERRIDES` (``gamma`` with coefficient of variation
    ``cv``) or ``None`` for the scenario's own; ``mix``: ``"A"``, ``"B"``,
    ``"task=weight,..."`` or a mapping; ``model`` replaces every task's model name.
    """
    sc, stream = scenario_stream(scenario, rate, seed, duration_s=duration_s, arrival=arrival,
                                 cv=cv, mix=mix, sla_scale=sla_scale,
                                 trace_start_s=trace_start_s)
    prompts = PromptSource(seed)
    coeffs = None if model is not None else {
        d.model: d.coeffs if sla_scale == 1.0 else slowed(d.coeffs, sla_scale)
        for d in sc.deployments}
    return [_live_request(sc, a, prompts, model, coeffs) for a in stream]


def _live_request(sc: Scenario, a: TaskArrival, prompts: PromptSource, model: str | None,
                  coeffs: Mapping[str, ReplicaCoefficients] | None) -> LiveRequest:
    task = sc.tasks[a.task]
    node = task.nodes[0]
    n_in, n_out = a.lengths[node.name]
    blocks = None if a.prefixes is None else a.prefixes.get(node.name)
    if blocks is not None:   # a shared-prefix scenario: the simulator's blocks, as text
        text = block_prompt_text(blocks, n_in, tail_key=a.id)
    else:
        text = prompts.prompt_near_tokens(a.task, n_in).text
    n_prompt = count_tokens(text)
    kind: Literal["ttft", "e2e"] = "ttft" if task.sla_kind.value == "ttft" else "e2e"
    feasible = None
    if coeffs is not None and node.model in coeffs:
        feasible = feasible_in_isolation(task, {node.name: (n_prompt, n_out)}, coeffs)
    return LiveRequest(id=a.id, arrival_s=a.arrival_s, task=a.task,
                       model=model or node.model or a.task, prompt=text, max_tokens=n_out,
                       prompt_tokens=n_prompt, sla_kind=kind, sla_s=task.sla_s,
                       feasible=feasible, e2e_bound_s=task.e2e_bound_s)
