"""``cato engine --enable-prefix-caching``: the prompt text's 64-character blocks are the prefix
identity, the vLLM prefix-cache metrics, and agreement with the simulator's replica model on a
shared-prefix workload (TTFT P50/P90 and hit rate) over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from typing import Any

import httpx
import numpy as np
import pytest

from cato.core.coefficients import A100_LLAMA7B
from cato.engine.requests import text_block_hashes
from cato.replica_model import ReplicaEngine
from cato.text import count_tokens
from engine_harness import Arrival, Latency, percentile, replay_in_model_time, run_open_loop, start_cli

DILATION = 12.0
MODEL_RATE = 36.0  # requests per model second
SEED = 3  # a seed whose percentiles are well conditioned (the next test checks it)
REQUESTS = 180
REPOS = 4


def _words(rng: np.random.Generator, chars: int) -> str:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    text = "".join(letters[rng.integers(0, 26, chars)])
    return " ".join(text[i:i + 7] for i in range(0, chars, 7))[:chars]


def shared_prefix_workload(n: int = REQUESTS, seed: int = SEED) -> list[Arrival]:
    """Repository-shared prompts: each request sends one of ``REPOS`` repository contexts
    (~600-750 tokens, Zipf-popular) then its own question (lognormal, median 100 tokens, sigma
    1), a few output tokens; Poisson arrivals at ``MODEL_RATE`` per model second, at least
    1/600 model s apart (10 ms of wall time at dilation 6), scaled to wall time by
    ``DILATION``."""
    rng = np.random.default_rng(seed)
    repos = [f"# repository {r}\n" + _words(rng, 2400 + 200 * r) for r in range(REPOS)]
    w = 1.0 / np.arange(1, REPOS + 1)
    gaps = (0.010 + rng.exponential(6.0 / MODEL_RATE - 0.010, n)) / 6.0 * DILATION
    at = np.cumsum(gaps) - gaps[0] + 0.05
    out: list[Arrival] = []
    for i in range(n):
        r = int(rng.choice(REPOS, p=w / w.sum()))
        q = int(np.clip(round(400 * math.exp(1.0 * rng.standard_normal())), 40, 4000))
        text = repos[r] + f"\n# question {i}\n" + _words(rng, q)
        o = int(np.clip(round(5 * math.exp(0.6 * rng.standard_normal())), 1, 60))
        out.append(Arrival(float(at[i]), count_tokens(text), o, text))
    return out


def _percentiles(lat: list[Latency]) -> dict[str, float]:
    return {f"ttft P{q}": percentile([x.ttft_s for x in lat], q) for q in (50, 90)}


def _sim(arrivals: list[Arrival]) -> tuple[dict[str, float], float]:
    eng = ReplicaEngine(A100_LLAMA7B)
    lat = replay_in_model_time(A100_LLAMA7B, arrivals, DILATION, engine=eng)
    return _percentiles(lat), eng.prefix_cache_hits / eng.prefix_cache_queries


def test_text_blocks_are_64_characters_and_share_up_to_the_first_difference() -> None:
    a = "x" * 64 + "y" * 64 + "z" * 70
    b = "x" * 64 + "y" * 64 + "w" * 70
    ha, hb = text_block_hashes(a, 16), text_block_hashes(b, 16)
    assert len(ha) == count_tokens(a) // 16 == 3
    assert ha[:2] == hb[:2] and ha[2] != hb[2]
    # tokens are counted as the engine counts them (4 characters, rounded up): 61 characters
    # are 16 tokens, one full block; 60 are 15
    assert len(text_block_hashes("x" * 61, 16)) == 1 and text_block_hashes("x" * 60, 16) == ()


def _completion(base_url: str, prompt: str) -> tuple[float, dict[str, object]]:
    body = {"prompt": prompt, "max_tokens": 2, "stream": False}
    with httpx.Client(timeout=30.0) as c:
        t0 = time.perf_counter()
        r = c.post(f"{base_url}/v1/completions", json=body)
        dt = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return dt, r.json()


def _cached(body: dict[str, object]) -> int:
    usage = body["usage"]
    assert isinstance(usage, dict)
    return int(usage["prompt_tokens_details"]["cached_tokens"])


def _streamed_usage(base_url: str, prompt: str) -> dict[str, Any]:
    """The usage of the last chunk of a streamed completion with ``include_usage``."""
    body = {"prompt": prompt, "max_tokens": 2, "stream": True,
            "stream_options": {"include_usage": True}}
    usage: dict[str, Any] = {}
    with httpx.Client(timeout=30.0) as c, c.stream("POST", f"{base_url}/v1/completions",
                                                   json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage") or usage
    return usage


def test_engine_serves_repeated_prompt_text_from_its_cache_and_counts_it() -> None:
    """The same 3000-token prompt twice, then one differing after its first 1000 tokens: the
    vLLM counters count every prompt token as queried and the cached blocks as hits (all but
    the last block of a repeat; the 62 blocks before the difference), and so does the usage
    (streamed or not), the repeat is faster;
    without the flag the engine has no prefix-cache metrics."""
    rng = np.random.default_rng(0)
    prompt = _words(rng, 12_000)  # 3000 tokens
    other = prompt[:4000] + _words(rng, 8000)  # shares 1000 tokens = 62.5 blocks
    srv = start_cli("--enable-prefix-caching", "--time-dilation", "4")
    try:
        cold, cold_body = _completion(srv.base_url, prompt)
        warm, warm_body = _completion(srv.base_url, prompt)
        _, other_body = _completion(srv.base_url, other)
        text = httpx.get(f"{srv.base_url}/metrics").text
        streamed = _streamed_usage(srv.base_url, prompt)
    finally:
        srv.close()
    # OpenAI's usage.prompt_tokens_details.cached_tokens, as vLLM reports it
    assert _cached(cold_body) == 0
    assert _cached(warm_body) == (2999 // 16) * 16
    assert _cached(other_body) == 62 * 16
    assert streamed["prompt_tokens_details"] == {"cached_tokens": (2999 // 16) * 16}
    assert streamed["prompt_tokens"] == 3000
    assert _metric(text, "vllm:prefix_cache_queries_total") == 3 * 3000
    assert _metric(text, "vllm:prefix_cache_hits_total") == (2999 // 16) * 16 + 62 * 16
    assert _metric(text, "vllm:gpu_prefix_cache_hit_rate") == pytest.approx((187 * 16 + 62 * 16) / 9000)
    # prefill of 3000 tokens vs of 8: the repeat is several times faster (dilated 4x)
    assert warm < 0.5 * cold, (warm, cold)
    srv = start_cli()
    try:
        _completion(srv.base_url, prompt)
        _, body = _completion(srv.base_url, prompt)
        text = httpx.get(f"{srv.base_url}/metrics").text
    finally:
        srv.close()
    assert "prefix_cache" not in text
    assert "prompt_tokens_details" not in body["usage"]  # type: ignore[operator]


def test_the_workload_hits_and_queues_and_is_well_conditioned() -> None:
    """In the model alone: a substantial hit rate, real queueing, and percentiles that do not
    jump under the 0-3 ms arrival noise an HTTP path adds."""
    arrivals = shared_prefix_workload()
    base, hit = _sim(arrivals)
    assert hit > 0.5
    nocache = _percentiles(replay_in_model_time(A100_LLAMA7B, arrivals, DILATION))
    assert base["ttft P50"] < 0.8 * nocache["ttft P50"], (base, nocache)
    rng = np.random.default_rng(0)
    for _ in range(5):
        noisy = [Arrival(a.at_s + float(rng.uniform(0.0, 0.003)), a.prompt_tokens, a.output_tokens, a.prompt)
                 for a in arrivals]
        moved, h2 = _sim(noisy)
        assert abs(h2 / hit - 1.0) < 0.01
        for k, v in base.items():
            assert abs(moved[k] / v - 1.0) < 0.03, (k, moved[k], v)


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}{{[^}}]*}} ([0-9.e+-]+)$", text, re.M)
    assert m, name
    return float(m.group(1))


@pytest.mark.slow  # ~56 s of arrivals
def test_emulated_engine_with_prefix_caching_agrees_with_the_simulator() -> None:
    """180 repository-shared prompts (36 per model second, 3/s of wall time) over HTTP to ``cato
    engine --enable-prefix-caching --time-dilation 12`` (a dilation that makes the HTTP
    path's few milliseconds small against the modelled TTFTs); the same stream replayed through a caching ReplicaEngine in model time.
    TTFT P50/P90 within 5 %, hit rate (the engine's /metrics counters) within 2 %."""
    arrivals = shared_prefix_workload()
    assert 45.0 < arrivals[-1].at_s < 65.0
    sim, sim_hit = _sim(arrivals)
    srv = start_cli("--time-dilation", str(DILATION), "--seed", str(SEED), "--enable-prefix-caching")
    try:
        res = asyncio.run(run_open_loop(srv.base_url, arrivals))
        metrics = httpx.get(f"{srv.base_url}/metrics").text
    finally:
        srv.close()
    lateness = sum(res.send_lateness_s) / len(res.send_lateness_s)
    assert lateness < 0.002, "the client could not keep to the schedule"
    emu = _percentiles([Latency(x.ttft_s / DILATION, x.e2e_s / DILATION) for x in res.latencies])
    q = _metric(metrics, "vllm:prefix_cache_queries_total")
    h = _metric(metrics, "vllm:prefix_cache_hits_total")
    emu_hit = h / q
    assert _metric(metrics, "vllm:gpu_prefix_cache_hit_rate") == pytest.approx(emu_hit)
    report: dict[str, tuple[float, ...]] = {k: (round(emu[k] * 1e3 * DILATION, 1), round(sim[k] * 1e3 * DILATION, 1),
                  round(emu[k] / sim[k], 4)) for k in sim}
    report["hit rate"] = (round(emu_hit, 4), round(sim_hit, 4), round(emu_hit / sim_hit, 4))
    report["send lateness ms"] = (round(lateness * 1e3, 3),)
    print("prefix-cache agreement (emulated, simulated, ratio):", report)
    assert abs(emu_hit / sim_hit - 1.0) < 0.02, report
    for k in sim:
        assert abs(emu[k] / sim[k] - 1.0) < 0.05, report
