"""Elastic replicas with real processes: the core's scaling policy drives `cato engine`
processes that the gateway starts and stops itself (local process provider)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from cato.loadgen import Timing, session, stream_request
from conftest import launch_gateway  # type: ignore[import-not-found]


def _replicas(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(url + "/admin/replicas").json()["replicas"])


async def _load(url: str, rate: float, duration_s: float, task: str,
                max_tokens: int) -> list[tuple[float, Timing]]:
    n = int(rate * duration_s)
    async with session() as s:
        t0 = time.perf_counter() + 0.1
        jobs = [stream_request(s, url + "/v1/completions",
                               {"model": task, "prompt": "def f(x):\n" * 40,
                                "max_tokens": max_tokens}, at=t0 + i / rate)
                for i in range(n)]
        res = await asyncio.gather(*jobs)
    return [(i / rate, r) for i, r in enumerate(res)]


def test_burst_scales_up_attainment_recovers_and_idle_scales_down(tmp_path: Path) -> None:
    config = {
        "models": [{"name": "m", "emulated": {"replicas": 1, "time_dilation": 40.0},
                    "autoscale": {"policy": "cato", "min_replicas": 1, "max_replicas": 4,
                                  "params": {"interval_s": 1.0, "max_exceeded_times": 1,
                                             "idle_timeout_s": 2.0}}}],
        "sla_scale": 40.0, "profile_at_startup": False,
        "code_index_root": str(Path(__file__).parent),
    }
    gw = launch_gateway(tmp_path, config, [])
    try:
        assert len(_replicas(gw.url)) == 1
        res = asyncio.run(_load(gw.url, rate=10.0, duration_s=24.0, task="completion",
                                max_tokens=12))
        assert all(r.status == 200 for _, r in res), [r.error for _, r in res if r.status != 200]
        scaling = httpx.get(gw.url + "/admin/scaling").json()["models"]["m"]
        added = [e for e in scaling["events"] if e["action"] == "add"]
        ready = [e for e in scaling["events"] if e["action"] == "ready"]
        assert added and ready, scaling["events"]
        assert all(c > 0 for c in scaling["cold_starts_s"])

        def attainment(lo: float, hi: float) -> float:
            xs = [r for t, r in res if lo <= t < hi]
            return sum(r.summary.get("sla_met") is True for r in xs) / len(xs)

        first, last = attainment(0, 4), attainment(16, 24)
        # one replica cannot carry the burst: the first seconds miss SLAs until the added
        # replicas are ready; by the last third attainment is back
        assert last >= 0.9 and last > first, (first, last)
        # load gone: idle replicas drain and stop, back to min_replicas
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_replicas(gw.url)) > 1:
            time.sleep(0.5)
        assert len(_replicas(gw.url)) == 1
        events = httpx.get(gw.url + "/admin/scaling").json()["models"]["m"]["events"]
        assert any(e["action"] == "stopped" for e in events)
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'cato_scale_events_total{action="add",model="m"}' in metrics
        assert "cato_cold_start_seconds_count" in metrics
    finally:
        gw.close()


def test_killed_replica_is_replaced_and_no_request_is_lost(tmp_path: Path) -> None:
    config = {
        "models": [{"name": "m", "emulated": {"replicas": 2, "time_dilation": 3.0},
                    "autoscale": {"policy": "fixed", "min_replicas": 2, "max_replicas": 2}}],
        "sla_scale": 3.0, "profile_at_startup": False,
        "code_index_root": str(Path(__file__).parent),
    }
    gw = launch_gateway(tmp_path, config, [])
    try:
        victim = _replicas(gw.url)[0]
        assert victim["pid"]

        async def scenario() -> list[tuple[float, Timing]]:
            load = asyncio.ensure_future(_load(gw.url, rate=8.0, duration_s=8.0,
                                               task="translation", max_tokens=40))
            await asyncio.sleep(3.0)
            os.kill(victim["pid"], signal.SIGKILL)
            return await load

        t0 = time.monotonic()
        res = asyncio.run(scenario())
        assert time.monotonic() - t0 < 60     # nothing hangs
        ok = [r for _, r in res if r.status == 200]
        failed = [r for _, r in res if r.status != 200]
        assert len(ok) + len(failed) == len(res) == 64   # every request got an answer
        assert len(ok) >= 48
        for r in failed:      # the ones in flight on the killed engine: a clear error
            assert r.error and ("engine" in r.error), r.error
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reps = _replicas(gw.url)
            if len(reps) == 2 and all(x["state"] == "ready" for x in reps) \
                    and victim["id"] not in {x["id"] for x in reps}:
                break
            time.sleep(0.5)
        assert len(reps) == 2 and victim["id"] not in {x["id"] for x in reps}
        assert all(x["state"] == "ready" for x in reps)
        events = httpx.get(gw.url + "/admin/scaling").json()["models"]["m"]["events"]
        assert any(e["action"] == "crashed" and e["replica"] == victim["id"] for e in events)
        after = httpx.post(gw.url + "/v1/completions",
                           json={"model": "completion", "prompt": "x", "max_tokens": 2})
        assert after.status_code == 200
    finally:
        gw.close()
