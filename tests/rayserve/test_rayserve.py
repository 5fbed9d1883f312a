"""The Ray Serve variants on a real local Ray cluster (one per module): two applications over
emulated engines, ``ray-serve`` at ``/base`` (engines from a command template, short context)
and ``ray-serve-cato`` at ``/cato``. Marked ``ray`` and ``slow``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cato.edge.procs import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

MODEL = f"cato-rs-{uuid.uuid4().hex[:6]}"     # marks this module's engine processes
DILATION = 4.0


@dataclass
class Cluster:
    url: str
    serve: Any


def engine_pids(marker: str) -> list[int]:
    """Processes whose command line contains ``marker``."""
    import os
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if marker.encode() in cmd:
            out.append(int(d))
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    ray = pytest.importorskip("ray")
    from ray import serve

    from cato.rayserve.app import build_app
    port = free_port()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             namespace="cato-test-rayserve")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        base_engine = {"model": MODEL, "time_dilation": DILATION, "command": [
            "python", "-m", "cato", "engine", "--host", "{host}", "--port", "{port}",
            "--model", "{model}", "--time-dilation", str(DILATION), "--max-model-len", "1024"]}
        import sys
        base_engine["command"][0] = sys.executable
        serve.run(build_app("ray-serve", num_replicas=2, engine=base_engine, name="Base",
                            replica_num_cpus=0.5), name="base", route_prefix="/base")
        serve.run(build_app("ray-serve-cato", num_replicas=2, name="Cato", replica_num_cpus=0.5,
                            engine={"model": MODEL, "time_dilation": DILATION,
                                    "concurrency": 8}),
                  name="cato", route_prefix="/cato")
        yield Cluster(f"http://127.0.0.1:{port}", serve)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    deadline = time.monotonic() + 15
    while engine_pids(MODEL) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = engine_pids(MODEL)
    assert not left, f"engine processes left behind: {left}"


def openai_client(base: str) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=60)


def test_openai_client_streamed_and_not(cluster: Cluster) -> None:
    client = openai_client(cluster.url + "/base")
    assert MODEL in [m.id for m in client.models.list().data]
    r = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=8,
                                  extra_headers={"x-cato-task": "completion"})
    assert r.choices[0].text and r.usage is not None and r.usage.completion_tokens == 8
    chat = client.chat.completions.create(
        model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "explain"}])
    assert chat.choices[0].message.content and chat.object == "chat.completion"
    # streamed: one chunk per token, arriving as the engine makes them (not in one burst)
    times: list[float] = []
    pieces: list[str] = []
    stream = client.chat.completions.create(
        model=MODEL, max_tokens=12, stream=True, extra_headers={"x-cato-task": "generation"},
        messages=[{"role": "user", "content": "write a function"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.monotonic())
            pieces.append(chunk.choices[0].delta.content)
    assert len(pieces) == 12
    assert times[-1] - times[0] > 0.15        # 11 decode steps of ~40 ms (x4 dilation)
    assert len({round(t, 2) for t in times}) >= 6
    # completions stream through the task given as the model name
    texts = [c.choices[0].text for c in client.completions.create(
        model="completion", prompt="import os", max_tokens=5, stream=True)]
    assert len([t for t in texts if t]) == 5


def _post(url: str, payload: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(timeout=60, trust_env=False) as c:
        return c.post(url, json=payload, headers=headers)


def test_default_router_uses_both_replicas(cluster: Cluster) -> None:
    seen: list[str] = []

    def one() -> None:
        r = _post(cluster.url + "/base/v1/completions",
                  {"model": MODEL, "prompt": "x = 1", "max_tokens": 6},
                  {"x-cato-task": "completion"})
        assert r.status_code == 200, r.text
        seen.append(r.headers["x-cato-replica"])

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert len(seen) == 16 and len(set(seen)) == 2


def test_cato_router_routes_by_slack(cluster: Cluster) -> None:
    """One replica busy with a huge prefill: TTFT-critical calls go to the other one even once
    it holds more calls (a queue-length router would send some to the first)."""
    url = cluster.url + "/cato/v1/completions"
    got: dict[str, tuple[str, float]] = {}

    def call(name: str, prompt: str, max_tokens: int, headers: dict[str, str]) -> None:
        t0 = time.monotonic()
        with httpx.Client(timeout=120, trust_env=False) as c, c.stream(
                "POST", url, json={"model": MODEL, "prompt": prompt, "max_tokens": max_tokens,
                                   "stream": True}, headers=headers) as r:
            assert r.status_code == 200, r.read()
            got[name] = (r.headers["x-cato-replica"], time.monotonic() - t0)
            for _ in r.iter_raw():
                pass

    threads = [threading.Thread(target=call, args=(
        "L", "x" * 100_000, 4, {"x-cato-task": "translation", "x-cato-prompt-tokens": "25000"}))]
    threads[0].start()
    time.sleep(1.5)                                     # L is in its (~10 s) prefill
    for i in range(3):                                  # long generations, overlapping
        threads.append(threading.Thread(target=call, args=(
            f"S{i}", "def f(x): return x" * 10, 150, {"x-cato-task": "generation"})))
        threads[-1].start()
        time.sleep(0.3)
    call("C", "import os\n" * 30, 4, {"x-cato-task": "completion", "x-slo-ttft-ms": "400"})
    for t in threads:
        t.join()
    loaded = got["L"][0]
    others = {got[k][0] for k in ("S0", "S1", "S2", "C")}
    assert loaded not in others and len(others) == 1, got
    assert got["C"][1] < 1.0 and got["L"][1] > 3.0, got


def test_replicas_expose_routing_and_autoscaling_stats(cluster: Cluster) -> None:
    handle = cluster.serve.get_deployment_handle("Cato", app_name="cato")
    stats = handle.record_routing_stats.remote().result(timeout_s=30)
    assert stats["v"] == 1 and stats["limit"] == 8 and stats["model"] == MODEL
    assert stats["coefficients"] == "a100-llama7b" and stats["time_scale"] == DILATION
    assert isinstance(stats["calls"], list)
    scaling = handle.record_autoscaling_stats.remote().result(timeout_s=30)
    assert set(scaling) == {"cato_calls_total", "cato_violations_total", "cato_ongoing",
                            "cato_idle_s"}
    info = httpx.get(cluster.url + "/cato/v1/cato/replica", timeout=30).json()
    assert info["routing_stats"]["v"] == 1 and info["calls_total"] >= 0


def test_engine_errors_are_openai_errors(cluster: Cluster) -> None:
    openai = pytest.importorskip("openai")
    client = openai_client(cluster.url + "/base")
    # the engine's own 400 (its context is 1024 tokens), passed through with its message
    with pytest.raises(openai.BadRequestError) as e1:
        client.completions.create(model=MODEL, prompt="y" * 2000, max_tokens=900)
    assert "maximum context length" in str(e1.value)
    # the proxy's validation, as CATO's gateway answers it
    with pytest.raises(openai.NotFoundError) as e2:
        client.completions.create(model=MODEL, prompt="x", max_tokens=2,
                                  extra_headers={"x-cato-task": "poetry"})
    assert "unknown task 'poetry'" in str(e2.value)
    r = httpx.post(cluster.url + "/base/v1/chat/completions", content=b"{", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_dead_engine_is_a_502_and_its_replica_is_replaced(cluster: Cluster) -> None:
    """Kill one engine of the ``ray-serve`` app: calls routed to its replica get a 502 OpenAI
    error; the replica fails its health check and Ray replaces it (with a new engine)."""
    import os
    import signal
    base_engines = [p for p in engine_pids(MODEL) if b"--max-model-len" in
                    open(f"/proc/{p}/cmdline", "rb").read()]
    assert len(base_engines) == 2
    os.kill(base_engines[0], signal.SIGKILL)
    codes: dict[int, dict[str, Any]] = {}
    for _ in range(20):
        r = _post(cluster.url + "/base/v1/completions",
                  {"model": MODEL, "prompt": "x", "max_tokens": 2}, {})
        codes.setdefault(r.status_code, r.json())
        if 502 in codes and 200 in codes:
            break
    assert 502 in codes and 200 in codes, codes
    assert codes[502]["error"]["code"] == "engine_failed"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alive = [p for p in engine_pids(MODEL) if b"--max-model-len" in
                 open(f"/proc/{p}/cmdline", "rb").read()]
        if len(alive) == 2 and base_engines[0] not in alive:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the replica with the dead engine was not replaced")
    ok = [_post(cluster.url + "/base/v1/completions",
                {"model": MODEL, "prompt": "x", "max_tokens": 2}, {}).status_code
          for _ in range(6)]
    assert ok == [200] * 6, json.dumps(ok)
