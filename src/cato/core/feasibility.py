"""Feasibility in isolation (BENCHMARK_PROTOCOL.md section 3): could a request meet its SLA at
all, alone on idle replicas?

Rule. A request's *isolated latency* is what the latency model
(:func:`cato.core.coefficients.isolated_ttft_ms` / :func:`~cato.core.coefficients.isolated_e2e_ms`,
the step model on an idle replica, batch of one) gives for its own drawn lengths, along its
task's DAG with unlimited parallelism and no queueing:

* an LLM node takes its isolated E2E for its own ``(n_in, n_out)``; a non-LLM node its own drawn
  cost; a skipped conditional node nothing;
* a node starts when all its dependencies are done: ``EF(node) = max(EF(deps)) + its time``;
* a TTFT task's isolated latency is ``max(EF(deps of the user-facing node))`` plus the
  user-facing node's isolated TTFT; an E2E task's is the latest ``EF`` of any node.

The request is *feasible in isolation* when that latency is at most its SLA (seconds). For a
single-step task this is the isolated TTFT (TTFT task) or E2E (E2E task) of its one call. The
simulator marks every request so at arrival; the live load generator does the same where it knows
the engines' latency model. Pure arithmetic, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from cato.core.coefficients import ReplicaCoefficients, isolated_e2e_ms, isolated_ttft_ms
from cato.core.task import SlaKind, TaskType

__all__ = ["feasible_in_isolation", "isolated_latency_s"]


def isolated_latency_s(
    task: TaskType,
    lengths: Mapping[str, tuple[int, int]],
    coeffs_by_model: Mapping[str, ReplicaCoefficients],
    *,
    tool_costs_s: Mapping[str, float] | None = None,
    skipped: Collection[str] = (),
) -> float:
    """The request's latency by its task's SLA kind, alone on idle replicas (rule in the module
    docstring). ``lengths`` maps each LLM node that runs to ``(n_in, n_out)``; ``tool_costs_s``
    each non-LLM node that runs to its cost (s). KeyError names a missing length, cost or model."""
    costs = tool_costs_s or {}
    finish: dict[str, float] = {}
    uf = task.user_facing_node
    uf_ttft = 0.0
    for node in task.nodes:   # topological order
        start = max((finish[d] for d in node.deps), default=0.0)
        if node.name in skipped:
            finish[node.name] = start
            continue
        if node.is_llm:
            if node.model not in coeffs_by_model:
                raise KeyError(f"task {task.name!r} node {node.name!r}: no latency model for "
                               f"model {node.model!r}")
            if node.name not in lengths:
                raise KeyError(f"task {task.name!r}: no lengths for LLM node {node.name!r}")
            c = coeffs_by_model[node.model]  # type: ignore[index]
            n_in, n_out = lengths[node.name]
            finish[node.name] = start + isolated_e2e_ms(c, int(n_in), int(n_out)) / 1000.0
            if node.name == uf:
                uf_ttft = start + isolated_ttft_ms(c, int(n_in)) / 1000.0
        else:
            if node.name not in costs:
                raise KeyError(f"task {task.name!r}: no cost for non-LLM node {node.name!r}")
            finish[node.name] = start + float(costs[node.name])
    if task.sla_kind is SlaKind.TTFT:
        return math.inf if uf in skipped else uf_ttft   # no first token, never met
    return max(finish.values(), default=0.0)


def feasible_in_isolation(
    task: TaskType,
    lengths: Mapping[str, tuple[int, int]],
    coeffs_by_model: Mapping[str, ReplicaCoefficients],
    *,
    sla_s: float | None = None,
    tool_costs_s: Mapping[str, float] | None = None,
    skipped: Collection[str] = (),
) -> bool:
    """Whether :func:`isolated_latency_s` is at most the SLA (``sla_s``, default the task's)."""
    limit = task.sla_s if sla_s is None else sla_s
    lat = isolated_latency_s(task, lengths, coeffs_by_model, tool_costs_s=tool_costs_s,
                             skipped=skipped)
    return lat <= limit
