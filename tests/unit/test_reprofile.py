"""Re-profiling under drift (core/reprofile.py), by hand: the online re-estimator converges to a
changed baseline and ignores queueing, the replan rule has a threshold, persistence, a minimum
interval and hysteresis (no flapping under noise), plans stay proportional when slowed baselines
no longer fit the SLA, and calls already made keep their deadlines."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from builders import make_call, make_dispatcher
from cato.core.lifecycle import PlannedTask, node_call
from cato.core.reprofile import (
    BaselineTracker, ReplanRule, ReprofileSettings, Reprofiler, drift, plan_for, plan_keys,
)
from cato.core.slack import NodeBaseline, plan_task
from cato.core.task import CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType

PROFILED = {"a": NodeBaseline(0.1, 1.0), "b": NodeBaseline(0.1, 3.0)}


def chain(sla_s: float = 8.0) -> TaskType:
    ln = LengthDist(100, 0.0, 1, 1000)
    return TaskType("t", (Node("a", NodeKind.LLM, model="m", input_tokens=ln, output_tokens=ln),
                          Node("b", NodeKind.LLM, deps=("a",), model="m", input_tokens=ln,
                               output_tokens=ln)), SlaKind.E2E, sla_s).validate()


def feed(tr: BaselineTracker, node: str, ratio: float, n: int, *, pred: float = 1.0,
         rng: np.random.Generator | None = None, sigma: float = 0.0) -> None:
    for _ in range(n):
        noise = float(np.exp(sigma * rng.standard_normal() - sigma ** 2 / 2)) if rng else 1.0
        tr.observe("t", node, "e2e", pred, pred * ratio * noise)


def test_the_estimate_converges_to_a_changed_baseline() -> None:
    tr = BaselineTracker({"t": PROFILED}, window=50, min_samples=10)
    feed(tr, "a", 1.0, 50)
    assert tr.estimate("t")["a"].e2e_s == pytest.approx(1.0)
    feed(tr, "a", 2.0, 25)                                  # half the window after the step
    assert 1.2 < tr.estimate("t")["a"].e2e_s < 1.8
    feed(tr, "a", 2.0, 25)                                  # a whole window: all the way
    assert tr.estimate("t")["a"].e2e_s == pytest.approx(2.0)
    assert tr.estimate("t")["b"].e2e_s == 3.0               # unobserved node: as profiled


def test_queueing_that_the_prediction_accounts_for_does_not_move_the_baseline() -> None:
    tr = BaselineTracker({"t": PROFILED}, window=50, min_samples=10)
    # calls behind a long engine queue: observed 5-20x the isolated latency, and so predicted
    for k in range(50):
        wait = 4.0 + (k % 16)
        tr.observe("t", "a", "e2e", 1.0 + wait, 1.0 + wait)
    assert tr.estimate("t")["a"].e2e_s == pytest.approx(1.0)


def test_through_the_dispatcher_gateway_queue_wait_is_not_observed() -> None:
    """Calls that wait in the gateway's queue behind a full replica are observed from their
    release: the re-profiler sees the engine's latency, not the wait."""
    d = make_dispatcher("least_outstanding", replicas=1, concurrency=1, learn=True)
    seen: list[tuple[str, float, float]] = []
    d.estimator.on_seen = lambda call, kind, pred, obs: seen.append((kind, pred, obs))
    calls = [make_call(n_out=20) for _ in range(3)]
    for c in calls:
        d.submit(c, 0.0)
    t = 0.0
    for c in calls:               # each runs 0.5 s once released; the last waited 1 s first
        d.on_first_token(c.call_id, t + 0.05)
        d.on_finish(c.call_id, t + 0.5)
        t += 0.5
    e2e = [obs for kind, _, obs in seen if kind == "e2e"]
    assert e2e == pytest.approx([0.5, 0.5, 0.5])


def test_too_few_samples_keep_the_profile() -> None:
    tr = BaselineTracker({"t": PROFILED}, window=50, min_samples=10)
    feed(tr, "a", 3.0, 9)
    assert tr.ratio("t", "a", "e2e") is None and tr.estimate("t")["a"].e2e_s == 1.0
    tr.observe("t", "nope", "e2e", 1.0, 2.0)                # unknown node: ignored
    assert tr.samples("t", "nope", "e2e") == 0


def test_one_stalled_call_is_clipped() -> None:
    tr = BaselineTracker({"t": PROFILED}, window=20, min_samples=10)
    feed(tr, "a", 1.0, 19)
    tr.observe("t", "a", "e2e", 1.0, 1000.0)                # counted as 8x at most
    assert tr.ratio("t", "a", "e2e") == pytest.approx((19 + 8) / 20)


def test_replan_needs_threshold_persistence_and_interval() -> None:
    rule = ReplanRule(ReprofileSettings(threshold=0.2, confirm_checks=2, min_interval_s=30.0))
    slow = {"a": NodeBaseline(0.1, 1.3), "b": PROFILED["b"]}
    small = {"a": NodeBaseline(0.1, 1.15), "b": PROFILED["b"]}
    assert rule.decide("t", PROFILED, small, PROFILED, 10.0) is None    # 15 % < threshold
    assert rule.decide("t", PROFILED, slow, PROFILED, 20.0) is None     # first check beyond
    assert rule.decide("t", PROFILED, slow, PROFILED, 30.0) == slow     # confirmed: replan
    slower = {"a": NodeBaseline(0.1, 2.0), "b": PROFILED["b"]}
    assert rule.decide("t", slow, slower, PROFILED, 40.0) is None
    assert rule.decide("t", slow, slower, PROFILED, 50.0) is None       # 20 s < min interval
    assert rule.decide("t", slow, slower, PROFILED, 60.0) == slower     # 30 s after the last


def test_a_drift_that_goes_away_snaps_back_to_the_profile() -> None:
    rule = ReplanRule(ReprofileSettings(threshold=0.2, confirm_checks=1, min_interval_s=0.0,
                                        snap=0.1))
    slow = {"a": NodeBaseline(0.1, 2.0), "b": PROFILED["b"]}
    back = {"a": NodeBaseline(0.1, 1.05), "b": PROFILED["b"]}
    assert rule.decide("t", slow, back, PROFILED, 1.0) == PROFILED


def test_noise_does_not_flap_the_plan() -> None:
    """Noisy observations of an unchanged engine (log-normal, sigma 0.5), checked every 10
    calls for 3,000 calls: no replan at all with the default knobs."""
    rng = np.random.default_rng(7)
    task = chain()
    rp = Reprofiler({"t": task}, {"t": PROFILED})
    call = make_call(task="t")
    changes = []
    for k in range(300):
        for node in ("a", "b"):
            for _ in range(10):
                pred = float(rng.uniform(0.5, 3.0))
                obs = pred * float(np.exp(0.5 * rng.standard_normal() - 0.125))
                rp.observe(replace(call, node=node), "e2e", pred, obs)
        changes += rp.check(10.0 * k)
    assert changes == []


def test_a_step_change_replans_once_with_reason_and_old_and_new_baselines() -> None:
    task = chain()
    rp = Reprofiler({"t": task}, {"t": PROFILED},
                    ReprofileSettings(window=40, min_samples=20, confirm_checks=2,
                                      min_interval_s=20.0))
    for k in range(30):
        for _ in range(10):
            rp.tracker.observe("t", "a", "e2e", 1.0, 2.0 if k >= 10 else 1.0)
            rp.tracker.observe("t", "b", "e2e", 1.0, 1.0)
        rp.check(10.0 * k)
    assert len(rp.history) == 1
    ch = rp.history[0]
    a = ch.new["a"].e2e_s      # replanned as soon as confirmed, part way into the window
    assert ch.task == "t" and f"+{a - 1.0:.0%}" in ch.reason
    assert ch.old["a"].e2e_s == 1.0 and 1.25 < a <= 2.0 and ch.new["b"].e2e_s == 3.0
    # the plan gives the slowed node its share of the SLA: a / (a + 3)
    assert ch.plan.deadline_offsets()["a"] == pytest.approx(8.0 * a / (a + 3.0))
    # the rest of the step (to 2.0) is within the threshold of the new plan: no second replan
    assert ch.as_dict()["deadline_offsets_s"] == ch.plan.deadline_offsets()


def test_only_the_baselines_the_plan_reads_count_as_drift() -> None:
    task = chain()
    assert plan_keys(task) == {("a", "e2e"), ("b", "e2e")}
    ttft_only = {"a": NodeBaseline(0.5, 1.0), "b": PROFILED["b"]}     # TTFT 5x, E2E unchanged
    assert drift(PROFILED, ttft_only) == pytest.approx(math.log(5.0))
    assert drift(PROFILED, ttft_only, plan_keys(task)) == 0.0


def test_infeasible_after_drift_keeps_the_proportions() -> None:
    task = chain(sla_s=5.0)
    slowed = {"a": NodeBaseline(0.2, 4.0), "b": NodeBaseline(0.2, 6.0)}   # L = 10 > S = 5
    plan, k = plan_for(task, slowed)
    assert k < 0.5
    assert plan.deadline_offsets()["a"] == pytest.approx(5.0 * 4.0 / 10.0)
    assert plan.deadline_offsets()["b"] == pytest.approx(5.0)
    ok, k1 = plan_for(task, PROFILED)
    assert k1 == 1.0 and ok == plan_task(task, PROFILED)


def test_calls_already_made_keep_their_deadlines() -> None:
    task = chain()
    old = PlannedTask.of(task, plan_task(task, PROFILED))
    call = node_call(old, "a", call_id=1, task_id=1, arrival_s=100.0, now_s=100.0,
                     prompt_tokens=100)
    new = PlannedTask.of(task, plan_task(task, {**PROFILED, "a": NodeBaseline(0.1, 3.0)}))
    later = node_call(new, "a", call_id=2, task_id=2, arrival_s=100.0, now_s=100.0,
                      prompt_tokens=100)
    assert call.deadline_s == pytest.approx(100.0 + 8.0 * 1.0 / 4.0)   # frozen: unchanged
    assert later.deadline_s == pytest.approx(100.0 + 8.0 * 3.0 / 6.0)


@pytest.mark.parametrize("bad", [dict(window=0), dict(min_samples=0), dict(threshold=0.0),
                                 dict(confirm_checks=0), dict(min_interval_s=-1.0),
                                 dict(snap=0.3)])
def test_bad_settings_name_the_field(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ReprofileSettings(**bad)  # type: ignore[arg-type]


def test_a_slower_non_llm_step_replans_from_its_whole_duration() -> None:
    """A retrieval step whose service got 3x slower: its durations (no queue to tell apart)
    against its profiled baseline move its baseline, and the plan gives it a larger share."""
    ln = LengthDist(100, 0.0, 1, 1000)
    task = TaskType("t", (Node("r", NodeKind.RETRIEVE, cost=CostModel(0.5, 0.0)),
                          Node("a", NodeKind.LLM, deps=("r",), model="m", input_tokens=ln,
                               output_tokens=ln)), SlaKind.E2E, 8.0).validate()
    profiled = {"r": NodeBaseline(0.5, 0.5), "a": NodeBaseline(0.1, 1.0)}
    rp = Reprofiler({"t": task}, {"t": profiled},
                    ReprofileSettings(window=20, min_samples=10, confirm_checks=1,
                                      min_interval_s=0.0))
    for _ in range(9):
        rp.observe_step("t", "r", 1.5)
    rp.observe_step("t", "nope", 9.0)           # unknown nodes and tasks are ignored
    rp.observe_step("other", "r", 9.0)
    assert rp.check(1.0) == []                    # below min_samples: the profile holds
    rp.observe_step("t", "r", 1.5)
    [ch] = rp.check(2.0)
    assert ch.new["r"].e2e_s == pytest.approx(1.5) and ch.new["a"].e2e_s == 1.0
    assert ch.plan.deadline_offsets()["r"] == pytest.approx(8.0 * 1.5 / 2.5)
