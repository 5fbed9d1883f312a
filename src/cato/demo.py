"""``cato demo``: the product end to end on the embedded default.

Starts ``cato serve`` (which starts emulated engines on loopback) as a real subprocess, waits
until it is ready, sends an open-loop Poisson stream of the four coding tasks with real prompts
(HumanEval, standard-library functions) at the protocol's token lengths through the OpenAI
streaming API, measures TTFT and E2E at the client, and prints per-task goodput.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import httpx
import numpy as np

from cato.core.catalog import single_step_tasks
from cato.core.metrics import percentile_ms
from cato.core.sla import sla_met
from cato.core.task import SlaKind
from cato.edge.procs import free_port, start_child, stop_process, wait_ready
from cato.edge.sse import aiter_data
from cato.edge.sse import loads as sse_loads
from cato.sim.arrivals import poisson
from cato.sim.workload import TaskArrival, build_stream
from cato.workloads.prompts import PromptSource


@dataclass(frozen=True, slots=True)
class DemoResult:
    task: str
    status: int
    ttft_s: float | None
    e2e_s: float | None
    sla_s: float
    sla_kind: str
    met: bool
    server_met: bool | None


def demo_config(*, replicas: int, policy: str, admin_key_env: str | None = None,
                autoscale: bool = False) -> dict[str, Any]:
    """The embedded default (:func:`cato.gateway.config.default_config`) as a ``cato serve``
    config, with what the demo's options add: ``admin_key_env`` (the environment variable that
    holds an admin key: ``/admin``, ``/metrics`` and ``/dashboard`` then need it) and
    ``autoscale`` (start with one engine and let the gateway scale between 1 and ``replicas``,
    so the dashboard shows scale events)."""
    model: dict[str, Any] = {"name": "cato-emulated", "coefficients": "a100-llama7b",
                             "accepts_priority": True,
                             "emulated": {"replicas": 1 if autoscale else replicas}}
    if autoscale:
        model["autoscale"] = {"min_replicas": 1, "max_replicas": replicas}
    cfg: dict[str, Any] = {"models": [model], "routing": {"policy": policy}}
    if admin_key_env is not None:
        cfg["auth"] = {"admin_keys": [{"key_env": admin_key_env}]}
    return cfg


def start_gateway(args: list[str], timeout_s: float = 120.0,
                  log_path: Path | None = None,
                  port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``cato serve`` as a subprocess on ``port`` (default: a free one) on loopback, once
    ``/ready``; returns (process, base url)."""
    port = free_port() if port is None else port
    url = f"http://127.0.0.1:{port}"
    gw = start_child([sys.executable, "-m", "cato", "serve", "--port", str(port), *args], url,
                     log_path=log_path, role="gateway")
    try:
        wait_ready([gw], timeout_s, path="/ready")
    except RuntimeError as e:
        gw.stop()
        raise RuntimeError(f"cato serve did not start: {e}") from None
    return gw.proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, timeout_s=15.0)


def build_requests(rate: float, duration_s: float, mix: Mapping[str, float],
                   seed: int) -> list[tuple[TaskArrival, str]]:
    """The stream (arrival time, task, lengths) and a real prompt of about each length."""
    rng = np.random.default_rng(seed)
    tasks = single_step_tasks({t: "m" for t in ("completion", "generation", "summarization",
                                                "translation")})
    stream = build_stream(poisson(rate, duration_s, rng), tasks, mix, rng)
    prompts = PromptSource(seed)
    return [(a, prompts.prompt_near_tokens(a.task, a.lengths["llm"][0]).text) for a in stream]


async def send_one(client: httpx.AsyncClient, url: str, a: TaskArrival, prompt: str,
                   t0: float) -> DemoResult:
    await asyncio.sleep(max(0.0, t0 + a.arrival_s - time.perf_counter()))
    start = time.perf_counter()
    body = {"model": a.task, "prompt": prompt, "max_tokens": a.lengths["llm"][1],
            "stream": True}
    first: float | None = None
    end: float | None = None
    summary: dict[str, Any] = {}
    status = 0
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as resp:
            status = resp.status_code
            if status == 200:
                async for payload in aiter_data(resp.aiter_bytes(), drain=True):
                    ev = sse_loads(payload)
                    if first is None and any(c.get("text") for c in ev.get("choices", ())):
                        first = time.perf_counter()
                    summary = ev.get("cato", summary)
                end = time.perf_counter()
            else:
                await resp.aread()
    except httpx.HTTPError:
        status = -1
    sla = summary.get("sla_ms", 0.0) / 1000.0
    kind = summary.get("sla_kind", "")
    ttft = None if first is None else first - start
    e2e = None if end is None else end - start
    met = sla_met(SlaKind.TTFT if kind == SlaKind.TTFT.value else SlaKind.E2E, sla,
                  ttft_s=ttft, e2e_s=e2e)
    return DemoResult(a.task, status, ttft, e2e, sla, kind, bool(met and status == 200),
                      summary.get("sla_met"))


async def run_load(url: str, requests: list[tuple[TaskArrival, str]],
                   on_done: Callable[[], None] | None = None) -> list[DemoResult]:
    async with httpx.AsyncClient(timeout=120.0, trust_env=False,
                                 limits=httpx.Limits(max_connections=2000)) as client:
        t0 = time.perf_counter() + 0.2

        async def one(a: TaskArrival, p: str) -> DemoResult:
            r = await send_one(client, url, a, p, t0)
            if on_done:
                on_done()
            return r

        return list(await asyncio.gather(*(one(a, p) for a, p in requests)))


def _or_nan(v: float | None) -> float:
    return float("nan") if v is None else v


def per_task(results: list[DemoResult]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for task in sorted({r.task for r in results}):
        rs = [r for r in results if r.task == task]
        ttft = [r.ttft_s for r in rs if r.ttft_s is not None]
        e2e = [r.e2e_s for r in rs if r.e2e_s is not None]
        out[task] = {
            "requests": len(rs), "ok": sum(r.status == 200 for r in rs),
            "goodput": sum(r.met for r in rs) / len(rs),
            "p50_ttft_ms": _or_nan(percentile_ms(ttft, 50.0)),
            "p95_ttft_ms": _or_nan(percentile_ms(ttft, 95.0)),
            "p95_e2e_ms": _or_nan(percentile_ms(e2e, 95.0)),
            "sla_ms": rs[0].sla_s * 1000,
        }
    return out
