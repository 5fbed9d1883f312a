"""The start-up profiler and declared tasks (issue 16, part 4): with ``tasks:`` it probes exactly
the declared LLM nodes at their declared lengths, times only the tools a declared node uses, and
skips the built-in shapes; without ``tasks:`` it probes the built-in shapes as before. Probes go
to a real emulated engine (``cato engine``) on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import pytest

from cato.core.task import NodeKind
from cato.exits import EngineExited
from cato.gateway.config import GatewayConfig, load_config
from cato.gateway.executor import Tools
from cato.gateway.profile import Profile
from cato.gateway.profiler import measure_profile, profiled_tasks, tool_nodes
from cato.serving.engine_client import EngineClient
from cato.serving.launcher import EngineProcess

from conftest import SMALL_INDEX_ROOT, start_engines  # type: ignore[import-not-found]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _Target:
    """A :class:`~cato.gateway.profiler.ProfileTarget` over real engines and a real client."""

    def __init__(self, config: GatewayConfig, urls: dict[str, list[str]],
                 tools: Tools | None) -> None:
        self.config = config
        self.client = EngineClient()
        self.tools = tools
        self._urls = urls

    def engine_urls(self) -> dict[str, list[str]]:
        return self._urls

    def fingerprint(self) -> str:
        return "test"

    async def exited_after_failure(self, url: str, when: str = "", *, wait_s: float = 0.25,
                                   report: bool = True) -> EngineExited | None:
        return None


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    [e] = start_engines(1, tmp_path_factory.mktemp("profiler"), model="code-llm")
    yield e
    e.stop()


def _measure(cfg: GatewayConfig, url: str, tools: Tools | None) -> tuple[Profile, list[str]]:
    said: list[str] = []

    async def go() -> Profile:
        t = _Target(cfg, {m.name: [url] for m in cfg.models}, tools)
        try:
            return await measure_profile(t, probes_per_node=1, on_progress=said.append)
        finally:
            await t.client.aclose()
    return asyncio.run(go()), said


def test_declared_llm_nodes_are_probed_at_their_declared_lengths(engine: EngineProcess) -> None:
    cfg = load_config(EXAMPLES / "tasks-rag.yaml")
    prof, said = _measure(cfg, engine.url, Tools.open(SMALL_INDEX_ROOT))
    # the declared LLM nodes, the declared retrieve node; no http node, no built-in task
    assert {t: set(n) for t, n in prof.nodes.items()} == {"repo-qa": {"answer"},
                                                          "explain": {"retrieve", "answer"}}
    specs = cfg.task_specs()
    want = set()
    for name in ("repo-qa", "explain"):
        [node] = [n for n in specs[name].task.nodes if n.kind is NodeKind.LLM]
        assert node.input_tokens and node.output_tokens
        want.add((node.input_tokens.typical, node.output_tokens.typical))
    got = {(int(p["n_in"]), int(p["n_out"])) for p in prof.models["code-llm"].probes}
    assert got == want and len(said) == 2
    assert all(n.ttft_s > 0 and n.e2e_s >= n.ttft_s for n in prof.nodes["explain"].values())


def test_without_tasks_the_builtin_shapes_are_probed(engine: EngineProcess) -> None:
    cfg = GatewayConfig.model_validate({"models": [
        {"name": "code-llm", "coefficients": "a100-llama7b", "emulated": {"replicas": 1}}]})
    assert cfg.tasks is None
    prof, _ = _measure(cfg, engine.url, None)
    assert set(prof.nodes) == {"completion", "generation", "summarization", "translation"}
    shapes = {(n.model, n.input_tokens.typical, n.output_tokens.typical)
              for cat in profiled_tasks(cfg) for t in cat.values() for n in t.nodes
              if n.kind is NodeKind.LLM and n.input_tokens and n.output_tokens}
    assert {("code-llm", int(p["n_in"]), int(p["n_out"]))
            for p in prof.models["code-llm"].probes} == shapes
    assert tool_nodes(cfg) == {NodeKind.RETRIEVE: [("summarization", "retrieve")],
                               NodeKind.VALIDATE: [("generation", "validate")]}


def test_tools_are_timed_only_for_declared_nodes_that_use_them() -> None:
    lint = load_config(EXAMPLES / "tasks-lint-fix.yaml")
    assert tool_nodes(lint) == {NodeKind.RETRIEVE: [], NodeKind.VALIDATE: []}
    rag = load_config(EXAMPLES / "tasks-rag.yaml")
    assert tool_nodes(rag)[NodeKind.RETRIEVE] == [("explain", "retrieve")]
    [cat] = profiled_tasks(lint)
    assert set(cat) == {"lint-fix"}
