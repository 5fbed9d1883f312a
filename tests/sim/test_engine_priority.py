"""ReplicaEngine ``scheduling_policy="priority"`` (vLLM V1's ``--scheduling-policy priority``):
the waiting queue in (priority, arrival) order, preemption of the largest (priority, arrival)
running request, preempted requests re-queued at their own place, no preemption on behalf of a
waiting request; FCFS unchanged and blind to priorities; the simulator passes each dispatch's
``engine_priority`` through."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cato.core.coefficients import A100_LLAMA7B, H100_LLAMA7B, ReplicaCoefficients
from cato.replica_model import ReplicaEngine, StepRecord
from engine_driver import Op, Trace, engine_scenarios, check_lifecycle as lifecycle, drive
from cato.sim.scenarios import build_config, build_stream_for, scenario
from cato.sim.simulator import Simulator

# the driver (tests/engine_driver.py) with priorities: the simulator's protocol


def run(c: ReplicaCoefficients, ops: list[Op], policy: str, *, ff: bool = True) -> Trace:
    return drive(ReplicaEngine(c, scheduling_policy=policy, fast_forward=ff), ops)


def finish_order(tr: Trace) -> list[int]:
    return [e.call_id for e in tr.events if e.kind == "finished"]


def first_token_at(tr: Trace) -> dict[int, float]:
    return {e.call_id: e.at_s for e in tr.events if e.kind == "first_token"}


def poisson(seed: int, n: int, rate: float, p_med: float, o_med: float, *, p_max: int = 1200,
            o_max: int = 300, prios: tuple[int, ...] = (0,)) -> list[Op]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    p = np.clip(np.round(rng.lognormal(math.log(p_med), 0.5, n)), 1, p_max).astype(int)
    o = np.clip(np.round(rng.lognormal(math.log(o_med), 0.6, n)), 1, o_max).astype(int)
    pr = rng.choice(np.array(prios), n)
    return [Op(float(t[i]), "submit", i, int(p[i]), int(o[i]), int(pr[i])) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# configuration errors


def test_unknown_policy_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'lifo'"):
        ReplicaEngine(A100_LLAMA7B, scheduling_policy="lifo")
    with pytest.raises(ValueError, match="'Priority'"):
        ReplicaEngine(A100_LLAMA7B, scheduling_policy="Priority")
    assert ReplicaEngine(A100_LLAMA7B).scheduling_policy == "fcfs"
    assert ReplicaEngine(A100_LLAMA7B, scheduling_policy="priority").scheduling_policy == "priority"
    sc = scenario("paper")
    cfg = replace(build_config(sc, sc.policies["cato"]), engine_scheduling="sjf")
    with pytest.raises(ValueError, match="'sjf'"):
        Simulator(cfg, [], seed=0)


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_non_integer_priority_is_rejected(policy: str) -> None:
    eng = ReplicaEngine(A100_LLAMA7B, scheduling_policy=policy)
    with pytest.raises(ValueError, match="priority"):
        eng.submit(1, 10, 10, 0.0, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        eng.submit(1, 10, 10, 0.0, "3")  # type: ignore[arg-type]
    assert eng.is_idle  # nothing was taken
    eng.submit(1, 10, 10, 0.0, np.int64(-4))  # type: ignore[arg-type]  # any integer type
    assert eng.num_waiting == 1


# ---------------------------------------------------------------------------------------------
# waiting-queue order


@pytest.mark.parametrize("ff", [True, False])
def test_later_urgent_request_overtakes_a_queued_one(ff: bool) -> None:
    """One batch slot, busy: a long low-priority prompt (B) and then a short urgent one (C)
    queue behind A. FCFS serves B first; priority serves C first."""
    c = A100_LLAMA7B.with_overrides(max_num_seqs=1)
    ops = [Op(0.0, "submit", 0, 100, 60, prio=0),
           Op(0.05, "submit", 1, 1500, 10, prio=5),
           Op(0.10, "submit", 2, 20, 5, prio=0)]
    fcfs = first_token_at(run(c, ops, "fcfs", ff=ff))
    prio = first_token_at(run(c, ops, "priority", ff=ff))
    assert fcfs[1] < fcfs[2]
    assert prio[2] < prio[1]
    # the busy request is never displaced: same first token either way
    assert fcfs[0] == prio[0]


@pytest.mark.parametrize("ff", [True, False])
def test_priority_lifts_head_of_line_blocking_on_kv(ff: bool) -> None:
    """A holds most of the KV; B (1000-token prompt) cannot fit and blocks the FCFS queue, so
    the 20-token C, which would fit, waits for A to finish. With C more urgent than B, C is
    the head of the priority queue and starts at once."""
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=2048)
    ops = [Op(0.0, "submit", 0, 1500, 60, prio=0),
           Op(0.05, "submit", 1, 1000, 5, prio=2),
           Op(0.06, "submit", 2, 20, 5, prio=1)]
    fcfs = lifecycle(run(c, ops, "fcfs", ff=ff).events)
    prio = lifecycle(run(c, ops, "priority", ff=ff).events)
    a_done = fcfs[0][1]
    assert fcfs[2][0] >= fcfs[1][0] > a_done  # C behind B, B behind A
    assert prio[2][0] < a_done < prio[1][0]  # C runs beside A; B still waits for A's blocks
    assert prio[2][0] < 0.2


@pytest.mark.parametrize("ff", [True, False])
def test_waiting_urgent_request_never_preempts_a_running_one(ff: bool) -> None:
    """vLLM V1 preempts only on a running request's KV shortage: a full batch makes an urgent
    request wait, it does not evict the low-priority request in the batch."""
    c = A100_LLAMA7B.with_overrides(max_num_seqs=1)
    ops = [Op(0.0, "submit", 0, 100, 80, prio=100), Op(0.05, "submit", 1, 10, 3, prio=-100)]
    tr = run(c, ops, "priority", ff=ff)
    spans = lifecycle(tr.events)
    assert spans[1][0] > spans[0][1]
    assert tr.preemptions == 0


def test_ties_in_priority_keep_arrival_order() -> None:
    c = A100_LLAMA7B.with_overrides(max_num_seqs=1)
    ops = [Op(0.0, "submit", 0, 50, 40, prio=0)]
    ops += [Op(0.01 * k, "submit", k, 50, 3, prio=k % 2) for k in range(1, 9)]
    order = [cid for cid in finish_order(run(c, ops, "priority")) if cid]
    assert order == [2, 4, 6, 8, 1, 3, 5, 7]
    assert [cid for cid in finish_order(run(c, ops, "fcfs")) if cid] == list(range(1, 9))


# ---------------------------------------------------------------------------------------------
# preemption under KV pressure: 6 blocks of 16 tokens; three requests of prompt 16 and 33
# output tokens (3 blocks at their peak, 9 in all), admitted one step apart (so the admission
# order is 1, 2, 3 whatever their priorities), need their third blocks in consecutive steps:
# one of them must go, once (the other two then fit exactly)

KV6 = A100_LLAMA7B.with_overrides(kv_capacity_tokens=96)


def _three(prios: tuple[int, int, int]) -> list[Op]:
    return [Op(t, "submit", cid, 16, 33, prio=p) for cid, p, t in zip((1, 2, 3), prios, (0.0, 0.005, 0.015))]


@pytest.mark.parametrize("ff", [True, False])
@pytest.mark.parametrize(("policy", "prios", "victim"), [
    ("fcfs", (0, 9, 3), 3),        # FCFS: the newest admitted, whatever the priorities
    ("priority", (0, 9, 3), 2),    # the largest priority value
    ("priority", (9, 0, 0), 1),    # ... even the oldest, most advanced request
    ("priority", (4, 4, 4), 3),    # ties: the latest arrival
    ("priority", (-1, 7, 7), 3),
])
def test_preemption_victim(policy: str, prios: tuple[int, int, int], victim: int, ff: bool) -> None:
    eng = ReplicaEngine(KV6, scheduling_policy=policy, fast_forward=ff)
    log: list[StepRecord] = []
    eng.step_hook = log.append
    tr = drive(eng, _three(prios))
    spans = lifecycle(tr.events)
    assert tr.preemptions == 1
    firsts = sorted(first_token_at(tr).items(), key=lambda kv: kv[1])
    assert [cid for cid, _ in firsts] == [1, 2, 3]  # admitted in arrival order
    assert finish_order(tr)[-1] == victim  # it re-prefills once the other two are done
    assert max(spans[c][1] for c in (1, 2, 3) if c != victim) < spans[victim][1]
    assert all(r.kv_used_tokens <= 96 for r in log)


@pytest.mark.parametrize("ff", [True, False])
def test_preempted_request_requeues_at_its_own_priority(ff: bool) -> None:
    """The victim goes back by its own (priority, arrival), not to the front: under priority
    request 4 (priority 5, waiting) is served before victim 2 (priority 9); under FCFS victim 3
    goes to the front and 4 waits for it."""
    c = KV6.with_overrides(max_num_seqs=3)
    ops = [*_three((0, 9, 3)), Op(0.05, "submit", 4, 70, 2, prio=5)]
    prio = run(c, ops, "priority", ff=ff)
    assert prio.preemptions == 1
    assert finish_order(prio) == [1, 3, 4, 2]
    fcfs = run(c, ops, "fcfs", ff=ff)
    assert fcfs.preemptions == 1
    assert finish_order(fcfs) == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# FCFS is blind to priorities; priority with equal priorities and no preemption is FCFS


@pytest.mark.parametrize("ff", [True, False])
def test_fcfs_ignores_priorities(ff: bool) -> None:
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=2500, max_num_seqs=6, max_num_batched_tokens=512)
    ops = poisson(5, 150, 25.0, 250, 60, prios=(-3, 0, 2, 7))
    flat = [replace(o, prio=0) for o in ops]
    a, b = run(c, ops, "fcfs", ff=ff), run(c, flat, "fcfs", ff=ff)
    assert a.preemptions > 0
    assert a.events == b.events and a.steps == b.steps and a.preemptions == b.preemptions


@pytest.mark.parametrize("seed", range(3))
def test_equal_priorities_without_preemption_match_fcfs(seed: int) -> None:
    c = A100_LLAMA7B.with_overrides(max_num_seqs=4)
    ops = poisson(seed, 200, 12.0, 300, 50, prios=(3,))
    a, b = run(c, ops, "fcfs"), run(c, ops, "priority")
    assert a.preemptions == b.preemptions == 0
    assert a.events == b.events and a.steps == b.steps


def test_urgent_class_gets_the_shorter_queueing_delay() -> None:
    """A loaded engine (queues, KV preemptions) with two classes: under priority the urgent
    class's TTFT collapses and the other class pays for it; under FCFS the classes are alike."""
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=5000, max_num_seqs=16)
    ops = poisson(1, 400, 18.0, 300, 60, prios=(0, 1))
    ttft: dict[str, dict[int, float]] = {}
    for policy in ("fcfs", "priority"):
        tr = run(c, ops, policy)
        spans = lifecycle(tr.events)
        assert set(spans) == {o.cid for o in ops}
        by_class: dict[int, list[float]] = defaultdict(list)
        for o in ops:
            by_class[o.prio].append(spans[o.cid][0] - o.t)
        ttft[policy] = {k: float(np.mean(v)) for k, v in by_class.items()}
        assert tr.preemptions > 0
    assert ttft["fcfs"][0] == pytest.approx(ttft["fcfs"][1], rel=0.5)
    assert ttft["priority"][0] < 0.5 * ttft["fcfs"][0]
    assert ttft["priority"][1] > ttft["priority"][0] * 3


# ---------------------------------------------------------------------------------------------
# properties under random priorities: invariants, vLLM's victim rule, queue order,
# fast-forward == exact stepping


@pytest.fixture
def victim_rule_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Checks, on every planned step of a priority engine (look-ahead copies included), that
    the victims are the running requests with the largest (priority, arrival), largest first
    (vLLM V1: ``max(running, key=(priority, arrival_time))``, repeatedly); yields a counter of
    steps with victims."""
    seen = [0]
    orig = ReplicaEngine._plan_step

    def checked(self: ReplicaEngine):  # type: ignore[no-untyped-def]
        plan = orig(self)
        if plan.victims and self.scheduling_policy == "priority":
            ranked = sorted(self._running.values(), key=lambda r: r.key, reverse=True)
            assert [v.cid for v in plan.victims] == [r.cid for r in ranked[: len(plan.victims)]]
            seen[0] += 1
        return plan

    monkeypatch.setattr(ReplicaEngine, "_plan_step", checked)
    yield seen


def _checked_run(c: ReplicaCoefficients, ops: list[Op], ff: bool) -> Trace:
    eng = ReplicaEngine(c, scheduling_policy="priority", fast_forward=ff)
    prio = {o.cid: o.prio for o in ops if o.kind == "submit"}

    def hook(rec: StepRecord) -> None:
        assert rec.num_running <= c.max_num_seqs and rec.num_seqs <= c.max_num_seqs
        assert rec.num_tokens <= c.max_num_batched_tokens
        assert rec.kv_used_tokens <= c.kv_capacity_tokens
        # the waiting queue, as the next step will see it: (priority, arrival) order
        keys = [(prio[r.cid], r.key[1]) for r in eng._waiting]
        assert keys == sorted(keys)
        assert [r.key for r in eng._waiting] == keys

    eng.step_hook = hook
    return drive(eng, ops)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(scn=engine_scenarios(priorities=True))
def test_random_priorities_keep_invariants_and_fast_forward_equals_exact(
        scn: tuple[ReplicaCoefficients, list[Op]], victim_rule_checked: list[int]) -> None:
    c, ops = scn
    a = _checked_run(c, ops, ff=True)
    b = _checked_run(c, ops, ff=False)
    assert [(e.call_id, e.kind) for e in a.events] == [(e.call_id, e.kind) for e in b.events]
    assert max((abs(x.at_s - y.at_s) for x, y in zip(a.events, b.events)), default=0.0) < 1e-9
    assert a.steps == b.steps and a.preemptions == b.preemptions
    cancelled = {o.cid for o in ops if o.kind == "cancel"}
    spans = lifecycle(a.events, cancelled)
    assert {o.cid for o in ops if o.kind == "submit"} - cancelled <= set(spans)


@pytest.mark.parametrize("seed", range(3))
def test_loaded_priority_streams_fast_forward_equals_exact(seed: int, victim_rule_checked: list[int]) -> None:
    for c in (A100_LLAMA7B.with_overrides(kv_capacity_tokens=3000),
              A100_LLAMA7B.with_overrides(max_num_seqs=4, kv_capacity_tokens=2000),
              H100_LLAMA7B.with_overrides(max_num_seqs=3, max_num_batched_tokens=300)):
        ops = poisson(seed, 120, 20.0, 300, 50, p_max=1500, prios=(0, 1, 2, 5))
        ops += [Op(float(t), "probe") for t in np.random.default_rng(seed).uniform(0, 8, 10)]
        ops += [Op(ops[k].t + 0.2, "cancel", k) for k in range(3, 120, 23)]
        a = _checked_run(c, ops, ff=True)
        b = _checked_run(c, ops, ff=False)
        assert [(e.call_id, e.kind) for e in a.events] == [(e.call_id, e.kind) for e in b.events]
        assert max(abs(x.at_s - y.at_s) for x, y in zip(a.events, b.events)) < 1e-9
    assert victim_rule_checked[0] > 0  # the rule was exercised


def test_extra_advance_calls_do_not_change_a_priority_run() -> None:
    c = A100_LLAMA7B.with_overrides(kv_capacity_tokens=2000, max_num_seqs=5)
    ops = poisson(11, 100, 15.0, 300, 60, prios=(0, 4, 9))
    ref = run(c, ops, "priority")
    probes = [Op(float(t), "probe") for t in np.random.default_rng(12).uniform(0, 10, 400)]
    assert run(c, ops + probes, "priority").events == ref.events


# ---------------------------------------------------------------------------------------------
# the simulator


def test_simulator_passes_each_dispatch_engine_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = replace(scenario("mixA-poisson"), duration_s=30.0)
    cfg = replace(build_config(sc, sc.policies["cato-plus"]), engine_scheduling="priority")
    stream = build_stream_for(sc, sc.knee_rps, 2)
    dispatched: list[tuple[int, int]] = []
    received: list[tuple[int, int]] = []
    policies: set[str] = set()
    orig_perform = Simulator._perform
    orig_submit = ReplicaEngine.submit

    def perform(self: Simulator, dispatches, now):  # type: ignore[no-untyped-def]
        dispatched.extend((d.call.call_id, d.engine_priority) for d in dispatches)
        return orig_perform(self, dispatches, now)

    def submit(self: ReplicaEngine, call_id, prompt, out, now_s, priority=0, prefix=None):  # type: ignore[no-untyped-def]
        received.append((call_id, priority))
        policies.add(self.scheduling_policy)
        return orig_submit(self, call_id, prompt, out, now_s, priority, prefix)

    monkeypatch.setattr(Simulator, "_perform", perform)
    monkeypatch.setattr(ReplicaEngine, "submit", submit)
    result = Simulator(cfg, stream, seed=2).run()
    assert len(result.records) == len(stream)
    assert all(r.status == "ok" for r in result.records)
    assert received and received == dispatched
    assert policies == {"priority"}
