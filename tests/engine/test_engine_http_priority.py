"""``cato engine --scheduling-policy priority`` over real HTTP on loopback: the body's integer
``priority`` orders the engine's queue (vLLM V1's priority scheduler, modelled in
:mod:`cato.replica_model.scheduling`); under the default ``fcfs`` it is accepted and ignored, as vLLM V1
does; a non-integer priority is an OpenAI-shaped 400 naming the field; an unknown policy is
refused before the server listens. (Named apart from tests/sim/test_engine_priority.py: two test
modules with one basename break collection without package ``__init__`` files.)"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_harness import Server, _start, prompt_of, start_cli

MODEL = "cato-emulated"


def _cato_cli() -> str:
    exe = Path(sys.executable).parent / "cato"
    found = str(exe) if exe.exists() else shutil.which("cato")
    assert found, "the `cato` console script is not installed"
    return found


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    """One batch slot each, so queued requests wait and their order shows. The priority server
    is started through the `cato engine` command itself, the FCFS one through the module."""
    prio = _start([_cato_cli(), "engine", "--port", "0", "--max-num-seqs", "1",
                   "--scheduling-policy", "priority"])
    try:
        fcfs = start_cli("--max-num-seqs", "1")
    except BaseException:
        prio.close()
        raise
    yield {"priority": prio, "fcfs": fcfs}
    prio.close()
    fcfs.close()


async def _first_token(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                       started: asyncio.Event | None = None) -> tuple[float, int]:
    """Stream ``body``; the wall time of its first token chunk, and the token count."""
    first: float | None = None
    tokens = 0
    async with client.stream("POST", url, json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                if first is None:
                    first = time.perf_counter()
                    if started is not None:
                        started.set()
                tokens += 1
    assert first is not None
    return first, tokens


async def _queue_behind_a_busy_slot(base_url: str) -> dict[str, float]:
    """A (100 tokens, ~1 s of decoding) holds the only slot; then B (1500-token prompt,
    priority 5) and, 50 ms later, C (20-token prompt, priority 0) queue behind it."""
    url = f"{base_url}/v1/completions"
    async with httpx.AsyncClient(timeout=60.0) as client:
        await client.post(url, json={"prompt": "x", "max_tokens": 1})  # warm the code paths
        running = asyncio.Event()
        a = asyncio.ensure_future(_first_token(
            client, url, {"model": MODEL, "prompt": prompt_of(10), "max_tokens": 100, "priority": 9},
            running))
        await asyncio.wait_for(running.wait(), 10.0)
        b = asyncio.ensure_future(_first_token(
            client, url, {"prompt": prompt_of(1500), "max_tokens": 10, "priority": 5}))
        await asyncio.sleep(0.05)
        c = asyncio.ensure_future(_first_token(
            client, url, {"prompt": prompt_of(20), "max_tokens": 10, "priority": 0}))
        (ta, na), (tb, nb), (tc, nc) = await asyncio.gather(a, b, c)
    assert (na, nb, nc) == (100, 10, 10)
    return {"A": ta, "B": tb, "C": tc}


def test_priority_server_serves_the_urgent_request_first(servers: dict[str, Server]) -> None:
    t = asyncio.run(_queue_behind_a_busy_slot(servers["priority"].base_url))
    # C (priority 0) overtakes B (priority 5); C's 10 tokens (~0.1 s) run before B's prefill
    assert t["A"] < t["C"] < t["B"]
    assert t["B"] - t["C"] > 0.08


def test_fcfs_server_ignores_priority(servers: dict[str, Server]) -> None:
    t = asyncio.run(_queue_behind_a_busy_slot(servers["fcfs"].base_url))
    assert t["A"] < t["B"] < t["C"]
    assert t["C"] - t["B"] > 0.08


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("priority", ["high", 1.5, True, [1], {"p": 1}, "3"])
def test_non_integer_priority_is_a_400_naming_it(servers: dict[str, Server], policy: str, path: str,
                                                 priority: Any) -> None:
    body: dict[str, Any] = {"max_tokens": 2, "priority": priority}
    if path == "/v1/completions":
        body["prompt"] = "hello"
    else:
        body["messages"] = [{"role": "user", "content": "hello"}]
    r = httpx.post(servers[policy].base_url + path, json=body, timeout=30.0)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == "priority"
    assert "priority" in err["message"]


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
@pytest.mark.parametrize("priority", [0, -3, 7, 2**40, None])
def test_integer_priorities_are_accepted(servers: dict[str, Server], policy: str, priority: Any) -> None:
    r = httpx.post(f"{servers[policy].base_url}/v1/chat/completions", timeout=30.0,
                   json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
                         "priority": priority})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2


def test_unknown_policy_is_refused_before_listening() -> None:
    r = subprocess.run([sys.executable, "-m", "cato", "engine", "--port", "0",
                        "--scheduling-policy", "lifo"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "lifo" in r.stderr and "scheduling policy" in r.stderr
    r = subprocess.run([_cato_cli(), "engine", "--port", "0", "--scheduling-policy", "lifo"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "lifo" in (r.stdout + r.stderr)
