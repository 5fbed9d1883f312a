"""Live IDE-session prompts (real standard-library files, :mod:`cato.workloads.prefix_prompts`)
through ``cato engine`` with prefix caching on and off, next to the same text replayed through
the replica model: TTFT P50/P95 and the prefix-cache hit rate (the engine's
``vllm:prefix_cache_*`` counters vs the model's).

    .venv/bin/python benchmarks/prefix_cache_live.py --users 12 --session-s 40 --seed 0

Open loop: every prompt is sent at its scheduled time (streamed); TTFT is measured at the
client. With ``--time-dilation D`` the engine runs D times slower and the schedule is
stretched by D, so the model-time workload is the same; latencies are reported in model ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time

import httpx
import numpy as np

from cato.core.coefficients import preset
from cato.engine.requests import text_block_hashes
from cato.replica_model import ReplicaEngine
from cato.text import count_tokens
from cato.workloads.prefix_prompts import LivePrompt, ide_session_prompts

_BANNER = re.compile(r"on http://127\.0\.0\.1:(\d+)\s*$")


def _start(flags: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "cato", "engine", "--port", "0", *flags],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = _BANNER.search(line)
        if m:
            return proc, f"http://127.0.0.1:{m.group(1)}"
    raise RuntimeError("engine did not start")


async def _send(prompts: list[LivePrompt], url: str, dilation: float) -> list[float]:
    out = [0.0] * len(prompts)
    async with httpx.AsyncClient(timeout=600.0, limits=httpx.Limits(max_connections=None)) as client:
        await client.post(f"{url}/v1/completions", json={"prompt": "x", "max_tokens": 1})
        t0 = time.perf_counter() + 0.2

        async def one(i: int, p: LivePrompt) -> None:
            delay = t0 + p.at_s * dilation - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            body = {"prompt": p.text, "max_tokens": p.max_tokens, "stream": True}
            async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not out[i] and line.startswith("data: {"):
                        out[i] = (time.perf_counter() - sent) / dilation

        await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return out


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)}{{[^}}]*}} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _model(prompts: list[LivePrompt], preset_name: str, cache: bool) -> tuple[list[float], float]:
    coeffs = preset(preset_name)
    eng = ReplicaEngine(coeffs, enable_prefix_caching=cache)
    first: dict[int, float] = {}
    for i, p in enumerate(prompts):
        for ev in eng.advance(p.at_s):
            if ev.kind == "first_token":
                first[ev.call_id] = ev.at_s
        eng.submit(i, count_tokens(p.text), p.max_tokens, p.at_s,
                   prefix=text_block_hashes(p.text, coeffs.kv_block_tokens))
    while (t := eng.next_event_s()) is not None:
        for ev in eng.advance(t):
            if ev.kind == "first_token":
                first[ev.call_id] = ev.at_s
    hit = eng.prefix_cache_hits / eng.prefix_cache_queries if eng.prefix_cache_queries else 0.0
    return [first[i] - p.at_s for i, p in enumerate(prompts)], hit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="a100-llama7b")
    ap.add_argument("--users", type=int, default=12)
    ap.add_argument("--session-s", type=float, default=40.0)
    ap.add_argument("--interval-s", type=float, default=2.0)
    ap.add_argument("--context-tokens", type=int, default=1500)
    ap.add_argument("--edit-rate", type=float, default=0.2)
    ap.add_argument("--time-dilation", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    prompts = ide_session_prompts(np.random.default_rng(args.seed), users=args.users,
                                  session_s=args.session_s, interval_s=args.interval_s,
                                  context_tokens=args.context_tokens, edit_rate=args.edit_rate)
    print(json.dumps({"requests": len(prompts),
                      "mean_prompt_tokens": round(float(np.mean([count_tokens(p.text) for p in prompts])), 1)}))
    for cache in (True, False):
        flags = ["--preset", args.preset, "--time-dilation", str(args.time_dilation)]
        flags.append("--enable-prefix-caching" if cache else "--no-enable-prefix-caching")
        proc, url = _start(flags)
        try:
            ttft = asyncio.run(_send(prompts, url, args.time_dilation))
            text = httpx.get(f"{url}/metrics").text
        finally:
            proc.terminate()
            proc.wait()
        q, h = _metric(text, "vllm:prefix_cache_queries_total"), _metric(text, "vllm:prefix_cache_hits_total")
        model_ttft, model_hit = _model(prompts, args.preset, cache)
        print(json.dumps({
            "prefix_caching": cache,
            "engine": {"ttft_p50_ms": round(float(np.percentile(ttft, 50)) * 1e3, 2),
                       "ttft_p95_ms": round(float(np.percentile(ttft, 95)) * 1e3, 2),
                       "hit_rate": round(h / q, 4) if q else 0.0},
            "model": {"ttft_p50_ms": round(float(np.percentile(model_ttft, 50)) * 1e3, 2),
                      "ttft_p95_ms": round(float(np.percentile(model_ttft, 95)) * 1e3, 2),
                      "hit_rate": round(model_hit, 4)}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
