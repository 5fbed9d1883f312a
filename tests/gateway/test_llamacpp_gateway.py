"""The real engine behind the gateway: two llama.cpp servers (Gemma 3 270M, CPU) serving real
coding requests — HumanEval generation, standard-library completion and a multi-step
summarisation over the real code index — with TTFT/E2E measured for real. Slow (it loads a real
model and profiles it at start-up); CI runs it (``make test`` runs ``-m llamacpp``)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from conftest import (SMALL_INDEX_ROOT, RunningGateway,  # type: ignore[import-not-found]
                      launch_gateway, raise_if_exited)
from cato.workloads.llamacpp import (free_port, gguf_path, llamacpp_available, start_llamacpp,
                                     wait_ready)
from cato.workloads.prompts import SUMMARIZATION_HEADER, PromptSource

pytestmark = [pytest.mark.slow, pytest.mark.llamacpp,
              pytest.mark.skipif(not llamacpp_available(),
                                 reason="llama-cpp-python[server] not installed "
                                        "(pip install -e '.[llamacpp]')")]


@pytest.fixture(scope="module")
def llama_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("llama")
    model = gguf_path()
    servers = [start_llamacpp(free_port(), model_path=model, n_ctx=2048, n_threads=1)
               for _ in range(2)]
    try:
        for s in servers:
            wait_ready(s, timeout_s=120)
        config = {
            "models": [{"name": "gemma-3-270m", "coefficients": "a100-llama7b",
                        "concurrency": 1, "replicas": [{"url": s.url} for s in servers]}],
            "routing": {"policy": "cato"}, "sla_scale": 40.0, "profile_probes": 1,
            # a CPU engine busy on a shared core answers probes late: not a dead engine
            "health": {"timeout_s": 10.0},
            "code_index_root": SMALL_INDEX_ROOT, "engine_timeout_s": 120,
            "limits": {"max_prompt_tokens": 1500},
        }
        gw = launch_gateway(tmp, config, [], watch=servers)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    gw.servers = servers    # type: ignore[attr-defined]
    yield gw
    gw.close()
    for s in servers:
        s.stop()


@pytest.fixture(autouse=True)
def servers_alive(llama_gateway: RunningGateway) -> Iterator[None]:
    """After each test: a llama.cpp server that died is named with its signal and last lines
    (a crash must not pass as the client's payload error)."""
    yield
    raise_if_exited(llama_gateway.servers, when="during the test")  # type: ignore[attr-defined]


def test_real_engine_serves_humaneval_and_stdlib_prompts(llama_gateway: RunningGateway) -> None:
    prompts = PromptSource(seed=1)
    cli = openai.OpenAI(base_url=llama_gateway.url + "/v1", api_key="x", max_retries=0,
                        timeout=120)
    gen = prompts.prompt("generation", max_chars=1200)
    assert gen.source.startswith("humaneval/")

    def streamed(task: str, text: str) -> tuple[str, dict[str, float]]:
        out, summary = "", {}
        for chunk in cli.completions.create(model=task, prompt=text, max_tokens=24,
                                            stream=True, temperature=0.0):
            if chunk.choices:
                out += chunk.choices[0].text or ""
            if chunk.model_extra and "cato" in chunk.model_extra:
                summary = chunk.model_extra["cato"]
        return out, summary

    comp = prompts.prompt_near_tokens("completion", 200)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(streamed, "generation", gen.text),
                pool.submit(streamed, "completion", comp.text),
                pool.submit(streamed, "generation", gen.text),
                pool.submit(streamed, "completion", comp.text)]
        results = [f.result() for f in futs]
    for text, summary in results:
        assert text.strip(), "the real model produced no text"
        assert 0 < summary["ttft_ms"] <= summary["e2e_ms"]
    assert {s["replica"] for _, s in results} == {"gemma-3-270m-0", "gemma-3-270m-1"}
    # not streamed: real usage counts from llama.cpp
    out = cli.completions.create(model="translation", prompt=prompts.prompt(
        "translation", max_chars=800).text, max_tokens=16, temperature=0.0)
    assert out.usage is not None and 0 < out.usage.completion_tokens <= 16
    assert out.usage.prompt_tokens > 10


def test_real_multi_step_task(llama_gateway: RunningGateway) -> None:
    src = PromptSource(seed=2).prompt("summarization", max_chars=1000)
    r = httpx.post(llama_gateway.url + "/v1/tasks/summarization",
                   json={"input": src.text.removeprefix(SUMMARIZATION_HEADER), "max_tokens": 24}, timeout=120)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["output"].strip()
    assert res["nodes"]["retrieve"]["ms"] > 0
    assert res["cato"]["e2e_ms"] > res["nodes"]["llm"]["ms"]
    prof = httpx.get(llama_gateway.url + "/admin/profile").json()["profile"]
    # the profile was measured on the real engines: far slower than the A100 model
    assert prof["source"] == "measured"
    assert prof["models"]["gemma-3-270m"]["time_scale"] > 1.0
