"""CATO's Algorithm 2 as a Ray Serve autoscaling policy, on constructed contexts (no Ray):
windows from cumulative replica counters, the exceeding streak, idle scale-down, bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from cato.rayserve.autoscaling import (CALLS, IDLE, ONGOING, STATE_KEY, VIOLATIONS,
                                       CatoAutoscalingPolicy, CatoParams, cato_autoscaling_policy,
                                       cato_decision, latest_samples)


@dataclass(frozen=True)
class Rid:
    """Stands for Ray's ReplicaID (hashable, with ``unique_id``)."""

    unique_id: str


@dataclass(frozen=True)
class Point:
    timestamp: float
    value: float


@dataclass
class Ctx:
    """The fields of Ray's AutoscalingContext that the policy reads."""

    current_time: float
    target_num_replicas: int
    running_replicas: list[Rid]
    raw_metrics: dict[str, dict[Rid, list[Point]]]
    policy_state: dict[str, Any] = field(default_factory=dict)
    capacity_adjusted_min_replicas: int = 1
    capacity_adjusted_max_replicas: int = 10
    deployment_name: str = "CatoEngine"


class Cluster:
    """Replicas with cumulative counters, and the policy's state carried between ticks as Ray
    carries it (the returned dict is the next context's ``policy_state``)."""

    def __init__(self, n: int, params: CatoParams | None = None, *, lo: int = 1,
                 hi: int = 10) -> None:
        self.reps = [Rid(f"r{i}") for i in range(n)]
        self.counts: dict[Rid, list[float]] = {r: [0.0, 0.0] for r in self.reps}
        self.ongoing: dict[Rid, float] = {r: 0.0 for r in self.reps}
        self.idle_since: dict[Rid, float | None] = {r: 0.0 for r in self.reps}
        self.target = n
        self.state: dict[str, Any] = {}
        self.params = params or CatoParams()
        self.lo, self.hi = lo, hi

    def serve(self, r: Rid, calls: int, violations: int, *, ongoing: float = 1.0) -> None:
        self.counts[r][0] += calls
        self.counts[r][1] += violations
        self.ongoing[r] = ongoing
        self.idle_since[r] = None if ongoing else self.idle_since[r]

    def ctx(self, now: float) -> Ctx:
        raw: dict[str, dict[Rid, list[Point]]] = {CALLS: {}, VIOLATIONS: {}, ONGOING: {},
                                                  IDLE: {}}
        for r in self.reps:
            since = self.idle_since[r]
            idle = 0.0 if since is None or self.ongoing[r] else now - since
            raw[CALLS][r] = [Point(now - 1, self.counts[r][0] - 1), Point(now, self.counts[r][0])]
            raw[VIOLATIONS][r] = [Point(now, self.counts[r][1])]
            raw[ONGOING][r] = [Point(now, self.ongoing[r])]
            raw[IDLE][r] = [Point(now, idle)]
        return Ctx(now, self.target, list(self.reps), raw, dict(self.state), self.lo, self.hi)

    def tick(self, now: float) -> Any:
        n, state, decision = cato_decision(self.ctx(now), self.params)
        self.state = state
        self.target = n
        return decision


def test_first_tick_sets_the_baseline_and_between_windows_nothing_moves() -> None:
    c = Cluster(2)
    c.serve(c.reps[0], 100, 90)                      # before the policy starts: baseline
    assert c.tick(0.0) is None and c.target == 2
    assert c.state[STATE_KEY]["last"]["r0"] == [100, 90]
    c.serve(c.reps[0], 10, 10)
    assert c.tick(5.0) is None and c.target == 2      # window of 10 s not over


def test_scale_up_after_max_exceeded_times_windows_in_proportion_to_violations() -> None:
    c = Cluster(2)
    c.tick(0.0)
    for r in c.reps:
        c.serve(r, 20, 6)                             # 12/40 violated > 5 %
    d1 = c.tick(10.0)
    assert d1 is not None and d1.is_noop and c.target == 2          # streak 1 of 2
    assert c.state[STATE_KEY]["streak"] == 1
    assert c.state[STATE_KEY]["last_decision"]["violations"] == 12
    for r in c.reps:
        c.serve(r, 20, 6)
    d2 = c.tick(20.0)
    assert d2 is not None and d2.add == math.ceil(0.25 * 12) and c.target == 5
    assert c.state[STATE_KEY]["streak"] == 0


def test_a_quiet_window_resets_the_streak() -> None:
    c = Cluster(1)
    c.tick(0.0)
    c.serve(c.reps[0], 20, 10)
    c.tick(10.0)
    c.serve(c.reps[0], 20, 0)                         # below the threshold
    c.tick(20.0)
    c.serve(c.reps[0], 20, 10)
    d = c.tick(30.0)
    assert d is not None and d.is_noop and c.target == 1


def test_starting_replicas_count_as_capacity() -> None:
    """Replicas asked for but not running yet (target > running) damp the next scale-up."""
    c = Cluster(1, CatoParams(max_exceeded_times=1))
    c.tick(0.0)
    c.serve(c.reps[0], 40, 12)
    assert c.tick(10.0).add == 3 and c.target == 4      # ceil(0.25 * 12)
    c.serve(c.reps[0], 40, 12)
    d = c.tick(20.0)                                    # 3 still starting: 12 - 3 -> +3
    assert d.add == math.ceil(0.25 * (12 - 3)) and c.target == 7


def test_scale_up_is_bounded_by_max_replicas() -> None:
    c = Cluster(2, CatoParams(max_exceeded_times=1), hi=3)
    c.tick(0.0)
    c.serve(c.reps[0], 100, 100)
    d = c.tick(10.0)
    assert d is not None and d.add == 1 and c.target == 3


def test_idle_replicas_are_removed_after_the_idle_timeout_never_below_min() -> None:
    c = Cluster(3, CatoParams(idle_timeout_s=60.0), lo=1)
    c.tick(0.0)
    c.serve(c.reps[0], 5, 0, ongoing=2)               # r0 busy; r1, r2 idle since t=0
    assert c.tick(10.0).is_noop and c.target == 3       # idle for only 10 s
    for t in (20.0, 30.0, 40.0, 50.0):
        c.serve(c.reps[0], 5, 0, ongoing=2)
        c.tick(t)
    c.serve(c.reps[0], 5, 0, ongoing=2)
    d = c.tick(60.0)
    assert set(d.remove) == {"r1", "r2"} and c.target == 1
    # at min replicas nothing more goes
    c.reps = c.reps[:1]
    c.serve(c.reps[0], 0, 0, ongoing=0)
    c.idle_since[c.reps[0]] = 0.0
    assert c.tick(200.0).is_noop and c.target == 1


def test_no_scale_down_while_violating() -> None:
    c = Cluster(2, CatoParams(idle_timeout_s=5.0, max_exceeded_times=3))
    c.tick(0.0)
    c.serve(c.reps[0], 10, 5)                         # exceeding, r1 idle for 10 s
    d = c.tick(10.0)
    assert d is not None and d.is_noop and c.target == 2


def test_new_and_vanished_replicas() -> None:
    c = Cluster(1, CatoParams(max_exceeded_times=1))
    c.tick(0.0)
    c.serve(c.reps[0], 10, 0)
    c.tick(10.0)
    # r0 went away, r9 arrived with counters since its own start
    c.reps = [Rid("r9")]
    c.counts[c.reps[0]] = [0.0, 0.0]
    c.ongoing[c.reps[0]] = 1.0
    c.idle_since[c.reps[0]] = None
    c.serve(c.reps[0], 8, 8)
    d = c.tick(20.0)
    assert c.state[STATE_KEY]["last_decision"]["calls"] == 8
    assert d.add == 2 and set(c.state[STATE_KEY]["last"]) == {"r9"}


def test_latest_samples_reads_the_last_points() -> None:
    r = Rid("a")
    raw = {CALLS: {r: [Point(1, 3), Point(2, 7)]}, VIOLATIONS: {r: [Point(2, 1)]},
           ONGOING: {r: [Point(2, 2)]}, IDLE: {r: [Point(2, 0)]}}
    s = latest_samples(raw, [r, Rid("no-metrics")])
    assert list(s) == ["a"] and (s["a"].calls, s["a"].violations, s["a"].ongoing) == (7, 1, 2)
    assert latest_samples(None, [r]) == {}


def test_policy_entry_points() -> None:
    c = Cluster(2)
    ctx = c.ctx(0.0)
    n, state = cato_autoscaling_policy(ctx)
    assert n == 2 and STATE_KEY in state
    p = CatoAutoscalingPolicy(interval_s=2.0, max_exceeded_times=1)
    n2, state2 = p(c.ctx(0.0))
    assert n2 == 2 and p.params.interval_s == 2.0
    with pytest.raises(ValueError):
        CatoAutoscalingPolicy(interval_s=0)
    with pytest.raises(ValueError):
        CatoAutoscalingPolicy(max_exceeded_proportion=2.0)
    with pytest.raises(TypeError):
        CatoAutoscalingPolicy(no_such_param=1)
