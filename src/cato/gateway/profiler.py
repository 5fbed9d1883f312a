"""``cato profile``: measure node baselines against the configured engines at light load.

For every LLM node of the served tasks, a few probes are sent one at a time (no other load) with
the node's typical prompt and output lengths, straight to the engines (round robin over a
model's replicas); TTFT and E2E are measured at the client. The median of each node's probes is
its baseline; the model's ``time_scale`` is the geometric mean of measured / modelled latency
over all its probes, so the latency model the router uses is fitted to the engines. Retrieval and
validation steps are timed on the gateway's real tools.

Which nodes: without ``tasks:`` in the config, the built-in tasks' LLM nodes (their single- and
multi-step forms) and both tools, as before declared tasks existed. With ``tasks:``, exactly the
declared tasks' LLM nodes (each at its declared prompt/output length distributions' typical
values), and a tool only when a declared task has a ``retrieve`` or ``validate`` node (its
timing is then recorded under that task and node); a built-in shape no declared task uses is not
probed. ``http`` nodes are the user's services: they are not probed (their cost is declared).

What it measures is a :class:`ProfileTarget`, a small protocol defined here (the config, the
engine client, the tools, the engines' urls and fingerprint, and why an engine is gone); the
gateway satisfies it, and nothing here knows the gateway.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Protocol

from cato.core.catalog import multi_step_tasks, single_step_tasks
from cato.core.coefficients import isolated_e2e_ms, isolated_ttft_ms, preset
from cato.core.task import NodeKind, TaskType
from cato.exits import EngineExited
from cato.gateway.config import GatewayConfig
from cato.gateway.executor import Tools
from cato.gateway.profile import ModelProfile, NodeProfile, Profile
from cato.serving.engine_client import EngineClient, EngineError
from cato.serving.filler import filler_text

class ProfileTarget(Protocol):
    """What :func:`measure_profile` needs of the engines it profiles (the gateway is one)."""

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def client(self) -> EngineClient: ...

    @property
    def tools(self) -> Tools | None: ...

    def engine_urls(self) -> dict[str, list[str]]:
        """Engine urls per model."""

    def fingerprint(self) -> str:
        """What the profile is measured against."""

    async def exited_after_failure(self, url: str, when: str = "", *, wait_s: float = 0.25,
                                   report: bool = True) -> EngineExited | None:
        """Why the engine at ``url`` is gone, if it is a process that exited."""


async def probe(client: EngineClient, url: str, model: str, n_in: int, n_out: int,
                api_key: str | None = None) -> tuple[float, float]:
    """One request alone on an engine: (TTFT, E2E) seconds at the client."""
    body: dict[str, Any] = {"model": model, "prompt": filler_text(n_in), "max_tokens": n_out,
                            "temperature": 0.0}
    t0 = time.perf_counter()
    first: float | None = None
    async for ev in client.stream(url, "/v1/completions", body, api_key=api_key):
        if first is None and ev.text():
            first = time.perf_counter()
    end = time.perf_counter()
    if first is None:
        raise EngineError(f"engine {url} returned no tokens for a profiling probe")
    return first - t0, end - t0


async def measure_profile(target: ProfileTarget, *, probes_per_node: int = 3,
                          on_progress: Callable[[str], None] | None = None) -> Profile:
    """The profile of ``target``'s engines (module docstring): ``probes_per_node`` probes per
    distinct (model, prompt tokens, output tokens) shape, one at a time."""
    cfg = target.config
    urls = target.engine_urls()
    nodes: dict[str, dict[str, NodeProfile]] = {}
    ratios: dict[str, list[float]] = {m.name: [] for m in cfg.models}
    probes: dict[str, list[dict[str, float]]] = {m.name: [] for m in cfg.models}
    measured: dict[tuple[str, int, int], tuple[float, float]] = {}
    for tasks in profiled_tasks(cfg):
        for tname, task in tasks.items():
            for node in task.nodes:
                if node.kind is not NodeKind.LLM:
                    continue
                assert node.model and node.input_tokens and node.output_tokens
                n_in, n_out = node.input_tokens.typical, node.output_tokens.typical
                key = (node.model, n_in, n_out)
                if key not in measured:
                    if on_progress:
                        on_progress(f"{tname}.{node.name}: {n_in} -> {n_out} tokens")
                    measured[key] = await _probe_node(target, urls[node.model], node.model,
                                                      n_in, n_out, probes_per_node, ratios,
                                                      probes)
                ttft, e2e = measured[key]
                nodes.setdefault(tname, {})[node.name] = NodeProfile(
                    ttft_s=ttft, e2e_s=e2e, samples=probes_per_node)
    for tname, node_name, seconds in await _tool_baselines(target.tools, tool_nodes(cfg)):
        nodes.setdefault(tname, {})[node_name] = NodeProfile(ttft_s=seconds, e2e_s=seconds,
                                                             samples=5)
    models = {}
    for m in cfg.models:
        r = ratios[m.name]
        scale = math.exp(statistics.fmean(math.log(x) for x in r)) if r else 1.0
        models[m.name] = ModelProfile(
            coefficients=m.coefficients, time_scale=scale, probes=probes[m.name],
            max_num_seqs=m.emulated.max_num_seqs if m.emulated else None)
    return Profile(source="measured", fingerprint=target.fingerprint(), models=models,
                   nodes=nodes)


async def _probe_node(target: ProfileTarget, urls: list[str], model: str, n_in: int,
                      n_out: int, k: int, ratios: dict[str, list[float]],
                      probes: dict[str, list[dict[str, float]]]) -> tuple[float, float]:
    base = preset(target.config.model(model).coefficients)
    api_key = target.config.model(model).api_key
    ttfts, e2es = [], []
    for i in range(k):
        url = urls[i % len(urls)]
        try:
            ttft, e2e = await probe(target.client, url, model, n_in, n_out, api_key)
        except EngineError as e:
            exited = await target.exited_after_failure(url, "during a profiling probe",
                                                   wait_s=2.0, report=False)
            if exited is not None:
                raise exited from e
            raise
        ttfts.append(ttft)
        e2es.append(e2e)
        m_ttft = isolated_ttft_ms(base, n_in) / 1000.0
        m_e2e = isolated_e2e_ms(base, n_in, n_out) / 1000.0
        ratios[model].extend([ttft / m_ttft, e2e / m_e2e])
        probes[model].append({"n_in": n_in, "n_out": n_out, "ttft_s": ttft, "e2e_s": e2e,
                              "model_ttft_s": m_ttft, "model_e2e_s": m_e2e})
    return statistics.median(ttfts), statistics.median(e2es)


def profiled_tasks(cfg: GatewayConfig) -> list[dict[str, TaskType]]:
    """The task catalogues whose LLM nodes are probed (module docstring): the built-in single-
    and multi-step tasks when the config declares no ``tasks:``, else the declared ones (SLAs
    times ``sla_scale``)."""
    if cfg.tasks is None:
        task_models = {t: cfg.model_for(t) for t in
                       ("completion", "generation", "summarization", "translation")}
        return [single_step_tasks(task_models, sla_scale=cfg.sla_scale),
                multi_step_tasks(task_models, sla_scale=cfg.sla_scale)]
    return [{name: spec.task.scaled(cfg.sla_scale) for name, spec in cfg.task_specs().items()}]


def tool_nodes(cfg: GatewayConfig) -> dict[NodeKind, list[tuple[str, str]]]:
    """(task, node) pairs that take the timing of each built-in tool: the built-in pairs
    without ``tasks:``, else every declared ``retrieve`` / ``validate`` node."""
    if cfg.tasks is None:
        return {NodeKind.RETRIEVE: [("summarization", "retrieve")],
                NodeKind.VALIDATE: [("generation", "validate")]}
    out: dict[NodeKind, list[tuple[str, str]]] = {NodeKind.RETRIEVE: [], NodeKind.VALIDATE: []}
    for name, spec in cfg.task_specs().items():
        for node in spec.task.nodes:
            if node.kind in out:
                out[node.kind].append((name, node.name))
    return out


async def _tool_baselines(tools: Tools | None, where: dict[NodeKind, list[tuple[str, str]]]
                          ) -> list[tuple[str, str, float]]:
    """Median duration of the real retrieval and validation steps, for each (task, node) of
    ``where`` (a tool no node uses is not run)."""
    if tools is None:
        return []
    out: list[tuple[str, str, float]] = []
    if where.get(NodeKind.RETRIEVE):
        retrieve = [await tools.timed_retrieve("parse a json document into python objects")
                    for _ in range(5)]
        sec = statistics.median(t for _, t in retrieve)
        out.extend((t, n, sec) for t, n in where[NodeKind.RETRIEVE])
    if where.get(NodeKind.VALIDATE):
        validate = [await tools.timed_validate("def f(x):\n    return x + 1\n")
                    for _ in range(5)]
        sec = statistics.median(t for _, t in validate)
        out.extend((t, n, sec) for t, n in where[NodeKind.VALIDATE])
    return out
