"""``GET /metrics``: Prometheus text with vLLM's metric names, counts right after a few requests."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from engine_harness import Server, prompt_of, start_cli
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

MODEL = "tiny-coder"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_cli("--model", MODEL)
    yield srv
    srv.close()


def _scrape(base_url: str) -> dict[str, list[Sample]]:
    r = httpx.get(f"{base_url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, list[Sample]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    hits = [s for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, (name, labels, samples.get(name))
    assert hits[0].labels["model_name"] == MODEL
    return hits[0].value


def test_metrics_count_requests_tokens_and_latencies(server: Server) -> None:
    before = _scrape(server.base_url)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:num_preemptions_total", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:request_success_total", "vllm:time_to_first_token_seconds_count",
                 "vllm:e2e_request_latency_seconds_count"):
        assert _value(before, name) == 0.0, name

    jobs = [(10, 3, False), (50, 8, True), (200, 1, False), (7, 20, True)]
    with httpx.Client(base_url=server.base_url) as c:
        for prompt, out, stream in jobs:
            body = {"model": MODEL, "prompt": prompt_of(prompt), "max_tokens": out, "stream": stream}
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 200
        chat = c.post("/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "abcdefgh"}], "max_tokens": 2})
        assert chat.json()["usage"]["prompt_tokens"] == 4  # "user: abcdefgh" = 14 chars

    m = _scrape(server.base_url)
    n = len(jobs) + 1
    assert _value(m, "vllm:request_success_total", finished_reason="length") == n
    assert _value(m, "vllm:prompt_tokens_total") == sum(p for p, _, _ in jobs) + 4
    assert _value(m, "vllm:generation_tokens_total") == sum(o for _, o, _ in jobs) + 2
    assert _value(m, "vllm:time_to_first_token_seconds_count") == n
    assert _value(m, "vllm:e2e_request_latency_seconds_count") == n
    ttft_sum = _value(m, "vllm:time_to_first_token_seconds_sum")
    e2e_sum = _value(m, "vllm:e2e_request_latency_seconds_sum")
    assert 0.0 < ttft_sum < e2e_sum
    # the a100-llama7b model: every step takes more than 9 ms, so 34 output tokens > 0.3 s
    assert e2e_sum > 0.3
    assert _value(m, "vllm:time_to_first_token_seconds_bucket", le="+Inf") == n
    assert _value(m, "vllm:num_requests_running") == 0.0
    assert _value(m, "vllm:num_requests_waiting") == 0.0
    assert _value(m, "vllm:kv_cache_usage_perc") == 0.0
    assert _value(m, "vllm:num_preemptions_total") == 0.0


def test_gauges_follow_a_request_in_flight(server: Server) -> None:
    body = {"prompt": prompt_of(400), "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body) as r:
        lines = r.iter_lines()  # keep it: closing the iterator closes the stream (a disconnect)
        next(line for line in lines if line.startswith("data: {"))
        m = _scrape(server.base_url)
        assert _value(m, "vllm:num_requests_running") == 1.0
        assert _value(m, "vllm:num_requests_waiting") == 0.0
        # 400 + a few tokens in 16-token blocks out of 115_000
        assert 400 / 115_000 < _value(m, "vllm:kv_cache_usage_perc") < 450 / 115_000
