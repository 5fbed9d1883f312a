"""Workload and engine drift in the simulator (issue 16, part 5): a scheduled slow-down of a
model's engines and a drift of output lengths, and the slack plans each replan mode uses.

A :class:`Drift` (``SimConfig.drift``) says *when* (``at_s`` seconds after the stream's first
arrival) and *what*:

* ``slowdown``: model -> factor. At ``at_s`` every engine of the model runs ``factor`` times
  slower (:func:`~cato.core.coefficients.slowed`: every step time scaled; a co-located tenant,
  thermal limits), and so does every replica started later. The simulator swaps each READY
  replica for a slowed one at that instant: the old engine gets no new work and finishes its
  in-flight calls at the old speed (it is drained), the new one takes its place with no cold
  start. For the seconds of that drain the pool holds both; capacity is overstated by at most
  the calls in flight then. The gateway is not told: its estimator keeps the profile's
  coefficients (its learned correction and the re-profiler see the change).
* ``output_scale``: task -> factor. Every LLM node of a request of that task arriving at or after
  ``at_s`` generates ``round(n_out * factor)`` tokens (the stream is rewritten before the run, so
  records, feasibility and engines agree); the plans' expected lengths stay the profile's.

Replan modes (``SimConfig.replan``): ``"fixed"`` keeps the start-up plans (today's behaviour,
the default); ``"adaptive"`` re-estimates node baselines from observed calls and recomputes a
task's plan when they drift (:class:`~cato.core.reprofile.Reprofiler`); ``"oracle"`` switches,
at ``at_s``, to the plans of the true post-drift baselines (:func:`true_baselines`). Every task
instance keeps the plan in force at its arrival.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from cato.core.coefficients import (
    ReplicaCoefficients, isolated_e2e_ms, isolated_ttft_ms, slowed,
)
from cato.core.slack import NodeBaseline
from cato.core.task import LengthDist, Node, NodeKind, SlaKind, TaskType
from cato.sim.workload import TaskArrival

REPLAN_MODES = ("fixed", "adaptive", "oracle")


@dataclass(frozen=True)
class Drift:
    """A scheduled change of the engines and the workload (module docstring)."""

    at_s: float
    slowdown: Mapping[str, float] = field(default_factory=dict)
    output_scale: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.at_s >= 0:
            raise ValueError(f"drift.at_s must be >= 0, got {self.at_s}")
        for what, m in (("slowdown", self.slowdown), ("output_scale", self.output_scale)):
            for k, f in m.items():
                if not f > 0:
                    raise ValueError(f"drift.{what}[{k!r}] must be > 0, got {f}")

    def engine_coeffs(self, model: str, coeffs: ReplicaCoefficients) -> ReplicaCoefficients:
        """The coefficients of ``model``'s engines after the drift."""
        f = self.slowdown.get(model)
        return coeffs if f is None or f == 1.0 else slowed(coeffs, f)

    def apply_to_stream(self, stream: Sequence[TaskArrival]) -> list[TaskArrival]:
        """``stream`` with the output drift applied to arrivals at or after ``at_s`` (relative
        to the first arrival); unchanged arrivals are the same objects."""
        if not self.output_scale or not stream:
            return list(stream)
        t = stream[0].arrival_s + self.at_s
        out: list[TaskArrival] = []
        for a in stream:
            f = self.output_scale.get(a.task)
            if f is None or a.arrival_s < t:
                out.append(a)
                continue
            lengths = {n: (i, max(1, round(o * f))) for n, (i, o) in a.lengths.items()}
            out.append(replace(a, lengths=lengths))
        return out


def true_baselines(task: TaskType, coeffs_by_model: Mapping[str, ReplicaCoefficients],
                   drift: Drift) -> dict[str, NodeBaseline]:
    """The node baselines after ``drift`` (the oracle's): each LLM node on its model's slowed
    engines at its typical input and its typical output times the task's output scale;
    non-LLM nodes at their cost model's median (unchanged)."""
    f = drift.output_scale.get(task.name, 1.0)
    out: dict[str, NodeBaseline] = {}
    for n in task.nodes:
        if n.is_llm:
            assert n.model is not None and n.input_tokens is not None \
                and n.output_tokens is not None
            c = drift.engine_coeffs(n.model, coeffs_by_model[n.model])
            n_in = n.input_tokens.typical
            n_out = max(1, round(n.output_tokens.typical * f))
            out[n.name] = NodeBaseline(isolated_ttft_ms(c, n_in) / 1000.0,
                                       isolated_e2e_ms(c, n_in, n_out) / 1000.0)
        else:
            assert n.cost is not None
            out[n.name] = NodeBaseline(n.cost.median_s, n.cost.median_s)
    return out


def draft_refine_task(sla_s: float = 14.0) -> TaskType:
    """The drift experiment's task: an E2E-critical chain of two LLM calls on two models,
    ``draft`` (model ``drafter``: 512 -> 128 tokens) then ``refine`` (``refiner``: 768 -> 256),
    SLA ``sla_s``. Unlike the catalogue's tasks, its first LLM call is not the last node, so its
    deadline is the plan's (``S * base(draft) / L``) and moves when the baselines do."""
    return TaskType(
        "draft-refine",
        (Node("draft", NodeKind.LLM, model="drafter", input_tokens=LengthDist(512, 0.5, 64, 2048),
              output_tokens=LengthDist(128, 0.5, 16, 512)),
         Node("refine", NodeKind.LLM, deps=("draft",), model="refiner",
              input_tokens=LengthDist(768, 0.5, 64, 2048),
              output_tokens=LengthDist(256, 0.5, 16, 1024))),
        SlaKind.E2E, sla_s).validate()
