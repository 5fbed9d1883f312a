"""The emulated engine's OpenAI API, through the official ``openai`` client and raw httpx, against
a real ``python -m cato engine`` process on a loopback port."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from engine_harness import Server, prompt_of, start_cli
from prometheus_client.parser import text_string_to_metric_families

from cato.text import chat_prompt_text, count_tokens

MODEL = "cato-emulated"
MAX_MODEL_LEN = 2048


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_cli("--max-model-len", str(MAX_MODEL_LEN), "--seed", "3")
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def _metric(base_url: str, name: str) -> float:
    """Sum of the samples called ``name`` on /metrics."""
    text = httpx.get(f"{base_url}/metrics").text
    total, seen = 0.0, False
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                total += s.value
                seen = True
    assert seen, f"{name} not exposed"
    return total


# ------------------------------------------------------------------------------------ success
def test_completion_non_streamed(client: openai.OpenAI) -> None:
    prompt = prompt_of(37)
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=9, temperature=0.7,
                                  extra_body={"priority": 5, "ignore_eos": True})
    assert r.object == "text_completion" and r.model == MODEL and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and r.choices[0].finish_reason == "length"
    assert count_tokens(r.choices[0].text) == 9 and len(r.choices[0].text) == 36
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (37, 9, 46)


def test_completion_streamed_with_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(model=MODEL, prompt=[prompt_of(20)], max_tokens=7, stream=True,
                                       stream_options={"include_usage": True})
    pieces: list[str] = []
    finishes: list[str | None] = []
    usage = None
    for chunk in stream:
        assert chunk.model == MODEL and chunk.object == "text_completion"
        if chunk.choices:
            pieces.append(chunk.choices[0].text)
            finishes.append(chunk.choices[0].finish_reason)
        else:
            usage = chunk.usage
    assert len(pieces) == 7 and all(len(p) == 4 for p in pieces)
    assert finishes == [None] * 6 + ["length"]
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (20, 7)


def test_chat_non_streamed(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "system", "content": "be brief"},
                           {"role": "user", "content": "write a sort function " * 5}]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content is not None and count_tokens(msg.content) == 12
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_tokens(chat_prompt_text(messages))
    assert r.usage.completion_tokens == 12


def test_chat_streamed_role_then_one_chunk_per_token(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            max_completion_tokens=5, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    content = [c for c in chunks[1:] if c.choices]
    assert [len(c.choices[0].delta.content or "") for c in content] == [4] * 5
    assert [c.choices[0].finish_reason for c in content] == [None] * 4 + ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_raw_sse_framing_and_defaults(server: Server) -> None:
    body = {"prompt": "no model field, no max_tokens", "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert len(payloads) == 16  # default max_tokens, no usage chunk unless asked
    assert all("usage" not in p for p in payloads)


def test_models_and_health(client: openai.OpenAI, server: Server) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert httpx.get(f"{server.base_url}/health").status_code == 200


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", b"{not json", None),
        ("/v1/completions", b"[1, 2]", None),
        ("/v1/completions", {"max_tokens": 3}, "prompt"),
        ("/v1/completions", {"prompt": 42}, "prompt"),
        ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
        ("/v1/completions", {"prompt": "x", "max_tokens": "3"}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": "x", "model": 7}, "model"),
        ("/v1/completions", {"prompt": "x", "n": 2}, "n"),
        ("/v1/completions", {"prompt": prompt_of(MAX_MODEL_LEN), "max_tokens": 1}, "prompt"),
        ("/v1/chat/completions", {"model": MODEL}, "messages"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"content": "no role"}]}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                  "stream_options": True}, "stream_options"),
    ],
)
def test_bad_requests_get_openai_shaped_400(server: Server, path: str, body: Any, param: str | None) -> None:
    if isinstance(body, bytes):
        r = httpx.post(server.base_url + path, content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(server.base_url + path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["message"] and err["param"] == param


def test_context_length_counts_prompt_plus_max_tokens(client: openai.OpenAI) -> None:
    ok = client.completions.create(model=MODEL, prompt=prompt_of(MAX_MODEL_LEN - 4), max_tokens=4)
    assert ok.usage is not None and ok.usage.total_tokens == MAX_MODEL_LEN
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=prompt_of(MAX_MODEL_LEN - 4), max_tokens=5)
    assert exc.value.status_code == 400 and exc.value.code == "context_length_exceeded"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.completions.create(model="gpt-9", prompt="x", max_tokens=1)
    assert exc.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])


# ------------------------------------------------------------------------------------ disconnects
def _wait_for(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_stream_disconnect_frees_the_engine(server: Server) -> None:
    url = server.base_url
    assert _wait_for(lambda: _metric(url, "vllm:num_requests_running") == 0, 10.0)
    body = {"prompt": prompt_of(100), "max_tokens": 1900, "stream": True}  # ~20 s of decoding
    with httpx.stream("POST", f"{url}/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]  # token chunks and the blank lines between them
        assert sum(1 for g in got if g.startswith("data: {")) == 3
        assert _metric(url, "vllm:num_requests_running") == 1
        assert _metric(url, "vllm:kv_cache_usage_perc") > 0.0
    # the client closed the connection: the engine drops the request within a step or two
    assert _wait_for(lambda: _metric(url, "vllm:num_requests_running") == 0, 2.0)
    assert _metric(url, "vllm:kv_cache_usage_perc") == 0.0
    generated = _metric(url, "vllm:generation_tokens_total")
    time.sleep(0.1)
    assert _metric(url, "vllm:generation_tokens_total") == generated  # nothing decodes any more


def test_non_streamed_disconnect_frees_the_engine(server: Server) -> None:
    url = server.base_url
    assert _wait_for(lambda: _metric(url, "vllm:num_requests_running") == 0, 10.0)
    body = {"prompt": prompt_of(100), "max_tokens": 1900}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/completions", json=body, timeout=httpx.Timeout(5.0, read=0.3))
    assert _wait_for(lambda: _metric(url, "vllm:num_requests_running") == 0, 2.0)


# ------------------------------------------------------------------------------------ process
def test_cli_rejects_unknown_preset() -> None:
    r = subprocess.run([sys.executable, "-m", "cato", "engine", "--preset", "tpu-v9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown replica coefficient set" in r.stderr


def test_sigint_shuts_down_cleanly() -> None:
    srv = start_cli()
    assert httpx.get(f"{srv.base_url}/health").status_code == 200
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(timeout=10) == 0
    srv.close()
