"""Live vs simulated: one surge through the real gateway with elastic emulated engines, and the
same stream through the simulator with the same latency model, scaling policy and bounds.

Live: ``cato serve`` (a real subprocess) with one model of emulated engines (time dilation
``D``: each engine runs D times slower than an A100, so a laptop-sized load saturates it), the
CATO routing and Algorithm 2 autoscaling (the provisioner starts and stops real ``cato engine``
processes); the load generator replays the stream with code-like prompts of the drawn lengths,
and ``/admin/replicas`` is polled for the replica count. Simulated: the same stream, the A100
coefficients slowed by D (so simulated seconds are wall seconds), the same scaling parameters,
cold starts at the live median. The two are compared in shape: replicas over time and
attainment per window.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from cato.core.catalog import single_step_tasks
from cato.core.coefficients import preset, slowed
from cato.loadgen import session, stream_request
from cato.sim import arrivals as arr
from cato.sim.config import ModelDeployment, SimConfig
from cato.sim.simulator import Simulator
from cato.sim.workload import MIX_A, TaskArrival, build_stream

TASKS = ("completion", "generation", "summarization", "translation")


@dataclass
class SurgeRun:
    label: str
    replicas: list[tuple[float, int]] = field(default_factory=list)   # (t, provisioned)
    outcomes: list[tuple[float, bool]] = field(default_factory=list)  # (arrival, met)
    cold_starts_s: list[float] = field(default_factory=list)

    def attainment_per_window(self, window_s: float, end_s: float) -> list[tuple[float, float]]:
        out = []
        for lo in np.arange(0.0, end_s, window_s):
            xs = [m for t, m in self.outcomes if lo <= t < lo + window_s]
            if xs:
                out.append((float(lo + window_s / 2), sum(xs) / len(xs)))
        return out


def surge_stream(base_rps: float, factor: float, duration_s: float, seed: int
                 ) -> list[TaskArrival]:
    rng = np.random.default_rng(seed)
    f = arr.step_surge(base_rps, factor, duration_s / 3.0, 2.0 * duration_s / 3.0)
    times = arr.inhomogeneous_poisson(f, f.max_rate_rps, duration_s, rng)
    return build_stream(times, single_step_tasks({t: "m" for t in TASKS}), MIX_A, rng)


def _scaling(interval_s: float) -> dict[str, Any]:
    return {"interval_s": interval_s, "max_exceeded_times": 1, "idle_timeout_s": 10.0}


def run_live(stream: list[TaskArrival], *, dilation: float, max_replicas: int,
             interval_s: float) -> SurgeRun:
    from cato.demo import start_gateway, stop
    from cato.serving.filler import filler_text
    tmp = Path(tempfile.mkdtemp(prefix="cato-surge-"))
    cfg = {"models": [{"name": "m", "emulated": {"replicas": 1, "time_dilation": dilation},
                       "autoscale": {"policy": "cato", "min_replicas": 1,
                                     "max_replicas": max_replicas,
                                     "params": _scaling(interval_s)}}],
           "sla_scale": dilation, "profile_at_startup": False,
           "code_index_root": str(Path(__file__).parent)}
    (tmp / "cato.yaml").write_text(yaml.safe_dump(cfg))
    proc, url = start_gateway(["--config", str(tmp / "cato.yaml"), "--profile",
                               str(tmp / "p.json"), "--log-level", "warning"])
    run = SurgeRun("live")
    stop_poll = threading.Event()
    t0 = time.perf_counter() + 0.5

    def poll() -> None:
        with httpx.Client(timeout=2.0) as c:
            while not stop_poll.is_set():
                n = len(c.get(url + "/admin/replicas").json()["replicas"])
                run.replicas.append((time.perf_counter() - t0, n))
                time.sleep(0.25)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    async def load() -> list[Any]:
        async with session() as s:
            return list(await asyncio.gather(*(
                stream_request(s, url + "/v1/completions",
                               {"model": a.task, "prompt": filler_text(a.lengths["llm"][0]),
                                "max_tokens": a.lengths["llm"][1]}, at=t0 + a.arrival_s)
                for a in stream)))

    try:
        res = asyncio.run(load())
        time.sleep(15.0)   # the scale-down after the surge
        scaling = httpx.get(url + "/admin/scaling").json()["models"]["m"]
        run.cold_starts_s = list(scaling["cold_starts_s"])
    finally:
        stop_poll.set()
        poller.join()
        stop(proc)
    run.outcomes = [(a.arrival_s, r.status == 200 and r.summary.get("sla_met") is True)
                    for a, r in zip(stream, res)]
    return run


def run_sim(stream: list[TaskArrival], *, dilation: float, max_replicas: int,
            interval_s: float, cold_start_s: float, seed: int) -> SurgeRun:
    cfg = SimConfig(
        deployments=(ModelDeployment("m", slowed(preset("a100-llama7b"), dilation), 1, 1,
                                     max_replicas),),
        tasks=single_step_tasks({t: "m" for t in TASKS}, sla_scale=dilation),
        routing="cato", scaling="cato", scaling_params=_scaling(interval_s),
        cold_start_median_s=cold_start_s, cold_start_p90_s=cold_start_s * 1.2)
    res = Simulator(cfg, stream, seed=seed).run()
    timeline = list(res.replicas_over_time)
    if timeline:
        timeline.append((res.end_s, timeline[-1][1]))   # the count holds to the run's end
    run = SurgeRun("simulated", replicas=timeline,
                   outcomes=[(r.arrival_s, r.met) for r in res.records],
                   cold_starts_s=list(res.cold_starts_s))
    return run


def plot(live: SurgeRun, sim: SurgeRun, end_s: float, path: Path, window_s: float = 10.0
         ) -> Path:
    from cato.report.plots import _pyplot, _save
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for run, style in ((live, "-"), (sim, "--")):
        t, n = zip(*run.replicas) if run.replicas else ((), ())
        a1.step(t, n, style, where="post", label=run.label)
        w = run.attainment_per_window(window_s, end_s)
        if w:
            x, y = zip(*w)
            a2.plot(x, y, style + "o", label=run.label)
    a1.set_ylabel("replicas")
    a1.axvspan(end_s / 3, 2 * end_s / 3, color="0.9")
    a2.axvspan(end_s / 3, 2 * end_s / 3, color="0.9")
    a2.set_ylabel(f"attainment per {window_s:g} s")
    a2.set_xlabel("seconds (grey: x4 surge)")
    a2.set_ylim(0, 1.05)
    a1.legend()
    a1.set_title("CATO autoscaling, live gateway vs simulator (same stream)")
    return _save(fig, path)


def compare(*, base_rps: float = 2.0, factor: float = 4.0, duration_s: float = 90.0,
            dilation: float = 5.0, max_replicas: int = 6, interval_s: float = 2.0,
            seed: int = 0, out_png: Path, out_json: Path) -> dict[str, Any]:
    stream = surge_stream(base_rps, factor, duration_s, seed)
    live = run_live(stream, dilation=dilation, max_replicas=max_replicas, interval_s=interval_s)
    cold = float(np.median(live.cold_starts_s)) if live.cold_starts_s else 1.0
    sim = run_sim(stream, dilation=dilation, max_replicas=max_replicas, interval_s=interval_s,
                  cold_start_s=cold, seed=seed)
    plot(live, sim, duration_s, out_png)
    summary = {
        "requests": len(stream), "base_rps": base_rps, "factor": factor,
        "duration_s": duration_s, "dilation": dilation, "seed": seed,
        "live_cold_start_median_s": cold,
        "attainment": {r.label: sum(m for _, m in r.outcomes) / len(r.outcomes)
                       for r in (live, sim)},
        "max_replicas": {r.label: max(n for _, n in r.replicas) for r in (live, sim)},
        "windows": {r.label: r.attainment_per_window(10.0, duration_s) for r in (live, sim)},
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(summary, indent=1))
    return summary
