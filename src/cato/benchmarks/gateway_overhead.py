"""What the gateway adds to TTFT: the same open-loop stream sent to emulated engines directly
(round robin) and through ``cato serve`` in front of the same engines.

Two emulated engines (real ``cato engine`` subprocesses) and the gateway (a real ``cato serve``
subprocess, CATO routing) run on this machine with the load generator. Each round sends the
identical Poisson stream of short completion requests (prompt and output lengths of the
protocol's completion task, clipped to keep engines far from saturation) once directly and once
through the gateway, in alternating order; TTFT is measured at the client from the stream.
Reported per round: P50 and P99 TTFT of both paths and their difference, the gateway's overhead.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from cato.loadgen import session, stream_request
from cato.sim.arrivals import poisson


@dataclass(frozen=True)
class OverheadRound:
    round: int
    order: str
    requests: int
    direct_p50_ms: float
    gateway_p50_ms: float
    direct_p99_ms: float
    gateway_p99_ms: float
    overhead_p50_ms: float
    errors: int


async def _run(urls: list[str], times: np.ndarray, prompts: list[str], outs: list[int],
               gateway: bool) -> list[float | None]:
    async with session() as s:
        start = time.perf_counter() + 0.2
        headers = {"x-cato-task": "completion"} if gateway else {}
        jobs = []
        for i, (t, p, n) in enumerate(zip(times, prompts, outs)):
            url = urls[i % len(urls)] + "/v1/completions"
            body = {"model": "m", "prompt": p, "max_tokens": n}
            jobs.append(stream_request(s, url, body, headers, at=start + float(t)))
        return [r.ttft_s if r.status == 200 else None for r in await asyncio.gather(*jobs)]


def bench_gateway_overhead(*, rate: float = 100.0, duration_s: float = 20.0, rounds: int = 3,
                           seed: int = 0, policy: str = "round_robin", pin: bool = False,
                           on_round: Callable[[OverheadRound], None] | None = None
                           ) -> list[OverheadRound]:
    from cato.demo import start_gateway, stop
    from cato.edge.procs import free_port, wait_ready
    from cato.serving.launcher import emulated_engine_argv, start_process
    rng = np.random.default_rng(seed)
    times = poisson(rate, duration_s, rng)
    n = len(times)
    prompt_tokens = np.clip(np.rint(128 * np.exp(0.5 * rng.standard_normal(n))), 16, 512)
    outs = [int(x) for x in np.clip(np.rint(8 * np.exp(0.5 * rng.standard_normal(n))), 2, 32)]
    prompts = [("def f(x):\n    return x\n" * 200)[: int(4 * k)] for k in prompt_tokens]
    tmp = Path(tempfile.mkdtemp(prefix="cato-overhead-"))
    engines = []
    for i in range(2):
        port = free_port()
        engines.append(start_process(emulated_engine_argv(port, model="m",
                                                          preset="a100-llama7b",
                                                          time_dilation=1.0, seed=i),
                                     f"http://127.0.0.1:{port}"))
    gw_proc = None
    try:
        wait_ready(engines)
        cfg = {"models": [{"name": "m", "accepts_priority": True,
                           "replicas": [{"url": e.url} for e in engines]}],
               "routing": {"policy": policy}, "profile_at_startup": False,
               "code_index_root": str(Path(__file__).parent)}
        (tmp / "cato.yaml").write_text(yaml.safe_dump(cfg))
        gw_proc, gw_url = start_gateway(["--config", str(tmp / "cato.yaml"), "--profile",
                                         str(tmp / "profile.json"), "--log-level", "warning"])
        if pin:
            _pin(gw_proc.pid, [e.proc.pid for e in engines])
        out = []
        for k in range(rounds):
            order = ("direct", "gateway") if k % 2 == 0 else ("gateway", "direct")
            res: dict[str, list[float | None]] = {}
            for path in order:
                urls = [gw_url] if path == "gateway" else [e.url for e in engines]
                res[path] = asyncio.run(_run(urls, times, prompts, outs, path == "gateway"))
                time.sleep(1.0)
            d = [x for x in res["direct"] if x is not None]
            g = [x for x in res["gateway"] if x is not None]
            errors = 2 * n - len(d) - len(g)
            r = OverheadRound(k, "+".join(order), n,
                              statistics.median(d) * 1e3, statistics.median(g) * 1e3,
                              float(np.percentile(d, 99)) * 1e3, float(np.percentile(g, 99)) * 1e3,
                              (statistics.median(g) - statistics.median(d)) * 1e3, errors)
            out.append(r)
            if on_round:
                on_round(r)
        return out
    finally:
        if gw_proc is not None:
            stop(gw_proc)
        for e in engines:
            e.stop()


def _pin(gateway_pid: int, engine_pids: list[int]) -> None:
    """The gateway on CPU 0; engines and this load generator on the others: in production the
    engines run on GPU nodes and do not take the gateway's CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise ValueError("--pin needs at least 2 CPUs")
    os.sched_setaffinity(gateway_pid, {cpus[0]})
    for pid in [*engine_pids, os.getpid()]:
        os.sched_setaffinity(pid, set(cpus[1:]))


def as_json(rounds: list[OverheadRound]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rounds]
