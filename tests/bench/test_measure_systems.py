"""Live comparisons measure the systems, not the machine (BENCHMARK_PROTOCOL.md section 4):
the pinning plan, pinning real processes, the late-send rule, the same calls per engine, and the
CPU accounting of a real process tree."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cato.benchmarks import cpu_accounting as ca
from cato.benchmarks.compare import CompareSettings
from cato.benchmarks.compare_cost import cpu_fields
from cato.benchmarks.compare_report import measurement_lines, report_markdown
from cato.benchmarks.compare_systems import (RAY_DEFAULT_MAX_ONGOING, engine_concurrency,
                                             gateway_config, live_models, system_concurrency)
from cato.benchmarks.live_load import LiveRun
from cato.benchmarks.live_stream import LiveRequest
from cato.benchmarks.live_summary import late_sends, live_summary
from cato.benchmarks.pinning import (ROLES, PinPlan, cpu_ranges, pin_tree, pinned_self,
                                     plan_pinning, thread_affinity)
from cato.cli import app
from cato.core.metrics import discard_warmup
from cato.core.records import RequestRecord
from cato.sim.scenarios import scenario

linux = pytest.mark.skipif(not (ca.available() and hasattr(os, "sched_setaffinity")),
                           reason="needs /proc and sched_setaffinity (Linux)")


# ---- the plan ---------------------------------------------------------------------------------
def _disjoint_and_covering(plan: PinPlan) -> None:
    sets = [set(plan.role(r) or ()) for r in ROLES]
    assert all(sets), plan
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(plan.cpus)


@pytest.mark.parametrize("n", [3, 4, 16])
def test_plan_gives_each_role_its_own_cpus_where_they_fit(n: int) -> None:
    plan = plan_pinning(range(n), cores=[(c,) for c in range(n)])
    assert plan.mode == "separate" and plan.active
    _disjoint_and_covering(plan)
    assert plan.loadgen == (0,) or n >= 8
    if n == 4:
        assert (plan.loadgen, plan.gateway, plan.engines) == ((0,), (1,), (2, 3))
    if n == 16:     # 1/8 load generator, 1/4 gateway, the rest engines
        assert (plan.loadgen, plan.gateway) == ((0, 1), (2, 3, 4, 5))
        assert plan.engines == tuple(range(6, 16))


def test_plan_keeps_smt_siblings_together_and_follows_the_available_cpus() -> None:
    cores = [(c, c + 8) for c in range(8)]                  # 8 cores, 2 threads each
    plan = plan_pinning(range(16), cores=cores)
    _disjoint_and_covering(plan)
    assert plan.unit == "core"
    for core in cores:                                      # a core never spans two roles
        assert sum(bool(set(core) & set(plan.role(r) or ())) for r in ROLES) == 1
    assert plan.loadgen == (0, 8) and plan.gateway == (1, 2, 9, 10)
    # only some CPUs available (a cgroup or taskset): the plan uses those, by logical CPU
    # when they sit on fewer than 3 cores
    some = plan_pinning([2, 10, 3, 11], cores=cores)
    _disjoint_and_covering(some)
    assert some.unit == "cpu" and set(some.cpus) == {2, 3, 10, 11} and some.notes
    assert cpu_ranges([5, 0, 1, 2, 7]) == "0-2,5,7"


def test_plan_falls_back_on_two_cpus_one_cpu_and_no_pin() -> None:
    two = plan_pinning([4, 9])
    assert two.mode == "shared" and two.active
    assert (two.loadgen, two.gateway, two.engines) == ((4,), (4,), (9,))
    one = plan_pinning([3])
    assert one.mode == "none" and not one.active
    assert (one.loadgen, one.gateway, one.engines) == (None, None, None)
    off = plan_pinning(range(8), enabled=False)
    assert off.mode == "off" and not off.active and off.engines is None
    js = two.to_json()
    assert js["mode"] == "shared" and js["engines"] == [9] and js["notes"]
    assert "engines 9" in two.describe()


# ---- pinning real processes -------------------------------------------------------------------
#: a process with a second thread: pinning must move every thread, not just the main one
_SLEEPER = ("import threading, time\n"
            "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "time.sleep(60)\n")


def _spawn_tree(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A 'gateway' process whose child is engine-shaped (``python -m cato engine``-like
    argv, via ``-c`` so no engine starts) and whose other child is not."""
    code = (
        "import subprocess, sys, threading, time\n"
        "eng = subprocess.Popen([sys.executable, '-c', %r, '-m', 'cato', 'engine'])\n"
        "other = subprocess.Popen([sys.executable, '-c', %r])\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "open(%r, 'w').write(f'{eng.pid} {other.pid}')\n"
        "time.sleep(60)\n" % (_SLEEPER, _SLEEPER, str(tmp_path / "pids")))
    return subprocess.Popen([sys.executable, "-c", code])


def _wait_pids(tmp_path: Path) -> tuple[int, int]:
    for _ in range(200):
        f = tmp_path / "pids"
        if f.exists() and f.read_text().strip():
            a, b = f.read_text().split()
            return int(a), int(b)
        time.sleep(0.05)
    raise AssertionError("child pids never written")


def _stop(proc: subprocess.Popen[bytes], *pids: int) -> None:
    import signal
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()
    proc.wait(10)


def test_engine_cmdline_is_recognised() -> None:
    assert ca.is_engine_cmdline(["/x/python", "-m", "cato", "engine", "--port", "1"])
    assert ca.is_engine_cmdline(["/venv/bin/cato", "engine", "--port", "1"])
    assert not ca.is_engine_cmdline(["/x/python", "-m", "cato", "serve"])
    assert not ca.is_engine_cmdline(["/x/python", "-m", "cato.rayserve", "--variant", "x"])


@linux
def test_pin_tree_puts_engines_and_the_rest_on_their_cpus(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))     # one CPU: both roles on it, still checked
    plan = PinPlan("shared", tuple(cpus), (cpus[0],), (cpus[0],), (cpus[-1],))
    root = _spawn_tree(tmp_path)
    eng, other = _wait_pids(tmp_path)
    try:
        roles = ca.tree_roles(root.pid)
        assert roles == {root.pid: ca.GATEWAY, eng: ca.ENGINE, other: ca.GATEWAY}
        deadline = time.monotonic() + 20                  # every process has its 2nd thread
        while time.monotonic() < deadline and any(
                len(os.listdir(f"/proc/{p}/task")) < 2 for p in roles):
            time.sleep(0.05)
        assert pin_tree(root.pid, plan) == {"gateway": 2, "engines": 1}
        for pid, want in ((root.pid, cpus[0]), (other, cpus[0]), (eng, cpus[-1])):
            tids = os.listdir(f"/proc/{pid}/task")
            assert len(tids) == 2, pid
            for tid in tids:                              # every thread, not just the main
                assert os.sched_getaffinity(int(tid)) == {want}, (pid, tid)
        # an inactive plan changes nothing
        assert pin_tree(root.pid, plan_pinning(enabled=False)) == {"gateway": 0, "engines": 0}
    finally:
        _stop(root, eng, other)


@linux
def test_a_process_started_under_thread_affinity_inherits_it_and_self_is_restored() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    with thread_affinity([cpus[-1]]):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert os.sched_getaffinity(child.pid) == {cpus[-1]}
        assert os.sched_getaffinity(0) == before
        with pinned_self([cpus[0]]):
            assert os.sched_getaffinity(0) == {cpus[0]}
        assert os.sched_getaffinity(0) == before
    finally:
        child.kill()
        child.wait(10)


# ---- CPU accounting ---------------------------------------------------------------------------
_BURN = ("import time\n"
         "end = time.process_time() + %r\n"
         "while time.process_time() < end:\n"
         "    pass\n"
         "time.sleep(30)\n")


@linux
def test_cpu_of_a_real_tree_counts_the_gateway_and_the_engine_apart(tmp_path: Path) -> None:
    """A 'gateway' child burns 0.3 s of CPU, an engine-shaped child 0.6 s: each is counted in
    its role."""
    code = (
        "import subprocess, sys, time\n"
        "eng = subprocess.Popen([sys.executable, '-c', %r, '-m', 'cato', 'engine'])\n"
        "gw = subprocess.Popen([sys.executable, '-c', %r])\n"
        "open(%r, 'w').write(f'{eng.pid} {gw.pid}')\n"
        "time.sleep(60)\n" % (_BURN % 0.6, _BURN % 0.3, str(tmp_path / "pids")))
    root = subprocess.Popen([sys.executable, "-c", code])
    meter = ca.TreeCpu(root.pid)
    meter.start()
    eng, gw = _wait_pids(tmp_path)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            meter.sample()
            u = meter.usage()
            if (u.engine_cpu_s or 0) >= 0.6 and (u.gateway_cpu_s or 0) >= 0.3:
                break
            time.sleep(0.2)
        usage = meter.stop()
    finally:
        _stop(root, eng, gw)
    assert usage.engine_processes == 1 and usage.gateway_processes == 2   # the root and gw
    assert usage.engine_cpu_s is not None and usage.gateway_cpu_s is not None
    assert 0.55 <= usage.engine_cpu_s <= 1.2
    # the burner's 0.3 s plus the root's start-up (an interpreter: well under 0.5 s)
    assert 0.25 <= usage.gateway_cpu_s <= 1.2
    assert usage.per_request(10) == pytest.approx(usage.gateway_cpu_s / 10)
    assert usage.per_request(0) is None
    # the breakdown by process covers the gateway role only, and all of it
    assert sum(usage.gateway_by_process.values()) == pytest.approx(usage.gateway_cpu_s)
    assert not any("engine" in k for k in usage.gateway_by_process)


@linux
def test_cpu_spent_before_the_window_is_not_counted() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _BURN % 0.5])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st = ca.read_stat(proc.pid)
            if st is not None and st.cpu_ticks >= 0.5 * os.sysconf("SC_CLK_TCK"):
                break
            time.sleep(0.05)
        meter = ca.TreeCpu(proc.pid)
        meter.start()
        time.sleep(0.3)                                   # now it only sleeps
        usage = meter.stop()
    finally:
        proc.kill()
        proc.wait(10)
    assert usage.gateway_cpu_s is not None and usage.gateway_cpu_s <= 0.05
    assert ca.TreeCpu(None).stop().gateway_cpu_s is None   # no process: unknown, not zero


def test_cpu_fields_divide_by_completed_requests() -> None:
    usage = ca.CpuUsage(gateway_cpu_s=2.0, engine_cpu_s=5.0, gateway_processes=1,
                        engine_processes=4, wall_s=10.0)
    recs = [_record(i, 0.1 * i, "ok" if i < 8 else "failed") for i in range(10)]
    f = cpu_fields(usage, recs, loadgen_cpu_s=1.5, idle_cpu_per_s=0.1)
    assert f["cpu_s_per_request"] == pytest.approx(2.0 / 8)
    assert f["gateway_cpu_ms_per_request"] == pytest.approx(250.0)
    assert (f["engine_cpu_s"], f["loadgen_cpu_s"]) == (5.0, 1.5)
    # above idle: 2.0 CPU-s less 0.1 CPU-s/s over the 10 s window, per completed request
    assert f["gateway_cpu_ms_per_request_above_idle"] == pytest.approx(1000 * 1.0 / 8)
    assert cpu_fields(usage, recs)["gateway_cpu_ms_per_request_above_idle"] is None
    assert ca.process_label(["ray::ProxyActor"]) == "ray::ProxyActor"
    assert ca.process_label(["/v/python", "-m", "cato", "serve", "--port", "1"]) == \
        "-m cato serve"
    assert ca.process_label(["/x/ray/core/src/ray/raylet/raylet", "--a"]) == "raylet"


# ---- late sends -------------------------------------------------------------------------------
def _request(i: int, at: float) -> LiveRequest:
    return LiveRequest(id=i, arrival_s=at, task="generation", model="m", prompt="x",
                       max_tokens=4, prompt_tokens=1, sla_kind="ttft", sla_s=1.0)


def _record(i: int, sent: float, status: str = "ok", met: bool = True) -> RequestRecord:
    ok = status == "ok"
    return RequestRecord(id=i, task="generation", policy="x", arrival_s=sent,
                         first_token_s=sent + 0.1 if ok else None,
                         last_token_s=sent + 0.5 if ok else None, n_in=1, n_out=4,
                         sla_kind="ttft", sla_s=1.0, status=status,  # type: ignore[arg-type]
                         met=met and ok, replica="r0")


def _late_run(lags: list[float], met: list[bool] | None = None) -> LiveRun:
    reqs = [_request(i, 1.0 * i) for i in range(len(lags))]
    met = met or [True] * len(lags)
    recs = [_record(r.id, r.arrival_s + lag, met=m) for r, lag, m in zip(reqs, lags, met)]
    return LiveRun(url="u", requests=reqs, timings=[], records=recs, send_lag_s=lags,
                   duration_s=len(lags), started_at=0.0)


def test_late_sends_are_discarded_counted_and_named() -> None:
    # 40 requests, 1 s apart; five sent late (> 50 ms), two just on time (== 50 ms, 10 ms)
    lags = [0.0] * 40
    for i, lag in {3: 0.2, 10: 8.0, 11: 0.051, 30: 0.6, 39: 1.0, 5: 0.05, 6: 0.01}.items():
        lags[i] = lag
    met = [i not in (10, 11, 12) for i in range(40)]     # two late ones missed, one on time
    run = _late_run(lags, met)
    assert late_sends(run, 0.05) == {3, 10, 11, 30, 39}
    assert late_sends(run, None) == set()
    with pytest.raises(ValueError, match="late tolerance"):
        late_sends(run, -1.0)
    s = live_summary(run, system="x", late_tolerance_s=0.05)
    kept, cut = discard_warmup(run.records)               # 5 % of 40: the first 2 go
    assert cut == pytest.approx(2.0) and s["warmup_cut_s"] == pytest.approx(cut)
    assert s["num_warmup_discarded"] == 2
    assert s["late_discarded"] == 5 and s["late_ids"] == [3, 10, 11, 30, 39]
    assert s["late_share"] == pytest.approx(5 / 38) and s["late_tolerance_ms"] == 50.0
    on_time = [r for r in kept if r.id not in {3, 10, 11, 30, 39}]
    assert s["num_arrived"] == len(on_time) == 33
    assert s["num_met"] == sum(r.met for r in on_time) == 32   # only 12 missed on time
    assert s["attainment"] == pytest.approx(32 / 33)
    # the window (goodput's denominator) is the stream's, whatever was late
    assert s["duration_s"] == pytest.approx(39.0 - cut)
    assert s["request_goodput"] == pytest.approx(32 / (39.0 - cut))
    # no rule: nothing discarded, the plain summary
    plain = live_summary(run, system="x")
    assert plain["late_discarded"] == 0 and plain["late_tolerance_ms"] is None
    assert plain["num_arrived"] == 38 and plain["num_met"] == 35
    assert plain["duration_s"] == s["duration_s"]


def test_report_says_how_many_were_late_per_system_and_how_cpus_were_pinned() -> None:
    def run(system: str, seed: int, late: int, cpu_ms: float) -> dict[str, object]:
        return {"system": system, "seed": seed, "attainment": 0.9, "num_arrived": 100 - late,
                "late_discarded": late, "gateway_cpu_s": cpu_ms / 10,
                "gateway_cpu_ms_per_request": cpu_ms, "engine_cpu_s": 3.0,
                "loadgen_cpu_s": 1.0, "per_engine_concurrency": {"m": 5 if system ==
                                                                 "ray-serve" else 32}}
    plan = plan_pinning([0, 1])
    result = {"settings": {"scenario": "paper", "rate_rps": 3.33, "arrival": "poisson",
                           "duration_s": 60.0, "seeds": [0, 1], "systems": ["cato", "ray-serve"],
                           "time_dilation": 1.0, "autoscale": False,
                           "pinning": plan.to_json(), "late_tolerance_ms": 50.0},
              "runs": [run("cato", 0, 0, 1.0), run("cato", 1, 2, 3.0),
                       run("ray-serve", 0, 7, 20.0), run("ray-serve", 1, 3, 40.0)]}
    lines = "\n".join(measurement_lines(result))
    assert "| cato | 32 | 2 of 200 (1.00 %) |" in lines
    assert "| ray-serve | 5 (Ray's default) | 10 of 200 (5.00 %) |" in lines
    assert "| 2.000 ± 1.414 |" in lines and "| 30 ± 14 |" in lines      # CPU ms / request
    assert "load generator on CPU 0, gateway on 0, engines on 1" in lines
    assert "more than 50 ms after their schedule" in lines
    assert "fewer than the protocol's 5" in lines
    md = report_markdown(result, ["ray-serve"])
    assert "gateway CPU (ms) / request" in md and "10 of 200" in md
    assert measurement_lines({**result, "runs": [{"system": "cato", "seed": 0}]}) == []


# ---- the same calls per engine ---------------------------------------------------------------
def test_every_system_gets_the_same_calls_per_engine() -> None:
    sc = scenario("paper")
    models = live_models(sc)
    for override, want in ((None, sc.engine_concurrency), (7, 7)):
        cfg = gateway_config(sc, models, "cato", dilation=1.0, seed=0, autoscale=False,
                             concurrency=override)
        assert [m["concurrency"] for m in cfg["models"]] == [want] * len(models)
        assert {engine_concurrency(sc, m, override) for m in models} == {want}
    assert system_concurrency("ray-serve-tuned", 7) == 7 == system_concurrency("cato", 7)
    assert system_concurrency("ray-serve", 7) == RAY_DEFAULT_MAX_ONGOING == 5
    with pytest.raises(ValueError, match=">= 1"):
        engine_concurrency(sc, models[0], 0)
    # the Ray Serve engines get the same value as the gateway (their max_ongoing_requests)
    from cato.rayserve.variants import variant_settings
    opts = {"model": "m", "preset": "a100-llama7b", "concurrency": engine_concurrency(
        sc, models[0], 7)}
    assert variant_settings("ray-serve-tuned", opts)["max_ongoing_requests"] == 7
    assert CompareSettings("paper", 1.0, [0], ["cato"]).late_tolerance_s == 0.05


# ---- the CLI ----------------------------------------------------------------------------------
def test_cli_asks_for_five_seeds_unless_quick() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "compare", "--seeds", "0,1,2"])
    assert res.exit_code == 2 and "at least 5 seeds" in res.output and "--quick" in res.output
    res = runner.invoke(app, ["bench", "compare", "--seeds", "0,0,1,2,3"])
    assert res.exit_code == 2 and "each seed once" in res.output
    # --quick lets fewer through to the next check (here: a bad scenario, so nothing starts)
    res = runner.invoke(app, ["bench", "compare", "--seeds", "0", "--quick", "--scenario",
                              "nope"])
    assert res.exit_code == 2 and "nope" in res.output and "5 seeds" not in res.output
    res = runner.invoke(app, ["bench", "compare", "--scenario", "nope"])   # default: 5 seeds
    assert res.exit_code == 2 and "nope" in res.output
