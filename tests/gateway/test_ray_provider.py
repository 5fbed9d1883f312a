"""Elastic replicas on a real Ray cluster: two Ray nodes started by the test (``ray start``,
a head and a worker with a custom resource), the gateway joining it by address, and each
replica an :class:`~cato.gateway.ray_provider.EngineActor` that runs an emulated engine on the
node Ray picked. Marked ``ray`` (and ``slow``); ``make test`` / CI run it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cato.edge.procs import free_port
from cato.gateway.config import RayResources
from cato.gateway.ray_provider import slots_for
from cato.loadgen import Timing, session, stream_request
from conftest import launch_gateway  # type: ignore[import-not-found]

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(400)]

RAY = str(Path(sys.executable).parent / "ray")
SLOTS = 3   # engine_slot resources on the worker node: the cluster's capacity for replicas


def _ray_start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    ports = ["--ray-client-server-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--node-manager-port", "--object-manager-port"]
    argv = [RAY, "start", "--block", "--disable-usage-stats", *args]
    for p in ports:
        argv += [p, str(free_port())]
    return subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=_ray_env(log.parent))


def _ray_env(tmp: Path) -> dict[str, str]:
    """Nodes started with a home of their own: a ``~/.ray/auth_token`` left by an earlier local
    ``ray.init()`` on this machine would otherwise turn on token auth for this cluster."""
    return dict(os.environ, HOME=str(tmp))


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)    # `ray start --block` stops its node's processes
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("ray")
    tmp = tmp_path_factory.mktemp("ray")
    port = free_port()
    head = _ray_start(["--head", "--port", str(port), "--num-cpus", "1",
                       "--include-dashboard", "false"], tmp / "head.log")
    nodes = [head]
    try:
        deadline = time.monotonic() + 90
        worker: subprocess.Popen[bytes] | None = None
        address = None
        while time.monotonic() < deadline:
            assert head.poll() is None, (tmp / "head.log").read_text()[-2000:]
            # the address Ray itself announces (the node's IP, which Ray may choose)
            m = re.search(r"ray start --address='([^']+)'", (tmp / "head.log").read_text())
            if m is None:
                time.sleep(0.5)
                continue
            address = m.group(1)
            st = subprocess.run([RAY, "status", "--address", address], capture_output=True,
                                text=True, env=_ray_env(tmp))
            if st.returncode == 0 and worker is None:
                worker = _ray_start(["--address", address, "--num-cpus", "2",
                                     "--resources", json.dumps({"engine_slot": SLOTS})],
                                    tmp / "worker.log")
                nodes.append(worker)
            if st.returncode == 0 and "engine_slot" in st.stdout:
                break
            time.sleep(1.0)
        else:
            raise AssertionError(f"Ray cluster did not come up at {address}: "
                                 f"{(tmp / 'head.log').read_text()[-1500:]}")
        yield address
    finally:
        for p in reversed(nodes):
            _stop(p)


def _replicas(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(url + "/admin/replicas").json()["replicas"])


def _parent_cmdline(pid: int) -> str:
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def _load(url: str, rate: float, duration_s: float, task: str,
                max_tokens: int) -> list[tuple[float, Timing]]:
    n = int(rate * duration_s)
    async with session() as s:
        t0 = time.perf_counter() + 0.1
        res = await asyncio.gather(*(stream_request(
            s, url + "/v1/completions", {"model": task, "prompt": "def f(x):\n" * 40,
                                         "max_tokens": max_tokens}, at=t0 + i / rate)
            for i in range(n)))
    return [(i / rate, r) for i, r in enumerate(res)]


def test_slots_for_counts_the_scarcest_resource() -> None:
    need = RayResources(num_cpus=2, num_gpus=1, resources={"A100": 1})
    assert slots_for(need, {"CPU": 16, "GPU": 3, "A100": 2}) == 2
    assert slots_for(need, {"CPU": 3, "GPU": 8, "A100": 8}) == 1
    assert slots_for(need, {"CPU": 16, "GPU": 8}) == 0
    assert slots_for(RayResources(num_cpus=0), {"CPU": 4}) is None


def test_replicas_are_ray_actors_that_scale_within_capacity_and_survive_a_kill(
        ray_cluster: str, tmp_path: Path) -> None:
    config = {
        "ray": {"address": ray_cluster},
        "models": [{"name": "m", "emulated": {"time_dilation": 40.0},
                    "autoscale": {"provider": "ray", "policy": "cato", "min_replicas": 1,
                                  "max_replicas": 5,   # more than the cluster has room for
                                  "ray_resources": {"num_cpus": 0,
                                                    "resources": {"engine_slot": 1}},
                                  "params": {"interval_s": 1.0, "max_exceeded_times": 1,
                                             "idle_timeout_s": 2.0}}}],
        "sla_scale": 40.0, "profile_at_startup": False,
        "code_index_root": str(Path(__file__).parent),
    }
    gw = launch_gateway(tmp_path, config, [])
    try:
        first = _replicas(gw.url)
        assert len(first) == 1 and first[0]["where"].startswith("ray:")
        # the engine is a child of its Ray actor's worker process
        assert "EngineActor" in _parent_cmdline(first[0]["pid"]), _parent_cmdline(first[0]["pid"])

        # a burst: scale up, but never past the 3 engine slots the cluster has
        res = asyncio.run(_load(gw.url, rate=10.0, duration_s=20.0, task="completion",
                                max_tokens=12))
        assert all(r.status == 200 for _, r in res), [r.error for _, r in res if r.status != 200]
        scaling = httpx.get(gw.url + "/admin/scaling").json()["models"]["m"]
        adds = [e for e in scaling["events"] if e["action"] == "add"]
        assert adds, scaling["events"]
        peak = max(len(_replicas(gw.url)), 1 + len(adds) - sum(
            e["action"] == "stopped" for e in scaling["events"]))
        assert 2 <= peak <= SLOTS, scaling["events"]
        late = [r for t, r in res if t >= 12]
        assert sum(r.summary.get("sla_met") is True for r in late) / len(late) >= 0.8

        # kill one engine under load: replaced, every request answered
        victim = _replicas(gw.url)[0]

        async def kill_under_load() -> list[tuple[float, Timing]]:
            load = asyncio.ensure_future(_load(gw.url, rate=6.0, duration_s=6.0,
                                               task="completion", max_tokens=12))
            await asyncio.sleep(2.0)
            os.kill(victim["pid"], signal.SIGKILL)
            return await load

        res = asyncio.run(kill_under_load())
        assert len(res) == 36
        for _, r in res:
            assert r.status == 200 or (r.error and "engine" in r.error), (r.status, r.error)
        assert sum(r.status == 200 for _, r in res) >= 18   # in flight on the victim: errors
        events = httpx.get(gw.url + "/admin/scaling").json()["models"]["m"]["events"]
        assert any(e["action"] == "crashed" and e["replica"] == victim["id"] for e in events)

        # idle: back to min_replicas; stopped engines are gone
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reps = _replicas(gw.url)
            if len(reps) == 1 and reps[0]["state"] == "ready":
                break
            time.sleep(0.5)
        assert len(reps) == 1 and reps[0]["state"] == "ready", reps
        after = httpx.post(gw.url + "/v1/completions",
                           json={"model": "completion", "prompt": "x", "max_tokens": 2})
        assert after.status_code == 200
        pid = reps[0]["pid"]
    finally:
        gw.close()
    time.sleep(3.0)   # the gateway's actors are gone with it, and their engines
    assert not Path(f"/proc/{pid}").exists()


def test_without_an_address_the_gateway_starts_a_local_ray(tmp_path: Path) -> None:
    """``ray: {address: null}``: the gateway's own ``ray.init()``; its replica serves, and
    stopping the gateway ends Ray, the actor and the engine."""
    pytest.importorskip("ray")
    config = {
        "ray": {"num_cpus": 2},
        "models": [{"name": "m", "emulated": {"time_dilation": 1.0},
                    "autoscale": {"provider": "ray", "policy": "fixed", "min_replicas": 1,
                                  "max_replicas": 1, "ray_resources": {"num_cpus": 1}}}],
        "profile_at_startup": False, "code_index_root": str(Path(__file__).parent),
    }
    gw = launch_gateway(tmp_path, config, [])
    try:
        reps = _replicas(gw.url)
        assert len(reps) == 1 and reps[0]["where"].startswith("ray:")
        pid = reps[0]["pid"]
        assert "EngineActor" in _parent_cmdline(pid)
        r = httpx.post(gw.url + "/v1/completions", timeout=30,
                       json={"model": "completion", "prompt": "def f(x):", "max_tokens": 4})
        assert r.status_code == 200 and r.json()["choices"][0]["text"]
    finally:
        gw.close()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not Path(f"/proc/{pid}").exists()
