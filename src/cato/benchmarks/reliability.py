"""``cato bench reliability``: faults, overload and a soak against real processes, with the
books a client keeps.

Each scenario starts real emulated engines (``cato engine``, some with ``--fault``), a real
gateway (``cato serve`` as a subprocess over them), drives an open-loop Poisson load of
streamed and plain completions at it with its own client, injects its fault during the run
(SIGKILL, SIGSTOP/SIGCONT, a runtime ``POST /fault``, or a faulty engine from the start), and
polls ``/health`` all along. Every request's fate is recorded as the client saw it:

* **shed**: 429 (a full queue, ``Retry-After``): refused explicitly, not accepted;
* **accepted**: everything else the gateway answered or should have answered;
* **answered**: an accepted request that ended in a complete response: 200 with every token and
  ``[DONE]``, or a clear error (a 4xx/5xx JSON error body, or an error event then ``[DONE]``);
* **lost** = accepted - answered: no response, a connection cut without an error, a client
  timeout (must be 0);
* **duplicated**: a response with more tokens than asked for (the engines emit exactly
  ``max_tokens``), i.e. output sent twice after a retry (must be 0).

Also: 5xx responses, error events mid-stream, the gateway's retries and ejections (from its
``/metrics``), P50/P99/max of ``/health`` latency under the load, and the gateway's resident
memory and open file descriptors at the start and the end (the soak).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp
import numpy as np
import yaml

from cato.demo import start_gateway, stop
from cato.edge.procs import free_port, wait_ready
from cato.edge.sse import SseParser
from cato.edge.sse import loads as sse_loads
from cato.serving.launcher import EngineProcess, emulated_engine_argv, start_process

PROMPT = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"


@dataclass
class Scenario:
    name: str
    injected: str
    engines: list[list[str]]                    # extra `cato engine` flags, one list per engine
    rate: float                                 # requests per second offered
    duration_s: float
    max_tokens: int = 24
    time_dilation: float = 1.0
    max_num_seqs: int | None = None
    gateway: dict[str, Any] = field(default_factory=dict)    # config overrides
    #: (seconds after the load starts, action name): "kill:0", "stop:0", "cont:0", "fault:0:{json}"
    actions: list[tuple[float, str]] = field(default_factory=list)
    stream_share: float = 0.7
    timeout_s: float = 60.0


@dataclass
class RequestRecord:
    sent_at: float
    stream: bool
    status: int | None = None
    tokens: int = 0
    done: bool = False
    error_event: str | None = None
    error_code: str | None = None
    client_error: str | None = None


@dataclass
class Outcome:
    scenario: str
    injected: str
    sent: int
    accepted: int
    shed: int
    ok: int
    answered: int
    lost: int
    duplicated: int
    http_5xx: int
    errors_mid_stream: int
    other_4xx: int
    retries: float
    ejections: float
    health_p50_ms: float
    health_p99_ms: float
    health_max_ms: float
    rss_mb_start: float
    rss_mb_end: float
    fds_start: int
    fds_end: int
    seconds: float
    active_end: float = 0.0          # requests the gateway still held after the run (0)
    error_codes: dict[str, int] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return asdict(self)


# ---- the client ----------------------------------------------------------------------------------
async def _one(s: aiohttp.ClientSession, url: str, rec: RequestRecord, max_tokens: int,
               timeout_s: float) -> None:
    body = {"model": "completion", "prompt": PROMPT, "max_tokens": max_tokens,
            "stream": rec.stream}
    try:
        async with asyncio.timeout(timeout_s):
            async with s.post(url + "/v1/completions", json=body) as r:
                rec.status = r.status
                if r.status != 200:
                    try:
                        err = (await r.json(content_type=None))["error"]
                        rec.error_code = str(err.get("code"))
                        rec.done = bool(err.get("message"))
                    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
                        rec.client_error = "non-200 without an OpenAI-style error body"
                    return
                if not rec.stream:
                    obj = await r.json()
                    rec.tokens = int(obj["usage"]["completion_tokens"])
                    rec.done = len(obj["choices"][0]["text"]) > 0
                    return
                parser = SseParser()
                try:
                    async for chunk in r.content.iter_any():
                        for data in parser.feed(chunk):
                            ev = sse_loads(data)
                            if "error" in ev:
                                rec.error_event = str(ev["error"].get("message"))
                                rec.error_code = str(ev["error"].get("code"))
                            elif ev.get("choices") and ev["choices"][0].get("text"):
                                rec.tokens += 1
                finally:
                    rec.done = parser.done
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as e:
        rec.client_error = f"{type(e).__name__}: {e}"[:200]


async def drive(url: str, rate: float, duration_s: float, *, seed: int = 0,
                max_tokens: int = 24, stream_share: float = 0.7, timeout_s: float = 60.0,
                actions: list[tuple[float, Callable[[], Any]]] | None = None
                ) -> tuple[list[RequestRecord], list[float]]:
    """Open-loop Poisson load for ``duration_s`` plus a ``/health`` poller (every 50 ms);
    ``actions`` run at their offsets. Returns the records and ``/health`` latencies (s)."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration_s * 2) + 10)
    at = np.cumsum(gaps)
    at = at[at < duration_s]
    streams = rng.random(len(at)) < stream_share
    records: list[RequestRecord] = []
    health: list[float] = []
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=conn) as s, \
            aiohttp.ClientSession() as hs:
        t0 = time.monotonic()
        stop_poll = asyncio.Event()

        async def poll() -> None:
            while not stop_poll.is_set():
                a = time.perf_counter()
                try:
                    async with hs.get(url + "/health",
                                      timeout=aiohttp.ClientTimeout(total=10)) as r:
                        await r.read()
                    health.append(time.perf_counter() - a)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    health.append(10.0)
                await asyncio.sleep(0.05)

        async def act() -> None:
            for off, fn in sorted(actions or [], key=lambda x: x[0]):
                await asyncio.sleep(max(0.0, t0 + off - time.monotonic()))
                res = fn()
                if asyncio.iscoroutine(res):
                    await res

        poller = asyncio.ensure_future(poll())
        actor = asyncio.ensure_future(act())
        tasks = []
        for when, st in zip(at, streams):
            await asyncio.sleep(max(0.0, t0 + float(when) - time.monotonic()))
            rec = RequestRecord(time.monotonic() - t0, bool(st))
            records.append(rec)
            tasks.append(asyncio.ensure_future(_one(s, url, rec, max_tokens, timeout_s)))
        await asyncio.gather(*tasks)
        await actor
        stop_poll.set()
        await poller
    return records, health


# ---- books ---------------------------------------------------------------------------------------
def tally(sc: Scenario, records: list[RequestRecord], health: list[float],
          metrics_text: str, mem: tuple[float, float, int, int], seconds: float) -> Outcome:
    shed = [r for r in records if r.status == 429]
    accepted = [r for r in records if r.status != 429]
    ok = [r for r in accepted if r.status == 200 and r.done and r.error_event is None
          and r.tokens == sc.max_tokens]
    answered = [r for r in accepted if r.done and r.client_error is None]
    dup = [r for r in accepted if r.tokens > sc.max_tokens]
    codes: dict[str, int] = {}
    for r in accepted:
        if r.error_code:
            codes[r.error_code] = codes.get(r.error_code, 0) + 1
        if r.client_error:
            codes["lost: " + r.client_error[:60]] = codes.get("lost: " + r.client_error[:60],
                                                               0) + 1
    h = np.array(health or [0.0]) * 1000
    return Outcome(
        scenario=sc.name, injected=sc.injected, sent=len(records), accepted=len(accepted),
        shed=len(shed), ok=len(ok), answered=len(answered),
        lost=len(accepted) - len(answered), duplicated=len(dup),
        http_5xx=sum(1 for r in accepted if r.status is not None and r.status >= 500),
        errors_mid_stream=sum(1 for r in accepted if r.error_event is not None),
        other_4xx=sum(1 for r in accepted if r.status is not None and 400 <= r.status < 500),
        retries=_metric_sum(metrics_text, "cato_retries_total"),
        ejections=_metric_sum(metrics_text, "cato_replica_ejections_total"),
        health_p50_ms=round(float(np.percentile(h, 50)), 2),
        health_p99_ms=round(float(np.percentile(h, 99)), 2),
        health_max_ms=round(float(h.max()), 2),
        rss_mb_start=mem[0], rss_mb_end=mem[1], fds_start=mem[2], fds_end=mem[3],
        seconds=round(seconds, 1), active_end=_metric_sum(metrics_text, "cato_active_requests"),
        error_codes=codes)


def _metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def process_memory(pid: int) -> tuple[float, int]:
    """(resident MiB, open file descriptors) of a process (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmRSS:\s+(\d+) kB", status)
    rss = int(m.group(1)) / 1024 if m else 0.0
    return round(rss, 1), len(os.listdir(f"/proc/{pid}/fd"))


# ---- one scenario --------------------------------------------------------------------------------
class Rig:
    """Engines and a gateway for one scenario (context manager: everything stops after)."""

    def __init__(self, sc: Scenario, workdir: Path) -> None:
        self.sc = sc
        self.dir = workdir / sc.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.engines: list[EngineProcess] = []
        self.gw: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> Rig:
        try:
            for i, extra in enumerate(self.sc.engines):
                port = free_port()
                argv = emulated_engine_argv(port, model="m", preset="a100-llama7b",
                                            time_dilation=self.sc.time_dilation,
                                            seed=i, max_num_seqs=self.sc.max_num_seqs)
                self.engines.append(start_process(argv + extra, f"http://127.0.0.1:{port}",
                                                  self.dir / "logs"))
            wait_ready(self.engines, timeout_s=60)
            cfg: dict[str, Any] = {
                "models": [{"name": "m", "replicas": [{"url": e.url} for e in self.engines],
                            # the gateway releases at most the engines' batch: queues form
                            # (and are bounded) in the gateway
                            "concurrency": self.sc.max_num_seqs}],
                "profile_at_startup": False, "code_index_root": str(Path(__file__).parent)}
            _merge(cfg, self.sc.gateway)
            path = self.dir / "cato.yaml"
            path.write_text(yaml.safe_dump(cfg))
            self.gw, self.url = start_gateway(
                ["--config", str(path), "--profile", str(self.dir / "profile.json")],
                timeout_s=120, log_path=self.dir / "gateway.log")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.gw is not None:
            stop(self.gw)
        for e in self.engines:
            if e.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):   # a frozen engine must stop
                    os.kill(e.proc.pid, signal.SIGCONT)
            e.stop()

    def action(self, spec: str) -> Callable[[], Any]:
        """``kill:I``, ``stop:I``, ``cont:I`` (signals to engine I), ``fault:I:{json}``
        (``POST /fault`` on engine I, started with ``--fault-control``)."""
        kind, idx, *rest = spec.split(":", 2)
        e = self.engines[int(idx)]
        sigs = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "cont": signal.SIGCONT}
        if kind in sigs:
            return lambda: os.kill(e.proc.pid, sigs[kind])
        if kind == "fault":
            async def post() -> None:
                async with aiohttp.ClientSession() as s:
                    async with s.post(e.url + "/fault", json=json.loads(rest[0])) as r:
                        r.raise_for_status()
            return post
        raise ValueError(f"unknown action {spec!r}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/metrics") as r:
            return await r.text()


def run_scenario(sc: Scenario, workdir: Path, *, seed: int = 0) -> Outcome:
    """Run one scenario. Memory and descriptors are sampled every second; "start" is the
    sample a quarter into the run (after the pools and caches have warmed up), "end" the last."""
    with Rig(sc, workdir) as rig:
        assert rig.gw is not None
        pid = rig.gw.pid
        samples: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(1.0):
                samples.append(process_memory(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        records, health = asyncio.run(drive(
            rig.url, sc.rate, sc.duration_s, seed=seed, max_tokens=sc.max_tokens,
            stream_share=sc.stream_share, timeout_s=sc.timeout_s,
            actions=[(off, rig.action(a)) for off, a in sc.actions]))
        seconds = time.monotonic() - t0
        done.set()
        sampler.join()
        samples.append(process_memory(pid))
        text = asyncio.run(_metrics(rig.url))
    warm = samples[len(samples) // 4]
    end = samples[-1]
    return tally(sc, records, health, text, (warm[0], end[0], warm[1], end[1]), seconds)


# ---- the scenarios -------------------------------------------------------------------------------
FAST_HEALTH = {"health": {"interval_s": 0.5, "timeout_s": 0.5, "unhealthy_after": 2,
                          "healthy_after": 2, "eject_after_errors": 3}}


def scenarios(scale: float = 1.0) -> list[Scenario]:
    """The suite. ``scale`` stretches durations (tests run it at about 0.5, the benchmark at
    1-2); rates are fixed."""
    d = max(6.0, 20.0 * scale)
    return [
        Scenario("baseline", "nothing", [[], [], []], rate=20, duration_s=d,
                 gateway=FAST_HEALTH),
        Scenario("engine-killed", "SIGKILL one of 3 engines at 1/3 of the run",
                 [[], [], []], rate=20, duration_s=d, gateway=FAST_HEALTH,
                 actions=[(d / 3, "kill:0")]),
        Scenario("engine-hung", "SIGSTOP one of 3 engines at 1/3, SIGCONT at 2/3 (re-admitted)",
                 [[], [], []], rate=20, duration_s=d, gateway=FAST_HEALTH,
                 actions=[(d / 3, "stop:0"), (2 * d / 3, "cont:0")]),
        Scenario("engine-garbage", "one of 3 engines answers half its calls with a non-JSON "
                 "stream", [["--fault", "garbage:0.5"], [], []], rate=20, duration_s=d,
                 gateway=FAST_HEALTH),
        Scenario("engine-errors", "one of 3 engines answers every call HTTP 500 (its /health "
                 "stays 200)", [["--fault", "error:1"], [], []], rate=20, duration_s=d,
                 gateway=FAST_HEALTH),
        Scenario("closed-before-output", "one of 3 engines closes 30% of connections before "
                 "any byte", [["--fault", "close-before:0.3"], [], []], rate=20, duration_s=d,
                 gateway=FAST_HEALTH),
        Scenario("closed-mid-stream", "one of 3 engines cuts 30% of streams after 3 tokens",
                 [["--fault", "close-mid:0.3"], [], []], rate=20, duration_s=d,
                 gateway=FAST_HEALTH),
        Scenario("hung-mid-stream", "one of 3 engines stops sending after 3 tokens in half its "
                 "calls (cancelled after 2 s without a byte)",
                 [["--fault", "hang-mid:0.5"], [], []], rate=10, duration_s=d,
                 gateway={**FAST_HEALTH, "timeouts": {"stall_s": 2}}),
        Scenario("engine-hung-before-output", "one of 3 engines accepts half its calls and "
                 "never answers (cancelled after 2 s, retried elsewhere)",
                 [["--fault", "hang:0.5"], [], []], rate=10, duration_s=d,
                 gateway={**FAST_HEALTH, "timeouts": {"stall_s": 2}}),
        Scenario("overload-10x", "10x the engines' capacity (2 engines, 4 sequences each, 10x "
                 "slowed: ~8 req/s)", [[], []], rate=80, duration_s=d, time_dilation=10.0,
                 max_num_seqs=4, max_tokens=16,
                 gateway={**FAST_HEALTH, "limits": {"max_queue_per_replica": 8,
                                                    "max_queue_per_task": 32}}),
    ]


def soak(duration_s: float) -> Scenario:
    return Scenario("soak", f"steady 15 req/s for {duration_s:.0f} s", [[], []], rate=15,
                    duration_s=duration_s, gateway=FAST_HEALTH)


# ---- report --------------------------------------------------------------------------------------
COLUMNS = [("scenario", "scenario"), ("injected", "injected"), ("sent", "sent"),
           ("accepted", "accepted"), ("shed", "shed (429)"), ("answered", "answered"),
           ("ok", "complete 200"), ("lost", "lost"), ("duplicated", "duplicated"),
           ("http_5xx", "5xx"), ("errors_mid_stream", "error events"),
           ("retries", "retries"), ("ejections", "ejections"),
           ("health_p99_ms", "P99 /health ms"), ("health_max_ms", "max /health ms")]


def markdown_table(outcomes: list[Outcome]) -> str:
    head = "| " + " | ".join(t for _, t in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    rows = []
    for o in outcomes:
        d = o.row()
        rows.append("| " + " | ".join(_fmt(d[k]) for k, _ in COLUMNS) + " |")
    return "\n".join([head, sep, *rows])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def memory_table(outcomes: list[Outcome]) -> str:
    lines = ["| scenario | seconds | RSS start MiB | RSS end MiB | FDs start | FDs end |",
             "|---|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.scenario} | {o.seconds:g} | {o.rss_mb_start:g} | "
                     f"{o.rss_mb_end:g} | {o.fds_start} | {o.fds_end} |")
    return "\n".join(lines)
