"""The real engine: a llama.cpp server with Gemma 3 270M (Q4_K_M) on a loopback port, driven
through the official ``openai`` client with a real HumanEval prompt, streamed and not."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cato.workloads.llamacpp import (
    DEFAULT_MODEL_ALIAS,
    LlamaCppError,
    LlamaCppProcess,
    free_port,
    llamacpp_available,
    start_llamacpp,
    wait_ready,
)
from cato.workloads.prompts import PromptSource
from cato.workloads.validate import validate_python

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

pytestmark = [
    pytest.mark.slow,
    pytest.mark.llamacpp,
    pytest.mark.skipif(
        not llamacpp_available(),
        reason="llama-cpp-python[server] is not installed (pip install 'llama-cpp-python[server]')",
    ),
]

pytest.importorskip("openai", reason="the openai client is not installed")
from openai import OpenAI  # noqa: E402

MAX_TOKENS = 64
THREADS = max(1, min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaCppProcess]:
    proc = start_llamacpp(free_port(), n_threads=THREADS, n_ctx=2048)
    try:
        waited = wait_ready(proc, timeout_s=180)
        print(f"\nllama.cpp ready in {waited:.2f} s on {THREADS} thread(s)")
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def client(server: LlamaCppProcess) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)


def _humaneval_messages(seed: int) -> list[ChatCompletionMessageParam]:
    """A real HumanEval prompt; tests use different seeds so that the server's cache of the
    previous prompt cannot hide the prefill from the measured TTFT."""
    prompt = PromptSource(seed=seed).prompt("generation")
    assert prompt.source.startswith("humaneval/")
    return [{"role": "user", "content": prompt.text}]


def test_lists_the_model(client: OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [DEFAULT_MODEL_ALIAS]


def test_humaneval_not_streamed(client: OpenAI) -> None:
    t0 = time.perf_counter()
    resp = client.chat.completions.create(
        model=DEFAULT_MODEL_ALIAS, messages=_humaneval_messages(0), max_tokens=MAX_TOKENS,
        temperature=0.0,
    )
    e2e = time.perf_counter() - t0
    text = resp.choices[0].message.content or ""
    assert text.strip(), "the model produced no text"
    assert resp.usage is not None
    assert 0 < resp.usage.completion_tokens <= MAX_TOKENS
    assert resp.usage.prompt_tokens > 50
    assert resp.choices[0].finish_reason in ("stop", "length")
    print(f"\nnon-streamed: E2E {e2e:.3f} s, {resp.usage.prompt_tokens} prompt + "
          f"{resp.usage.completion_tokens} completion tokens; "
          f"validation: {validate_python(text).ok}")


def test_humaneval_streamed_measures_ttft(client: OpenAI) -> None:
    """The stream is token by token: TTFT is the first of many chunks spread over the decode,
    E2E holds the decode of the tokens after the first, and the chunks are the plain answer's
    tokens (same text, same finish, one chunk per token at most)."""
    messages = _humaneval_messages(1)
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL_ALIAS, messages=messages, max_tokens=MAX_TOKENS,
        temperature=0.0, stream=True,
    )
    arrivals: list[float] = []   # seconds after the request, one per chunk with text
    pieces: list[str] = []
    finish: str | None = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            arrivals.append(time.perf_counter() - t0)
            pieces.append(delta)
    e2e = time.perf_counter() - t0
    assert len(pieces) >= 2 and "".join(pieces).strip(), pieces
    ttft, decode = arrivals[0], arrivals[-1] - arrivals[0]
    assert arrivals == sorted(arrivals) and arrivals[0] < arrivals[-1]
    assert ttft + decode <= e2e                  # the later tokens' decode is in E2E, not TTFT
    # streamed as generated, not buffered: the chunks after the first are spread over their
    # decode (a token costs well over a millisecond on CPU; a buffered reply arrives in one read)
    assert decode >= 0.001 * (len(pieces) - 1), (decode, len(pieces))
    # the same request, not streamed (greedy): the same answer, and a chunk per token at most
    plain = client.chat.completions.create(
        model=DEFAULT_MODEL_ALIAS, messages=messages, max_tokens=MAX_TOKENS, temperature=0.0,
    )
    assert plain.usage is not None
    assert "".join(pieces) == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert len(pieces) <= plain.usage.completion_tokens <= MAX_TOKENS
    if finish == "length":
        assert plain.usage.completion_tokens == MAX_TOKENS
    print(f"\nstreamed: TTFT {ttft:.3f} s, E2E {e2e:.3f} s, {len(pieces)} chunks, "
          f"{plain.usage.completion_tokens} tokens")


def test_raw_completion_of_a_cut_function(client: OpenAI) -> None:
    prompt = PromptSource(seed=1).prompt("completion", max_chars=1500)
    resp = client.completions.create(model=DEFAULT_MODEL_ALIAS, prompt=prompt.text,
                                     max_tokens=16, temperature=0.0)
    assert resp.choices[0].text
    assert resp.usage is not None and resp.usage.completion_tokens > 0


def test_bad_model_file_is_reported(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a gguf file" * 64)
    proc = start_llamacpp(free_port(), model_path=bogus)
    try:
        with pytest.raises(LlamaCppError, match="exited with code"):
            wait_ready(proc, timeout_s=120)
    finally:
        proc.stop()
