"""Task mixes and the request stream (BENCHMARK_PROTOCOL.md section 2).

A *stream* is the list of :class:`TaskArrival` every policy under comparison is fed: arrival
time, task type, and -- drawn up front -- every node's token lengths, every non-LLM step's cost
and which conditional nodes run. Drawing all of it before any policy acts gives common random
numbers: the same seed yields the identical stream whatever the policy, so differences between
policies are not sampling noise.

Randomness: :func:`build_stream` spawns independent child generators from the injected
``numpy.random.Generator``, one per purpose (task choice, token lengths, non-LLM costs,
conditional nodes), and draws each request's values in a fixed order (request by request, node
by node in the task's node order). Draws therefore never depend on anything policy-related, and
the lengths stream is not perturbed by the cost stream or vice versa.

Trace replay (:func:`build_trace_stream`) uses the Azure LLM inference trace 2023, code service
(Microsoft, Azure/AzurePublicDataset; Patel et al., "Splitwise", ISCA 2024), licensed CC-BY 4.0
-- keep the attribution wherever results derived from it are published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from cato.core.task import LengthDist, TaskType
from cato.sim.azure_trace import AzureTrace, azure_task_for

#: Task names used throughout the project.
TASK_NAMES: tuple[str, ...] = ("completion", "generation", "summarization", "translation")

#: Mix A (IDE-heavy): mostly completions.
MIX_A: Mapping[str, float] = MappingProxyType(
    {"completion": 0.70, "generation": 0.10, "summarization": 0.10, "translation": 0.10}
)
#: Mix B (balanced).
MIX_B: Mapping[str, float] = MappingProxyType(
    {"completion": 0.25, "generation": 0.25, "summarization": 0.25, "translation": 0.25}
)
_NAMED_MIXES: Mapping[str, Mapping[str, float]] = MappingProxyType({"A": MIX_A, "B": MIX_B})


@dataclass(frozen=True, slots=True)
class TaskArrival:
    """One request of a stream, with everything random about it drawn up front.

    ``lengths`` maps each LLM node name to ``(n_in, n_out)`` tokens; ``tool_costs_s`` maps each
    non-LLM node name to its cost in seconds; ``skipped`` names the conditional nodes that do
    not run for this request (their lengths/costs are still drawn, for a fixed draw order).
    ``tenant``: whom its calls are billed to for fair shares (:mod:`cato.sim.tenants`); ``""``:
    the one tenant everyone shares. ``prefixes`` maps an LLM node name to its prompt's
    prefix-cache identity (the chained hashes of its leading full KV blocks,
    :mod:`cato.replica_model.prefix_cache`); a node not in it (every node when None, the
    default) has a unique prompt.
    """

    id: int
    task: str
    arrival_s: float
    lengths: dict[str, tuple[int, int]]
    tool_costs_s: dict[str, float]
    skipped: frozenset[str]
    tenant: str = ""
    prefixes: Mapping[str, tuple[int, ...]] | None = None


# ---- mixes ----------------------------------------------------------------------------------------
def normalise_mix(mix: Mapping[str, float]) -> dict[str, float]:
    """Weights divided by their sum; each weight finite and >= 0, the sum > 0.

    Raises ValueError naming the bad entry.
    """
    if not mix:
        raise ValueError("task mix is empty")
    out: dict[str, float] = {}
    for name, w in mix.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"task mix has a bad task name {name!r}")
        wf = float(w)
        if not (math.isfinite(wf) and wf >= 0.0):
            raise ValueError(f"task mix weight for {name!r} must be finite and >= 0, got {w!r}")
        out[name] = wf
    total = sum(out.values())
    if total <= 0.0:
        raise ValueError(f"task mix weights sum to {total!r}; at least one must be positive")
    return {k: v / total for k, v in out.items()}


def parse_mix(text: str, known: Iterable[str] | None = TASK_NAMES) -> dict[str, float]:
    """Parse a mix: ``"A"``, ``"B"`` (case-insensitive) or ``"completion=0.5,generation=0.5"``.

    Weights are normalised to sum to 1 (so ``"completion=7,generation=3"`` works). Task names
    must be in ``known`` (default :data:`TASK_NAMES`; pass None to accept any name). Errors name
    the bad part.
    """
    s = text.strip()
    if s.upper() in _NAMED_MIXES:
        return dict(_NAMED_MIXES[s.upper()])
    if not s:
        raise ValueError("empty task mix; use 'A', 'B' or 'task=weight,...'")
    allowed = set(known) if known is not None else None
    raw: dict[str, float] = {}
    for part in s.split(","):
        item = part.strip()
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name or not value:
            raise ValueError(
                f"bad task mix part {item!r} in {text!r}; expected 'task=weight' "
                f"(or the named mixes 'A', 'B')"
            )
        if allowed is not None and name not in allowed:
            raise ValueError(
                f"unknown task {name!r} in task mix part {item!r}; known: {sorted(allowed)}"
            )
        if name in raw:
            raise ValueError(f"task {name!r} appears twice in task mix {text!r}")
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"bad weight {value!r} in task mix part {item!r}") from None
        if not (math.isfinite(w) and w >= 0.0):
            raise ValueError(f"weight {value!r} in task mix part {item!r} must be finite and >= 0")
        raw[name] = w
    return normalise_mix(raw)


# ---- streams ---------------------------------------------------------------------------------------
def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_times(arrival_times: Sequence[float] | npt.ArrayLike) -> npt.NDArray[np.float64]:
    t = np.asarray(arrival_times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"arrival_times must be 1-D, got shape {t.shape}")
    if t.size:
        if not np.all(np.isfinite(t)):
            bad = t[~np.isfinite(t)][0]
            raise ValueError(f"arrival_times must be finite, got {bad!r}")
        if t[0] < 0.0:
            raise ValueError(f"arrival_times must be >= 0, got {float(t[0])!r}")
        d = np.diff(t)
        if np.any(d < 0.0):
            i = int(np.argmax(d < 0.0))
            raise ValueError(
                f"arrival_times must be sorted: {float(t[i + 1])!r} at index {i + 1} "
                f"follows {float(t[i])!r}"
            )
    return t


def _check_task(name: str, task: TaskType) -> None:
    if not task.nodes:
        raise ValueError(f"task {name!r} has no nodes")
    for node in task.nodes:
        if node.is_llm:
            if node.input_tokens is None or node.output_tokens is None:
                raise ValueError(
                    f"task {name!r}: LLM node {node.name!r} needs input_tokens and output_tokens"
                )
        elif node.cost is None:
            raise ValueError(f"task {name!r}: node {node.name!r} needs a cost model")


class _Draws:
    """Sequential draws from one generator, fetched in blocks.

    numpy's ``Generator`` yields the same sequence whether values are drawn one at a time or in
    bulk, so block-fetching keeps the stream identical while avoiding per-call overhead.
    """

    __slots__ = ("_rng", "_kind", "_buf", "_i")

    def __init__(self, rng: np.random.Generator, kind: str) -> None:
        self._rng = rng
        self._kind = kind
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            block = (self._rng.standard_normal(4096) if self._kind == "normal"
                     else self._rng.random(4096))
            self._buf = block.tolist()
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v


@dataclass(frozen=True, slots=True)
class _Streams:
    """Independent child generators, one per purpose."""

    task: np.random.Generator
    lengths: _Draws
    costs: _Draws
    branches: _Draws


def _spawn(rng: np.random.Generator) -> _Streams:
    t, l, c, b = _check_rng(rng).spawn(4)
    return _Streams(task=t, lengths=_Draws(l, "normal"), costs=_Draws(c, "normal"),
                    branches=_Draws(b, "uniform"))


def _length(dist: LengthDist, z: float) -> int:
    """``LengthDist.sample`` for one standard normal ``z`` (same rounding: half to even)."""
    return int(min(max(round(dist.median * math.exp(dist.sigma * z)), dist.lo), dist.hi))


def _draw_request(
    rid: int,
    name: str,
    task: TaskType,
    arrival_s: float,
    streams: _Streams,
    fixed_lengths: tuple[str, tuple[int, int]] | None = None,
) -> TaskArrival:
    """Draw one request's node values, node by node in the task's node order.

    Per node: an LLM node draws ``n_in`` then ``n_out`` (one standard normal each, as
    ``LengthDist.sample``) from the lengths stream (unless its lengths are fixed by
    ``fixed_lengths``); a non-LLM node with a random cost draws one standard normal from the
    costs stream (``CostModel.sample``); every node draws one uniform from the branches stream
    and is skipped when it is >= ``run_probability`` (so a node with probability 1 always runs).
    """
    lengths: dict[str, tuple[int, int]] = {}
    costs: dict[str, float] = {}
    skipped: set[str] = set()
    for node in task.nodes:
        if node.is_llm:
            if fixed_lengths is not None and node.name == fixed_lengths[0]:
                lengths[node.name] = fixed_lengths[1]
            else:
                assert node.input_tokens is not None and node.output_tokens is not None
                n_in = _length(node.input_tokens, streams.lengths.next())
                n_out = _length(node.output_tokens, streams.lengths.next())
                lengths[node.name] = (n_in, n_out)
        else:
            assert node.cost is not None
            c = node.cost
            costs[node.name] = (c.median_s if c.sigma == 0.0
                                else c.median_s * math.exp(c.sigma * streams.costs.next()))
        if streams.branches.next() >= node.run_probability:
            skipped.add(node.name)
    return TaskArrival(
        id=rid,
        task=name,
        arrival_s=arrival_s,
        lengths=lengths,
        tool_costs_s=costs,
        skipped=frozenset(skipped),
    )


def choose_tasks(n: int, mix: Mapping[str, float], rng: np.random.Generator) -> list[str]:
    """``n`` task names drawn i.i.d. from ``mix`` by inverse CDF.

    Names are ordered alphabetically (so the assignment does not depend on the mapping's
    order), one uniform per request; zero-weight tasks are never chosen.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    p = normalise_mix(mix)
    names = sorted(p)
    weights = np.array([p[k] for k in names])
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0
    last_positive = int(np.flatnonzero(weights > 0.0)[-1])
    u = _check_rng(rng).random(n)
    idx = np.minimum(np.searchsorted(cdf, u, side="right"), last_positive)
    return [names[i] for i in idx.tolist()]


def build_stream(
    arrival_times: Sequence[float] | npt.ArrayLike,
    tasks: Mapping[str, TaskType],
    mix: Mapping[str, float],
    rng: np.random.Generator,
) -> list[TaskArrival]:
    """The request stream for given arrival times, task catalogue and mix.

    Algorithm: spawn four child generators from ``rng`` (task choice, lengths, costs,
    conditional nodes); assign each arrival a task drawn from ``mix`` (:func:`choose_tasks`);
    then, request by request, draw every node's values (:func:`_draw_request`: LLM lengths by
    ``LengthDist.sample``, non-LLM costs by ``CostModel.sample``, one run/skip uniform per
    node). Ids are 0..n-1 in arrival order. The same ``rng`` seed gives the identical stream.

    Parameters: ``arrival_times`` sorted, finite, >= 0; ``tasks`` maps task names to task types;
    ``mix`` maps task names (all in ``tasks``) to non-negative weights, normalised here.
    """
    times = _check_times(arrival_times)
    p = normalise_mix(mix)
    for name in p:
        if name not in tasks:
            raise ValueError(f"task {name!r} of the mix is not in tasks {sorted(tasks)}")
    for name in p:
        _check_task(name, tasks[name])
    streams = _spawn(rng)
    names = choose_tasks(times.size, p, streams.task)
    return [
        _draw_request(i, name, tasks[name], float(t), streams)
        for i, (name, t) in enumerate(zip(names, times.tolist()))
    ]


def build_trace_stream(
    trace: AzureTrace, tasks: Mapping[str, TaskType], rng: np.random.Generator
) -> list[TaskArrival]:
    """The request stream replaying an Azure trace: one request per row, in trace order.

    Algorithm: spawn the four child generators as :func:`build_stream` does; map each row to a
    task with :func:`cato.sim.azure_trace.azure_task_for` (the split between summarization and
    translation uses the task-choice stream); the task's user-facing LLM node
    (``task.user_facing_node``) takes the row's ``(context_tokens, generated_tokens)``, each
    clipped to that node's ``LengthDist`` ``[lo, hi]``; every other node is drawn as in
    :func:`build_stream`.

    Data: Azure LLM inference trace 2023, code service (Microsoft, Azure/AzurePublicDataset;
    Patel et al., "Splitwise", ISCA 2024), CC-BY 4.0 -- keep the attribution.
    """
    streams = _spawn(rng)
    ctx = trace.context_tokens.tolist()
    gen = trace.generated_tokens.tolist()
    names = [azure_task_for(c, g, streams.task) for c, g in zip(ctx, gen)]
    for name in sorted(set(names)):
        if name not in tasks:
            raise ValueError(f"trace maps requests to task {name!r}, which is not in tasks {sorted(tasks)}")
        _check_task(name, tasks[name])
        uf_name = tasks[name].user_facing_node
        if uf_name not in tasks[name].node_names or not tasks[name].node(uf_name).is_llm:
            raise ValueError(f"task {name!r}: user-facing node {uf_name!r} is not an LLM node")
    out: list[TaskArrival] = []
    for i, (name, t, c, g) in enumerate(zip(names, trace.arrival_s.tolist(), ctx, gen)):
        task = tasks[name]
        uf = task.node(task.user_facing_node)
        assert uf.input_tokens is not None and uf.output_tokens is not None
        n_in = min(max(int(c), uf.input_tokens.lo), uf.input_tokens.hi)
        n_out = min(max(int(g), uf.output_tokens.lo), uf.output_tokens.hi)
        out.append(_draw_request(i, name, task, float(t), streams, (uf.name, (n_in, n_out))))
    return out


#: :func:`_draw_request` and :func:`_spawn` for the other stream builders of this package (a
#: team's own CSV trace: :mod:`cato.sim.user_trace`): the same draws in the same order.
draw_request = _draw_request
spawn_streams = _spawn
