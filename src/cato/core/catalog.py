"""The four default coding tasks of the benchmark protocol (section 2) and their multi-step
variants. Everything here is a default: a deployment declares its own tasks in config."""

from __future__ import annotations

from typing import Mapping

from cato.core.conditions import Condition
from cato.core.task import CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType

TASK_NAMES = ("completion", "generation", "summarization", "translation")

_LENGTHS: dict[str, tuple[LengthDist, LengthDist]] = {
    "completion": (LengthDist(768, 0.8, 64, 2048), LengthDist(12, 0.8, 1, 64)),
    "generation": (LengthDist(200, 0.6, 32, 1024), LengthDist(128, 0.7, 16, 512)),
    "summarization": (LengthDist(320, 0.7, 64, 2048), LengthDist(40, 0.6, 8, 128)),
    "translation": (LengthDist(120, 0.6, 32, 512), LengthDist(72, 0.6, 16, 256)),
}
_SLA: dict[str, tuple[SlaKind, float]] = {
    "completion": (SlaKind.TTFT, 0.250),
    "generation": (SlaKind.TTFT, 0.500),
    "summarization": (SlaKind.E2E, 3.0),
    "translation": (SlaKind.E2E, 5.0),
}
#: Secondary E2E bounds of the TTFT-critical tasks (BENCHMARK_PROTOCOL.md section 2): the whole
#: task, a generation's repair included, must finish within them. Scaled by ``sla_scale`` like
#: the SLAs. The E2E-critical tasks need none: their SLA bounds every node.
E2E_BOUND_S: dict[str, float] = {"completion": 2.0, "generation": 10.0}

#: Modelled costs of the non-LLM steps of the multi-step variants (retrieval from a local code
#: index, a parse check of generated code). The live gateway measures the real ones.
RETRIEVE_COST = CostModel(median_s=0.030, sigma=0.5)
VALIDATE_COST = CostModel(median_s=0.005, sigma=0.3)
REPAIR_PROBABILITY = 0.3


def single_step_tasks(
    models: Mapping[str, str], *, sla_scale: float = 1.0, completion_sla_s: float | None = None
) -> dict[str, TaskType]:
    """One LLM node per task. ``models`` maps task name -> model name."""
    out: dict[str, TaskType] = {}
    for name in TASK_NAMES:
        lin, lout = _LENGTHS[name]
        kind, sla = _SLA[name]
        if name == "completion" and completion_sla_s is not None:
            sla = completion_sla_s
        node = Node("llm", NodeKind.LLM, model=models[name], input_tokens=lin, output_tokens=lout)
        out[name] = TaskType(name, (node,), kind, sla * sla_scale,
                             e2e_bound_s=_bound(name, sla_scale)).validate()
    return out


def multi_step_tasks(
    models: Mapping[str, str], *, sla_scale: float = 1.0, completion_sla_s: float | None = None
) -> dict[str, TaskType]:
    """The protocol's multi-step variants: summarisation = retrieve -> LLM; generation = LLM ->
    validate -> LLM repair (runs with probability 0.3, i.e. when validation fails). Completion and
    translation stay single-step."""
    tasks = single_step_tasks(models, sla_scale=sla_scale, completion_sla_s=completion_sla_s)
    lin, lout = _LENGTHS["summarization"]
    kind, sla = _SLA["summarization"]
    tasks["summarization"] = TaskType(
        "summarization",
        (
            Node("retrieve", NodeKind.RETRIEVE, cost=RETRIEVE_COST),
            Node("llm", NodeKind.LLM, deps=("retrieve",), model=models["summarization"],
                 input_tokens=lin, output_tokens=lout),
        ),
        kind,
        sla * sla_scale,
    ).validate()
    lin, lout = _LENGTHS["generation"]
    kind, sla = _SLA["generation"]
    tasks["generation"] = TaskType(
        "generation",
        (
            Node("llm", NodeKind.LLM, model=models["generation"], input_tokens=lin,
                 output_tokens=lout),
            Node("validate", NodeKind.VALIDATE, deps=("llm",), cost=VALIDATE_COST),
            Node("repair", NodeKind.LLM, deps=("validate",), model=models["generation"],
                 input_tokens=LengthDist(400, 0.6, 64, 2048), output_tokens=lout,
                 run_probability=REPAIR_PROBABILITY,
                 when=Condition("validate", failed=True)),
        ),
        kind,
        sla * sla_scale,
        user_facing="llm",
        e2e_bound_s=_bound("generation", sla_scale),
    ).validate()
    return tasks


def _bound(name: str, sla_scale: float) -> float | None:
    b = E2E_BOUND_S.get(name)
    return None if b is None else b * sla_scale
