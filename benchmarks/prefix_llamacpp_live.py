"""Cache affinity live on llama.cpp (issue 17, part 5): IDE-session prompts of real
standard-library files (:func:`cato.workloads.prefix_prompts.ide_session_prompts`) sent open
loop through the gateway (``cato serve``) to two llama.cpp servers (Gemma 3 270M Q4_K_M, one
thread each), once per routing policy; TTFT P50/P95 measured at the client (streamed).

    .venv/bin/python benchmarks/prefix_llamacpp_live.py --seed 0 \\
        --policies round_robin,cato-prefix,session_affinity

What llama.cpp reuses: llama-cpp-python's server holds one sequence per server (one slot) and,
on each request, keeps the KV cache of the longest common token prefix with the previous
request it served (``Llama.generate``: "prefix-match hit, remaining N prompt tokens to eval");
the rest is prefilled. So a request is cheap only when the previous request on the same server
shared its prefix: affinity routing keeps a user's session on one server, round robin
alternates it. Before each policy's run every server is sent one unrelated prompt (its cache
then holds nothing of the workload). ``reuse`` below is the share of prompt characters shared
with the previous prompt each server got (in send order): the gateway's view of llama.cpp's
prefix match.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from cato.demo import start_gateway, stop
from cato.loadgen import Timing, session, stream_request
from cato.workloads.llamacpp import free_port, gguf_path, start_llamacpp, wait_ready
from cato.workloads.prefix_prompts import LivePrompt, ide_session_prompts


def _config(urls: list[str], policy: str, root: str) -> dict[str, Any]:
    return {
        "models": [{"name": "gemma-3-270m", "coefficients": "a100-llama7b", "concurrency": 1,
                    "replicas": [{"url": u} for u in urls]}],
        "routing": {"policy": policy}, "sla_scale": 40.0, "profile_at_startup": False,
        "health": {"timeout_s": 10.0},   # busy CPU engines answer probes late
        "code_index_root": root, "engine_timeout_s": 300,
        "limits": {"max_prompt_tokens": 1800},
    }


def _flush(urls: list[str]) -> None:
    """One short unrelated prompt to each server: its cached sequence is then not the
    workload's."""
    for u in urls:
        r = httpx.post(u + "/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 1},
                       timeout=120)
        r.raise_for_status()


async def _send(url: str, prompts: list[LivePrompt]) -> list[Timing]:
    async with session(timeout_s=600) as s:
        t0 = time.perf_counter() + 0.3
        return list(await asyncio.gather(*(
            stream_request(s, url + "/v1/completions",
                           {"model": "completion", "prompt": p.text, "max_tokens": p.max_tokens,
                            "temperature": 0.0}, at=t0 + p.at_s)
            for p in prompts)))


def _reuse(prompts: list[LivePrompt], res: list[Timing]) -> float:
    """Mean share of each prompt's characters shared with the previous prompt its replica got
    (requests in send order)."""
    last: dict[str, str] = {}
    shares = []
    for p, r in sorted(zip(prompts, res), key=lambda x: x[1].sent_at or 0.0):
        prev = last.get(r.replica or "", "")
        n = len(os.path.commonprefix([prev, p.text]))
        shares.append(n / max(1, len(p.text)))
        last[r.replica or ""] = p.text
    return float(np.mean(shares))


def _run(policy: str, urls: list[str], prompts: list[LivePrompt], tmp: Path) -> dict[str, Any]:
    cfg = tmp / f"{policy}.yaml"
    cfg.write_text(yaml.safe_dump(_config(urls, policy, str(tmp))))
    _flush(urls)
    proc, gw = start_gateway(["--config", str(cfg), "--profile", str(tmp / "profile.json")],
                             timeout_s=120, log_path=tmp / f"{policy}.log")
    try:
        load0 = os.getloadavg()[0]
        res = asyncio.run(_send(gw, prompts))
        load1 = os.getloadavg()[0]
    finally:
        stop(proc)
    bad = [r.error for r in res if r.status != 200 or r.ttft_s is None]
    ttft = np.array([r.ttft_s for r in res if r.status == 200 and r.ttft_s is not None]) * 1e3
    reps: dict[str, int] = {}
    for r in res:
        reps[r.replica or "?"] = reps.get(r.replica or "?", 0) + 1
    return {"policy": policy, "n": len(res), "failed": len(bad), "errors": bad[:3],
            "ttft_p50_ms": float(np.percentile(ttft, 50)) if len(ttft) else None,
            "ttft_p95_ms": float(np.percentile(ttft, 95)) if len(ttft) else None,
            "ttft_mean_ms": float(ttft.mean()) if len(ttft) else None,
            "reuse": _reuse(prompts, res), "replicas": reps, "load_1m": [load0, load1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policies", default="round_robin,cato-prefix,session_affinity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=2)
    ap.add_argument("--session-s", type=float, default=40.0)
    ap.add_argument("--interval-s", type=float, default=4.0)
    ap.add_argument("--context-tokens", type=int, default=400)
    ap.add_argument("--max-context-tokens", type=int, default=900)
    ap.add_argument("--typed-tokens", type=int, default=16)
    ap.add_argument("--edit-rate", type=float, default=0.1)
    ap.add_argument("--output-tokens", type=int, default=8)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    a = ap.parse_args()
    prompts = ide_session_prompts(np.random.default_rng(a.seed), users=a.users,
                                  session_s=a.session_s, interval_s=a.interval_s,
                                  context_tokens=a.context_tokens,
                                  max_context_tokens=a.max_context_tokens,
                                  typed_tokens=a.typed_tokens, edit_rate=a.edit_rate,
                                  output_tokens=a.output_tokens)
    prompts = [LivePrompt(p.at_s, p.session, p.text, min(p.max_tokens, 2 * a.output_tokens))
               for p in prompts]
    model = gguf_path()
    servers = [start_llamacpp(free_port(), model_path=model, n_ctx=a.n_ctx, n_threads=1)
               for _ in range(2)]
    out: list[dict[str, Any]] = []
    try:
        for s in servers:
            wait_ready(s, timeout_s=180)
        urls = [s.url for s in servers]
        with tempfile.TemporaryDirectory() as d:
            for policy in a.policies.split(","):
                row = _run(policy, urls, prompts, Path(d))
                out.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for s in servers:
            s.stop()
    meta = {"seed": a.seed, "requests": len(prompts), "args": vars(a) | {"json": str(a.json)},
            "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print(f"\n{len(prompts)} requests, seed {a.seed}, {a.users} users")
    print(f"{'policy':<18}{'P50 ms':>9}{'P95 ms':>9}{'mean ms':>9}{'reuse':>7}  replicas")
    for r in out:
        print(f"{r['policy']:<18}{r['ttft_p50_ms'] or float('nan'):>9.0f}"
              f"{r['ttft_p95_ms'] or float('nan'):>9.0f}{r['ttft_mean_ms'] or float('nan'):>9.0f}"
              f"{r['reuse']:>7.2f}  {r['replicas']} failed {r['failed']}")
    if a.json is not None:
        a.json.write_text(json.dumps({"meta": meta, "results": out}, indent=1))


if __name__ == "__main__":
    main()
