"""Task mixes and request streams: fractions, common random numbers, clipping, trace replay."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cato.core.task import CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType
from cato.sim import arrivals as A
from cato.sim import azure_trace as T
from cato.sim import workload as W


def _llm(name: str, n_in: LengthDist, n_out: LengthDist, deps: tuple[str, ...] = (), p: float = 1.0) -> Node:
    return Node(
        name, NodeKind.LLM, deps=deps, model="m", input_tokens=n_in, output_tokens=n_out,
        run_probability=p,
    )


def make_tasks() -> dict[str, TaskType]:
    completion = TaskType(
        "completion",
        (_llm("complete", LengthDist(768, 0.8, 64, 2048), LengthDist(12, 0.8, 1, 64)),),
        SlaKind.TTFT,
        0.25,
    )
    generation = TaskType(
        "generation",
        (
            _llm("generate", LengthDist(200, 0.6, 32, 1024), LengthDist(128, 0.7, 16, 512)),
            Node("validate", NodeKind.VALIDATE, deps=("generate",), cost=CostModel(0.02, 0.3)),
            _llm(
                "repair", LengthDist(400, 0.5, 64, 2048), LengthDist(128, 0.7, 16, 512),
                deps=("validate",), p=0.3,
            ),
        ),
        SlaKind.TTFT,
        0.5,
        user_facing="generate",
    )
    summarization = TaskType(
        "summarization",
        (
            Node("retrieve", NodeKind.RETRIEVE, cost=CostModel(0.05, 0.5)),
            _llm("summarize", LengthDist(320, 0.7, 64, 2048), LengthDist(40, 0.6, 8, 128), deps=("retrieve",)),
        ),
        SlaKind.E2E,
        3.0,
    )
    translation = TaskType(
        "translation",
        (_llm("translate", LengthDist(120, 0.6, 32, 512), LengthDist(72, 0.6, 16, 256)),),
        SlaKind.E2E,
        5.0,
    )
    tasks = {t.name: t.validate() for t in (completion, generation, summarization, translation)}
    return tasks


TASKS = make_tasks()


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---- mixes ------------------------------------------------------------------------------------------
def test_named_mixes() -> None:
    assert dict(W.MIX_A) == {"completion": 0.70, "generation": 0.10, "summarization": 0.10, "translation": 0.10}
    assert dict(W.MIX_B) == {k: 0.25 for k in W.TASK_NAMES}
    assert W.parse_mix("A") == dict(W.MIX_A)
    assert W.parse_mix(" b ") == dict(W.MIX_B)
    with pytest.raises(TypeError):
        W.MIX_A["completion"] = 1.0  # type: ignore[index]


def test_parse_mix_custom_normalises() -> None:
    assert W.parse_mix("completion=0.5,generation=0.5") == {"completion": 0.5, "generation": 0.5}
    m = W.parse_mix("completion = 7, translation=3")
    assert m == pytest.approx({"completion": 0.7, "translation": 0.3})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("completion=0.5,foo=0.5", "foo"),
        ("completion=abc", "abc"),
        ("completion", "completion"),
        ("completion=0.5,,generation=0.5", "''"),
        ("completion=-1", "-1"),
        ("completion=0,generation=0", "sum"),
        ("completion=1,completion=2", "twice"),
        ("completion=inf", "inf"),
        ("", "empty"),
    ],
)
def test_parse_mix_errors(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        W.parse_mix(text)


def test_observed_mix_fractions() -> None:
    names = W.choose_tasks(20_000, W.MIX_A, rng(1))
    counts = Counter(names)
    for k, p in W.MIX_A.items():
        assert counts[k] / 20_000 == pytest.approx(p, abs=0.01)
    # Zero weight is never chosen; mapping order does not matter.
    only = W.choose_tasks(2000, {"translation": 0.0, "completion": 1.0}, rng(2))
    assert set(only) == {"completion"}
    assert W.choose_tasks(500, {"generation": 0.3, "completion": 0.7}, rng(3)) == W.choose_tasks(
        500, {"completion": 0.7, "generation": 0.3}, rng(3)
    )


# ---- build_stream ---------------------------------------------------------------------------------------
def _stream(seed: int, n_seconds: float = 200.0, mix: dict[str, float] | None = None) -> list[W.TaskArrival]:
    times = A.poisson(10.0, n_seconds, rng(100))
    return W.build_stream(times, TASKS, mix or dict(W.MIX_B), rng(seed))


def test_stream_identical_for_seed() -> None:
    a, b, c = _stream(5), _stream(5), _stream(6)
    assert a == b
    assert a != c
    assert [r.arrival_s for r in a] == [r.arrival_s for r in c]


def test_stream_structure_and_bounds() -> None:
    s = _stream(1)
    times = A.poisson(10.0, 200.0, rng(100))
    assert [r.id for r in s] == list(range(len(times)))
    assert [r.arrival_s for r in s] == times.tolist()
    for r in s:
        task = TASKS[r.task]
        assert set(r.lengths) == {n.name for n in task.nodes if n.is_llm}
        assert set(r.tool_costs_s) == {n.name for n in task.nodes if not n.is_llm}
        for n in task.nodes:
            if n.is_llm:
                assert n.input_tokens is not None and n.output_tokens is not None
                n_in, n_out = r.lengths[n.name]
                assert isinstance(n_in, int) and isinstance(n_out, int)
                assert n.input_tokens.lo <= n_in <= n.input_tokens.hi
                assert n.output_tokens.lo <= n_out <= n.output_tokens.hi
            else:
                assert r.tool_costs_s[n.name] > 0.0
        assert r.skipped <= {"repair"}


def test_stream_mix_and_conditional_rate() -> None:
    s = W.build_stream(A.poisson(50.0, 200.0, rng(0)), TASKS, dict(W.MIX_A), rng(9))
    counts = Counter(r.task for r in s)
    for k, p in W.MIX_A.items():
        assert counts[k] / len(s) == pytest.approx(p, abs=0.02)
    gens = [r for r in s if r.task == "generation"]
    skipped = sum("repair" in r.skipped for r in gens) / len(gens)
    assert skipped == pytest.approx(0.7, abs=0.05)
    outs = [r.lengths["complete"][1] for r in s if r.task == "completion"]
    assert float(np.median(outs)) == pytest.approx(12, abs=1.5)


def test_stream_lengths_not_perturbed_by_costs() -> None:
    # Changing a cost model (a different tool-cost stream) leaves task choice and lengths alone.
    tasks2 = dict(TASKS)
    summ = TASKS["summarization"]
    tasks2["summarization"] = TaskType(
        summ.name,
        (Node("retrieve", NodeKind.RETRIEVE, cost=CostModel(0.05, 0.0)), summ.nodes[1]),
        summ.sla_kind,
        summ.sla_s,
    )
    times = A.poisson(10.0, 100.0, rng(0))
    a = W.build_stream(times, TASKS, dict(W.MIX_B), rng(4))
    b = W.build_stream(times, tasks2, dict(W.MIX_B), rng(4))
    assert [(r.task, r.lengths, r.skipped) for r in a] == [(r.task, r.lengths, r.skipped) for r in b]


def test_build_stream_bad_inputs() -> None:
    with pytest.raises(ValueError, match="nope"):
        W.build_stream([0.0, 1.0], TASKS, {"nope": 1.0}, rng())
    with pytest.raises(ValueError, match="sorted"):
        W.build_stream([2.0, 1.0], TASKS, dict(W.MIX_B), rng())
    with pytest.raises(ValueError, match="-1.0"):
        W.build_stream([-1.0, 1.0], TASKS, dict(W.MIX_B), rng())
    with pytest.raises(ValueError, match="-0.5"):
        W.build_stream([0.0], TASKS, {"completion": -0.5}, rng())
    assert W.build_stream(np.array([]), TASKS, dict(W.MIX_B), rng()) == []


# ---- trace replay --------------------------------------------------------------------------------------
def _small_trace() -> T.AzureTrace:
    ctx = np.array([5000, 10, 999, 999, 1000, 1000, 20_000, 3000, 50, 4000], dtype=np.int64)
    gen = np.array([32, 1, 0, 33, 33, 600, 900, 40, 1000, 200], dtype=np.int64)
    return T.AzureTrace(np.arange(10, dtype=np.float64) * 0.5, ctx, gen)


def test_trace_stream_mapping_and_clipping() -> None:
    tr = _small_trace()
    s = W.build_trace_stream(tr, TASKS, rng(3))
    assert [r.id for r in s] == list(range(10))
    assert [r.arrival_s for r in s] == tr.arrival_s.tolist()
    assert [r.task for r in s[:4]] == ["completion", "completion", "completion", "generation"]
    assert {r.task for r in s[4:8]} <= {"summarization", "translation"}
    assert s[8].task == "generation"
    # Completion (user-facing 'complete'): input clip [64, 2048], output clip [1, 64].
    assert s[0].lengths["complete"] == (2048, 32)
    assert s[1].lengths["complete"] == (64, 1)
    assert s[2].lengths["complete"] == (999, 1)
    # Generation: user-facing 'generate' ([32, 1024], [16, 512]) takes the trace's lengths.
    assert s[3].lengths["generate"] == (999, 33)
    assert s[8].lengths["generate"] == (50, 512)
    for r in s:
        uf = TASKS[r.task].node(TASKS[r.task].user_facing_node)
        assert uf.input_tokens is not None and uf.output_tokens is not None
        n_in, n_out = r.lengths[uf.name]
        assert uf.input_tokens.lo <= n_in <= uf.input_tokens.hi
        assert uf.output_tokens.lo <= n_out <= uf.output_tokens.hi
        assert set(r.lengths) == {n.name for n in TASKS[r.task].nodes if n.is_llm}
    assert W.build_trace_stream(tr, TASKS, rng(3)) == s


def test_trace_stream_real_trace_is_deterministic() -> None:
    path = T.default_azure_trace_path()
    tr = T.load_azure_code_trace(path).time_scaled(speedup=1.0, duration_s=300.0)
    a = W.build_trace_stream(tr, TASKS, rng(1))
    b = W.build_trace_stream(tr, TASKS, rng(1))
    assert a == b and len(a) == len(tr)
    frac = Counter(r.task for r in a)["completion"] / len(a)
    assert frac == pytest.approx(float(np.mean(tr.generated_tokens <= 32)))


def test_trace_stream_missing_task() -> None:
    tasks = {k: v for k, v in TASKS.items() if k != "generation"}
    with pytest.raises(ValueError, match="generation"):
        W.build_trace_stream(_small_trace(), tasks, rng())
