"""Plans over time (issue 16, part 5): ``/admin/profile`` shows the current plans and their
history on a real gateway on loopback; the history and the live re-profiler on a real
:class:`~cato.serving.planner.Planner`."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from cato.core.catalog import TASK_NAMES
from cato.core.coefficients import preset
from cato.core.estimator import LatencyEstimator
from cato.core.reprofile import ReprofileSettings
from cato.core.slack import NodeBaseline, model_baselines
from cato.serving.planner import Planner
from cato.serving.replanning import LiveReprofiler
from cato.gateway.config import ConfigError, parse_config
from conftest import SMALL_INDEX_ROOT, RunningGateway, launch_gateway, start_engines


def test_admin_profile_shows_the_plans_and_their_history(gateway: RunningGateway) -> None:
    body = httpx.get(gateway.url + "/admin/profile").json()
    plan = body["plans"]["pipeline"]["summarization"]
    start = body["history"][0]
    assert start["reason"] == "start-up: baselines from the profile"
    base = start["plans"]["pipeline"]["summarization"]
    assert set(base) == {"retrieve", "llm"}
    # the plan in force is the one of the start-up baselines: its path sums them
    assert plan["critical_path_baseline_s"] == pytest.approx(base["retrieve"] + base["llm"],
                                                             rel=1e-4)
    assert len(body["history"]) == 1                   # nothing drifted (no re-profiler)


def planner() -> Planner:
    return Planner({t: "m" for t in TASK_NAMES}, {"m": preset("a100-llama7b")})


def test_a_replan_is_logged_with_old_and_new_baselines_and_serves_new_calls() -> None:
    p = planner()
    old = p.pipelines["summarization"]
    call_before = p.make_call(old, "llm", arrival_s=0.0, now_s=0.03, prompt_tokens=300)
    llm = old.plan.baseline_s["llm"]
    base = {"retrieve": NodeBaseline(0.03, 0.03), "llm": NodeBaseline(0.05, 2 * llm)}
    new = p.history.replan("pipeline", "summarization", base, reason="test", at_unix=5.0)
    assert p.pipelines["summarization"] is new
    e = p.history.entries[-1]
    assert e["task"] == "summarization" and e["reason"] == "test" and e["at_unix"] == 5.0
    assert e["old"]["llm"] == pytest.approx(llm, rel=1e-4)
    assert e["new"]["llm"] == pytest.approx(2 * llm, rel=1e-4)
    # the retrieve step's share shrinks; a call made before keeps its deadline
    assert new.offsets["retrieve"] < old.offsets["retrieve"]
    assert call_before.deadline_s == pytest.approx(old.offsets["llm"])
    with pytest.raises(ValueError, match="nope"):
        p.history.replan("pipeline", "nope", base, reason="x", at_unix=0.0)
    with pytest.raises(ValueError, match="catalogue"):
        p.history.replan("sideways", "summarization", base, reason="x", at_unix=0.0)


def test_the_live_reprofiler_replans_a_pipeline_from_observed_calls() -> None:
    p = planner()
    coeffs = {"m": preset("a100-llama7b")}
    est = LatencyEstimator(coeffs)
    profiled = {n: model_baselines(pt.task, coeffs) for n, pt in p.pipelines.items()}
    live = LiveReprofiler(p.history, est, profiled,
                          ReprofileSettings(window=20, min_samples=10, confirm_checks=1,
                                            min_interval_s=0.0))
    call = p.make_call(p.pipelines["summarization"], "llm", arrival_s=0.0, now_s=0.0,
                       prompt_tokens=300)
    for _ in range(20):                                 # the engine became 3x slower
        est.seen(call, "e2e", 1.0, 3.0)
    assert est.correction("m", "e2e") > 1.0            # the estimator's correction too
    changes = live.check(100.0, at_unix=1.0)
    assert [c.task for c in changes] == ["summarization"]
    e = p.history.entries[-1]
    assert e["new"]["llm"] == pytest.approx(3 * e["old"]["llm"], rel=1e-3)
    assert live.check(110.0, at_unix=2.0) == []          # the new plan is the reference now


def test_a_live_gateway_replans_when_its_engine_is_slower_than_its_profile(
        tmp_path: Path) -> None:
    """``reprofile.enabled``: a real gateway whose engine runs 3x slower than the latency model
    it was given (no profiling at start-up) replans the task after a few calls, and
    ``/admin/profile`` logs it with the re-estimated baseline."""
    engines = start_engines(1, tmp_path, time_dilation=3.0)
    config = {
        "models": [{"name": "m", "coefficients": "a100-llama7b",
                    "replicas": [{"url": e.url} for e in engines]}],
        "profile_at_startup": False, "code_index_root": SMALL_INDEX_ROOT,
        "sla_scale": 4.0,
        "reprofile": {"enabled": True, "interval_s": 0.2, "window": 8, "min_samples": 4,
                      "confirm_checks": 1, "min_interval_s": 0.0},
    }
    gw = launch_gateway(tmp_path, config, engines)
    try:
        with httpx.Client(base_url=gw.url, timeout=60.0) as c:
            for _ in range(8):
                r = c.post("/v1/completions", json={"model": "summarization", "max_tokens": 16,
                                                    "prompt": "def f(x):\n    return x\n" * 20})
                assert r.status_code == 200, r.text
            deadline = time.monotonic() + 10.0
            while True:
                hist = c.get("/admin/profile").json()["history"]
                replans = [e for e in hist[1:] if e.get("task") == "summarization"]
                if replans or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert replans, hist
        e = replans[-1]
        assert e["new"]["llm"] > 2.0 * e["old"]["llm"], e      # ~3x: the engine's dilation
    finally:
        gw.close()


def test_reprofile_settings_are_checked_with_field_named_errors() -> None:
    base = {"models": [{"name": "m", "replicas": [{"url": "http://127.0.0.1:9"}]}]}
    with pytest.raises(ConfigError, match="reprofile.threshold"):
        parse_config({**base, "reprofile": {"threshold": 0}})
    with pytest.raises(ConfigError, match="min_samples"):
        parse_config({**base, "reprofile": {"window": 4, "min_samples": 8}})
    assert parse_config(base).reprofile.enabled is False
