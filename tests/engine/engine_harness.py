"""Helpers of the emulated-engine tests: start a real server process on an ephemeral loopback
port, build open-loop workloads, and replay them through a ReplicaEngine in model time."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import re
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from cato.core.coefficients import ReplicaCoefficients
from cato.engine.requests import text_block_hashes
from cato.replica_model import ReplicaEngine

WARM_CONNECTIONS = 48

_BANNER = re.compile(r"on http://127\.0\.0\.1:(\d+)\s*$")

# a server whose coefficients are not a preset: the spec (JSON) names a preset and field overrides
_CUSTOM = """
import json, sys
from cato.core.coefficients import preset
from cato.engine.server import EngineConfig, serve
spec = json.loads(sys.argv[1])
coeffs = preset(spec["preset"]).with_overrides(**spec["overrides"])
serve("127.0.0.1", 0, EngineConfig(coeffs=coeffs, time_dilation=spec["time_dilation"],
                                   seed=spec["seed"], max_model_len=spec["max_model_len"]))
"""


@dataclass
class Server:
    """A running ``cato engine`` process."""

    proc: subprocess.Popen[str]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> int:
        """SIGTERM, wait, return the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def _start(argv: list[str], timeout_s: float = 20.0) -> Server:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            m = _BANNER.search(line)
            if m:
                return Server(proc, int(m.group(1)))
    finally:
        sel.close()
    proc.kill()
    proc.wait()
    raise RuntimeError(f"engine did not start (exit status {proc.returncode})")


def start_cli(*args: str) -> Server:
    """``python -m cato engine --port 0 ARGS``."""
    return _start([sys.executable, "-m", "cato", "engine", "--port", "0", *args])


def start_custom(preset: str, overrides: dict[str, Any], *, time_dilation: float, seed: int = 0,
                 max_model_len: int | None = None) -> Server:
    """A server on ``preset(preset).with_overrides(**overrides)`` (via ``serve``)."""
    spec = {"preset": preset, "overrides": overrides, "time_dilation": time_dilation, "seed": seed,
            "max_model_len": max_model_len}
    return _start([sys.executable, "-c", _CUSTOM, json.dumps(spec)])


def prompt_of(tokens: int) -> str:
    """A prompt of exactly ``tokens`` tokens under the 4-characters rule."""
    return ("lorem ipsum dolor sit amet " * (tokens // 6 + 2))[: 4 * tokens]


# ------------------------------------------------------------------------------ open-loop workload
@dataclass(frozen=True)
class Arrival:
    at_s: float  # wall seconds after the start of the run
    prompt_tokens: int
    output_tokens: int
    prompt: str | None = None  # the prompt text (None: ``prompt_of(prompt_tokens)``)


def poisson_lognormal(n: int, rate_per_s: float, seed: int, *, prompt_median: float, prompt_sigma: float,
                      output_median: float, output_sigma: float, max_prompt: int, max_output: int,
                      min_gap_s: float = 0.0) -> list[Arrival]:
    """``n`` Poisson arrivals (wall rate) with lognormal prompt/output lengths, clipped.

    ``min_gap_s`` > 0 makes the gaps ``min_gap_s`` + exponential (same mean rate): no two
    requests closer than that, so the transport's jitter cannot swap their order."""
    rng = np.random.default_rng(seed)
    if not 0.0 <= min_gap_s < 1.0 / rate_per_s:
        raise ValueError("min_gap_s must be below the mean gap")
    gaps = min_gap_s + rng.exponential(1.0 / rate_per_s - min_gap_s, n)
    at = np.cumsum(gaps) - gaps[0] + 0.05
    p = np.clip(np.round(rng.lognormal(math.log(prompt_median), prompt_sigma, n)), 1, max_prompt)
    o = np.clip(np.round(rng.lognormal(math.log(output_median), output_sigma, n)), 1, max_output)
    return [Arrival(float(a), int(pp), int(oo)) for a, pp, oo in zip(at, p, o)]


@dataclass
class Latency:
    ttft_s: float
    e2e_s: float
    tokens: int = 0


@dataclass
class RunResult:
    latencies: list[Latency] = field(default_factory=list)
    send_lateness_s: list[float] = field(default_factory=list)


async def sleep_until(target: float) -> None:
    """Sleep until ``time.perf_counter() >= target``, to a fraction of a millisecond: asyncio's
    epoll sleeps round up to whole milliseconds, so sleep to 1.5 ms before, then yield."""
    delay = target - 0.0015 - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    while time.perf_counter() < target:
        await asyncio.sleep(0)


async def _one(client: httpx.AsyncClient, url: str, a: Arrival, t_start: float, res: RunResult,
               out: list[Latency | None], i: int) -> None:
    await sleep_until(t_start + a.at_s)
    t_send = time.perf_counter()
    res.send_lateness_s.append(t_send - (t_start + a.at_s))
    prompt = a.prompt if a.prompt is not None else prompt_of(a.prompt_tokens)
    body = {"model": "cato-emulated", "prompt": prompt, "max_tokens": a.output_tokens,
            "stream": True, "priority": 3}
    first: float | None = None
    last = t_send
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                now = time.perf_counter()
                if first is None:
                    first = now
                last = now
                tokens += 1
    assert first is not None
    out[i] = Latency(first - t_send, last - t_send, tokens)


async def run_open_loop(base_url: str, arrivals: list[Arrival]) -> RunResult:
    """Send every arrival at its scheduled wall time (streamed); latencies at the client."""
    res = RunResult()
    out: list[Latency | None] = [None] * len(arrivals)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=120.0)
    async with httpx.AsyncClient(limits=limits, timeout=120.0) as client:
        # warm the server's code paths, and open enough connections up front that no request
        # pays for a TCP connect during the run
        await client.post(f"{base_url}/v1/completions", json={"prompt": "x", "max_tokens": 2})
        await asyncio.gather(*(client.get(f"{base_url}/health") for _ in range(WARM_CONNECTIONS)))
        gc.collect()
        gc.freeze()
        t_start = time.perf_counter()
        url = f"{base_url}/v1/completions"
        await asyncio.gather(*(_one(client, url, a, t_start, res, out, i) for i, a in enumerate(arrivals)))
    gc.unfreeze()
    res.latencies = [x for x in out if x is not None]
    assert len(res.latencies) == len(arrivals)
    return res


def replay_in_model_time(coeffs: ReplicaCoefficients, arrivals: list[Arrival], time_dilation: float,
                         *, engine: ReplicaEngine | None = None) -> list[Latency]:
    """The same stream through a ReplicaEngine with no clock: arrival ``at_s / dilation``.
    With an ``engine`` given (e.g. one with prefix caching), it runs there, and each arrival
    with a prompt text is submitted with that text's block hashes, as ``cato engine`` does."""
    eng = ReplicaEngine(coeffs) if engine is None else engine
    first: dict[int, float] = {}
    done: dict[int, float] = {}

    def take(events: list[Any]) -> None:
        for ev in events:
            (first if ev.kind == "first_token" else done)[ev.call_id] = ev.at_s

    for i, a in enumerate(arrivals):
        t = a.at_s / time_dilation
        take(eng.advance(t))
        prefix = None
        if engine is not None and a.prompt is not None:
            prefix = text_block_hashes(a.prompt, coeffs.kv_block_tokens)
        eng.submit(i, a.prompt_tokens, a.output_tokens, t, prefix=prefix)
    while (te := eng.next_event_s()) is not None:
        take(eng.advance(te))
    return [Latency(first[i] - a.at_s / time_dilation, done[i] - a.at_s / time_dilation, a.output_tokens)
            for i, a in enumerate(arrivals)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def saturation_rate(coeffs: ReplicaCoefficients, arrivals: list[Arrival]) -> float:
    """Requests per model second the engine completes in steady state when every request of
    the mix is there at once: the completion rate between the 10th and the 90th percent of the
    completions (the ramp-up and the tail of a finite batch left out)."""
    eng = ReplicaEngine(coeffs)
    for i, a in enumerate(arrivals):
        eng.submit(i, a.prompt_tokens, a.output_tokens, 0.0)
    done: list[float] = []
    while (te := eng.next_event_s()) is not None:
        done += [ev.at_s for ev in eng.advance(te) if ev.kind == "finished"]
    lo, hi = len(done) // 10, (9 * len(done)) // 10
    return (hi - lo) / (done[hi] - done[lo])
