"""Graceful shutdown through real processes: ``cato serve`` with the emulated engines it starts
itself gets SIGTERM while streams are running. Streams that fit in ``shutdown.drain_timeout_s``
finish normally; longer ones end with an OpenAI-style error event (``code: shutting_down``) and
``[DONE]``, never a silent cut; new requests are refused (503, or the connection is refused once
uvicorn has closed its socket); the process exits within the bound and stops its engines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from cato.demo import start_gateway, stop
from conftest import SMALL_INDEX_ROOT  # type: ignore[import-not-found]

pytestmark = pytest.mark.reliability

TIME_DILATION = 3.0   # about 31 ms per decoded token (a100-llama7b preset)
EXIT_SLACK_S = 5.0    # the process is gone within drain_timeout_s + this
# uvicorn re-raises the signal it caught once shutdown is complete, so a clean exit after
# SIGTERM is death by SIGTERM (as a supervisor expects); 0 is fine too
CLEAN_EXIT = (0, -signal.SIGTERM)


@dataclass
class Stream:
    """What a client read from one streamed completion."""

    max_tokens: int
    status: int = 0
    tokens: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False            # ``data: [DONE]`` was the last data line
    after_done: int = 0           # data lines after ``[DONE]`` (must be none)
    transport_error: str | None = None
    first_token: asyncio.Event = field(default_factory=asyncio.Event)
    ended_s: float | None = None  # monotonic time the body ended

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e["error"] for e in self.events if "error" in e]

    @property
    def usage(self) -> dict[str, Any] | None:
        for e in self.events:
            if e.get("usage"):
                u: dict[str, Any] = e["usage"]
                return u
        return None

    @property
    def finish_reasons(self) -> list[str]:
        return [c["finish_reason"] for e in self.events for c in e.get("choices") or ()
                if c.get("finish_reason")]


async def read_stream(client: httpx.AsyncClient, url: str, task: str, s: Stream) -> None:
    body = {"model": task, "prompt": f"def {task}_helper(xs):\n    return", "stream": True,
            "max_tokens": s.max_tokens, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            s.status = r.status_code
            if r.status_code != 200:
                s.events.append(json.loads(await r.aread()))
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if s.done:
                    s.after_done += 1
                elif line == "data: [DONE]":
                    s.done = True
                else:
                    ev = json.loads(line[6:])
                    s.events.append(ev)
                    if any(c.get("text") for c in ev.get("choices") or ()):
                        s.tokens += 1
                        s.first_token.set()
    except httpx.HTTPError as e:
        s.transport_error = f"{type(e).__name__}: {e}"
    finally:
        s.ended_s = time.monotonic()
        s.first_token.set()   # never leave the waiter hanging (the assertions tell why)


@dataclass
class Probe:
    """A request sent after SIGTERM: its status and body, or the connection error."""

    path: str
    status: int | None
    body: dict[str, Any] | None
    error: str | None


async def probe(url: str, path: str, client: httpx.AsyncClient | None = None) -> Probe:
    """``GET /ready`` or a small completion, on ``client`` (a kept-alive connection) or on a new
    connection (a probe must not ride on a stream's connection)."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            c = client if client is not None else await stack.enter_async_context(
                httpx.AsyncClient(timeout=5, trust_env=False))
            if path == "/ready":
                r = await c.get(url + path)
            else:
                r = await c.post(url + path, json={"model": "completion", "prompt": "x",
                                                   "max_tokens": 2})
    except httpx.HTTPError as e:
        return Probe(path, None, None, type(e).__name__)
    try:
        body = r.json()
    except ValueError:
        body = None
    return Probe(path, r.status_code, body, None)


@dataclass
class Drain:
    streams: list[Stream]
    probes: list[Probe]
    sigterm_s: float
    exit_s: float | None     # seconds from SIGTERM to the process' exit (None: still running)
    returncode: int | None


def launch(tmp: Path, drain_timeout_s: float) -> tuple[subprocess.Popen[bytes], str, Path]:
    cfg = {"models": [{"name": "m", "emulated": {"replicas": 2,
                                                 "time_dilation": TIME_DILATION}}],
           "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
           # this test is about the drain: only the drain bound may end the streams
           "timeouts": {"sla_factor": None},
           "shutdown": {"drain_timeout_s": drain_timeout_s}}
    path = tmp / "cato.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp / "gateway.log"
    proc, url = start_gateway(["--config", str(path), "--profile", str(tmp / "profile.json")],
                              timeout_s=60, log_path=log)
    return proc, url, log


def launch_owned(tmp: Path, drain_timeout_s: float,
                 cleanup: list[subprocess.Popen[bytes] | int]
                 ) -> tuple[subprocess.Popen[bytes], str, Path, list[int]]:
    """:func:`launch`, with the gateway and its engines' pids handed to ``cleanup``."""
    proc, url, log = launch(tmp, drain_timeout_s)
    cleanup.append(proc)
    pids = engine_pids(url)
    cleanup.extend(pids)
    return proc, url, log, pids


def engine_pids(url: str) -> list[int]:
    reps = httpx.get(url + "/admin/replicas", timeout=10, trust_env=False).json()["replicas"]
    pids = [r["pid"] for r in reps]
    assert len(pids) == 2 and all(isinstance(p, int) and p > 0 for p in pids), reps
    return pids


def proc_state(pid: int) -> str | None:
    """The state letter of ``/proc/<pid>`` (``Z``: zombie), or None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_engine(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"engine" in cmd and b"cato" in cmd


def wait_engines_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Pids still running (not gone, not a zombie) after up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in pids if proc_state(p) not in (None, "Z")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def drain(url: str, proc: subprocess.Popen[bytes], tasks: list[str], max_tokens: int,
          bound_s: float) -> Drain:
    """Start one stream per task, wait for every first token, SIGTERM the gateway, probe it
    with new requests while the streams run, and wait for the process to exit."""

    async def run() -> Drain:
        streams = [Stream(max_tokens) for _ in tasks]
        limits = httpx.Limits(max_connections=len(tasks) + 2)
        async with httpx.AsyncClient(timeout=60, trust_env=False, limits=limits) as client, \
                httpx.AsyncClient(timeout=5, trust_env=False) as kept_ready, \
                httpx.AsyncClient(timeout=5, trust_env=False) as kept_post:
            # connections opened before SIGTERM: uvicorn closes idle ones at its next tick
            # (<= 0.1 s), and a request that comes first on one meets the gateway's own 503
            for kept in (kept_ready, kept_post):
                assert (await kept.get(url + "/ready")).status_code == 200
            readers = [asyncio.create_task(read_stream(client, url, t, s))
                       for t, s in zip(tasks, streams)]
            await asyncio.wait_for(asyncio.gather(*(s.first_token.wait() for s in streams)),
                                   timeout=20)
            assert all(s.tokens > 0 for s in streams), \
                [(s.status, s.events[-1:], s.transport_error) for s in streams]
            assert not any(r.done() for r in readers), "a stream ended before SIGTERM"
            os.kill(proc.pid, signal.SIGTERM)
            t_term = time.monotonic()
            probes = list(await asyncio.gather(probe(url, "/ready", kept_ready),
                                               probe(url, "/v1/completions", kept_post)))
            exit_s: float | None = None
            deadline = t_term + bound_s + EXIT_SLACK_S
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    exit_s = time.monotonic() - t_term
                    break
                if not all(r.done() for r in readers):
                    probes += await asyncio.gather(probe(url, "/ready"),
                                                   probe(url, "/v1/completions"))
                await asyncio.sleep(0.05)
            await asyncio.wait_for(asyncio.gather(*readers), timeout=10)
        return Drain(streams, probes, t_term, exit_s, proc.poll())

    return asyncio.run(run())


def assert_refused_while_draining(probes: list[Probe]) -> None:
    """No request sent after SIGTERM was served; those answered got the drain's 503."""
    assert probes, "no request was sent while the streams were running"
    for p in probes:
        assert p.status != 200, p
        if p.status is None:
            continue   # uvicorn closed its listening socket: connection refused
        assert p.status == 503, p
        if p.path == "/ready":
            assert p.body == {"status": "draining"}, p
        else:
            assert p.body is not None and p.body["error"]["code"] == "shutting_down", p


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[bytes] | int]]:
    """Processes a test started: gateways (Popen) and engine pids, stopped if still running."""
    owned: list[subprocess.Popen[bytes] | int] = []
    yield owned
    for item in owned:
        if isinstance(item, subprocess.Popen):
            stop(item)
    for item in owned:
        if isinstance(item, int) and proc_state(item) not in (None, "Z") and is_engine(item):
            os.kill(item, signal.SIGKILL)


def test_sigterm_lets_running_streams_finish_then_stops_the_engines(
        tmp_path: Path, cleanup: list[subprocess.Popen[bytes] | int]) -> None:
    bound = 8.0
    proc, url, log, pids = launch_owned(tmp_path, bound, cleanup)
    assert all(proc_state(p) not in (None, "Z") for p in pids)
    tasks = ["completion", "generation", "summarization", "translation", "completion",
             "translation"]
    max_tokens = 90   # about 3 s each, three at a time on each of the two engines

    d = drain(url, proc, tasks, max_tokens, bound)

    for task, s in zip(tasks, d.streams):
        what = (task, s.status, s.transport_error, s.events[-3:])
        assert s.status == 200 and s.transport_error is None, what
        assert s.errors == [], what
        assert s.done and s.after_done == 0, what
        assert s.tokens == max_tokens, what
        assert s.usage is not None and s.usage["completion_tokens"] == max_tokens, what
        assert s.finish_reasons == ["length"], what
        assert s.ended_s is not None and s.ended_s - d.sigterm_s < bound, what
    assert_refused_while_draining(d.probes)
    assert d.exit_s is not None, f"still running {bound + EXIT_SLACK_S:g} s after SIGTERM"
    assert d.exit_s <= bound + EXIT_SLACK_S
    assert d.returncode in CLEAN_EXIT, log.read_text()[-3000:]
    assert wait_engines_gone(pids, timeout_s=2.0) == [], "engines outlived the gateway"
    text = log.read_text()
    assert f"shutting down: draining {len(tasks)} calls" in text, text[-3000:]


def test_streams_past_the_drain_bound_end_with_a_shutting_down_error(
        tmp_path: Path, cleanup: list[subprocess.Popen[bytes] | int]) -> None:
    bound = 3.0
    proc, url, log, pids = launch_owned(tmp_path, bound, cleanup)
    tasks = ["translation", "summarization", "generation", "completion"]
    max_tokens = 480   # about 15 s: far past the bound

    d = drain(url, proc, tasks, max_tokens, bound)

    for task, s in zip(tasks, d.streams):
        what = (task, s.status, s.transport_error, s.tokens, s.events[-2:])
        assert s.status == 200 and s.transport_error is None, what
        assert 0 < s.tokens < max_tokens, what
        # the error event is the last event, then [DONE]: not a silent cut
        assert s.events and "error" in s.events[-1], what
        err = s.events[-1]["error"]
        assert set(err) == {"message", "type", "param", "code"}, what
        assert err["code"] == "shutting_down", what
        assert "drain_timeout_s" in err["message"], what
        assert len(s.errors) == 1 and s.done and s.after_done == 0, what
        assert s.finish_reasons == [], what
        # ended by the gateway shortly before the bound (bound - min(1, bound/4))
        assert s.ended_s is not None, what
        assert bound / 2 <= s.ended_s - d.sigterm_s <= bound + 1.0, what
    assert_refused_while_draining(d.probes)
    assert d.exit_s is not None, f"still running {bound + EXIT_SLACK_S:g} s after SIGTERM"
    assert d.exit_s <= bound + EXIT_SLACK_S
    assert d.returncode in CLEAN_EXIT, log.read_text()[-3000:]
    assert wait_engines_gone(pids, timeout_s=2.0) == [], "engines outlived the gateway"
