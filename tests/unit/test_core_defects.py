"""Regression tests for the core defects of the independent review (issue "Measure CATO against
the strongest baselines", item 5). Each test failed before its fix."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from builders import make_call, make_dispatcher
from cato.core.coefficients import A100_LLAMA7B, isolated_ttft_ms
from cato.core.estimator import LatencyEstimator
from cato.core.replica import QueueEntry
from cato.core.routing.base import count_ahead
from cato.core.scaling import ScalingContext, ScalingDecision, apply_bounds, make_scaling_policy
from cato.core.slack import NodeBaseline, plan_task
from cato.core.task import CostModel, LengthDist, Node, NodeKind, SlaKind, TaskType


# ---- 5.1 the shortest-wait search ranks by predicted latency, not by the slot wait -------------
def _prefill_heavy_r0() -> object:
    """r0 runs an 8000-token prompt still in prefill (~0.5 s before its first token); r1 runs a
    short call already decoding. Both have free slots (zero slot wait) and one outstanding call;
    r0 is visited first."""
    d = make_dispatcher("cato", replicas=2, concurrency=4)
    big = make_call(n_in=8000, n_out=20, deadline=100.0)
    small = make_call(n_in=200, n_out=20, deadline=100.0)
    assert d.submit(big, 0.0).dispatches[0].replica_id == "r0"
    assert d.submit(small, 0.0).dispatches[0].replica_id == "r1"
    d.on_first_token(small.call_id, 0.0)
    return d


@pytest.mark.parametrize("deadline,priority", [(-1.0, 0), (0.010, 1)])
def test_shortest_wait_counts_the_prefill_running_on_a_replica(deadline: float,
                                                               priority: int) -> None:
    d = _prefill_heavy_r0()
    probe = make_call(n_in=200, n_out=20, deadline=deadline, ttft_critical=True)
    r0, r1 = d.pool.get("r0"), d.pool.get("r1")
    e0 = d.estimator.estimate(probe, r0, 0.0)
    e1 = d.estimator.estimate(probe, r1, 0.0)
    assert e0.wait_s == e1.wait_s == 0.0 and e0.ttft_s > e1.ttft_s + 0.3
    dec = d.policy.route(probe, d.pool, 0.0)
    assert (dec.replica_id, dec.priority) == ("r1", priority)


# ---- 5.2 the learned correction applies to estimates under load, not to isolated() -------------
def test_learned_correction_does_not_scale_isolated_service() -> None:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=1.0)
    est.observe("m", "ttft", 0.1, 0.2)    # under load the model predicted half the truth
    est.observe("m", "e2e", 0.1, 0.3)
    assert est.correction("m", "ttft") == pytest.approx(2.0)
    c = make_call(n_in=768, n_out=12)
    iso = est.isolated(c)
    assert iso.ttft_s == pytest.approx(isolated_ttft_ms(A100_LLAMA7B, 768) / 1000.0)
    assert iso.completion_s == pytest.approx(0.170, rel=0.01)
    # ... while an estimate on a replica (under load, where it was fitted) keeps it
    d = make_dispatcher("cato", replicas=1)
    on_r = est.estimate(c, d.pool.get("r0"), 0.0)
    plain = d.estimator.estimate(c, d.pool.get("r0"), 0.0)
    assert on_r.ttft_s == pytest.approx(2.0 * plain.ttft_s)
    assert on_r.completion_s == pytest.approx(3.0 * plain.completion_s)


def test_cato_plus_hopeless_test_uses_the_uncorrected_isolated_service() -> None:
    import numpy as np
    from cato.core.dispatcher import Dispatcher
    from cato.core.routing import make_routing_policy
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=1.0)
    est.observe("m", "ttft", 0.1, 0.2)            # fitted under load: a correction of 2
    d = Dispatcher(make_routing_policy("cato-plus", est, np.random.default_rng(0)), est,
                   default_concurrency=4, learn=False)
    d.add_replica("r0", "m", 0.0)
    iso = isolated_ttft_ms(A100_LLAMA7B, 768) / 1000.0
    call = make_call(n_in=768, n_out=12, ttft_critical=True, deadline=1.5 * iso)
    dec = d.policy.route(call, d.pool, 0.0)
    # an idle replica can serve it in time by the profile: at risk (1), not hopeless (3)
    assert dec.priority == 1
    assert d.policy.demote(call, 1, 0.0) is None


# ---- 5.3 count_ahead is a rank query on a sorted queue, not a scan -----------------------------
keys = st.tuples(st.integers(0, 3).map(float), st.floats(-10, 10, allow_nan=False),
                 st.integers(0, 10**6).map(float))
ops = st.lists(st.one_of(st.tuples(st.just("push"), keys, st.integers(1, 4000)),
                         st.tuples(st.just("pop"), st.none(), st.none()),
                         st.tuples(st.just("ask"), keys, st.none())), max_size=120)


@settings(max_examples=150, deadline=None)
@given(ops=ops)
def test_queue_rank_equals_the_brute_force_scan(ops: list) -> None:
    from cato.core.replica import GatewayQueue
    q = GatewayQueue()
    model: list[QueueEntry] = []
    for kind, key, tokens in ops:
        if kind == "push":
            if any(e.key == key for e in model):
                continue                      # keys are unique (they end with the call's seq)
            e = QueueEntry(key, make_call(n_in=tokens), 2, False)
            q.push(e)
            model.append(e)
        elif kind == "pop" and model:
            got = q.pop()
            want = min(model, key=lambda e: e.key)
            assert got is want
            model.remove(want)
        elif kind == "ask":
            ahead = [e for e in model if e.key < key]
            assert q.rank(key) == (len(ahead), sum(e.call.num_prompt_tokens for e in ahead))
        assert len(q) == len(model) and q.tokens == sum(e.call.num_prompt_tokens for e in model)
        assert [e.key for e in q] == sorted(e.key for e in model)


class _Key(tuple):  # type: ignore[type-arg]
    """A queue key that counts its comparisons."""

    count = 0

    def __lt__(self, other: object) -> bool:
        _Key.count += 1
        return tuple.__lt__(self, other)  # type: ignore[operator]


def test_count_ahead_is_logarithmic_in_the_queue_length() -> None:
    d = make_dispatcher("cato", replicas=1, concurrency=1)
    r = d.pool.get("r0")
    n = 512
    for i in range(n):
        r.push(QueueEntry(_Key((2.0, float(i % 97), float(i))), make_call(n_in=10 + i), 2, False))
    _Key.count = 0
    probe = _Key((2.0, 50.5, 1e9))
    ahead, tokens = count_ahead(r, probe)
    brute = [e for e in r.queue if e.key < probe]
    assert (ahead, tokens) == (len(brute), sum(e.call.num_prompt_tokens for e in brute))
    _Key.count = 0
    count_ahead(r, probe)
    assert _Key.count <= math.ceil(math.log2(n)) + 1     # the old scan compared all 512


# ---- 5.4 a first token releases what the prefill budget now allows ------------------------------
def test_first_token_releases_calls_held_by_the_prefill_budget() -> None:
    d = make_dispatcher("cato-plus", replicas=1, concurrency=8)
    budget = d.pool.get("r0").prefill_budget_tokens
    assert budget == 2 * A100_LLAMA7B.max_num_batched_tokens == 4096
    a, b, c = (make_call(n_in=2048, n_out=20, deadline=100.0, ttft_critical=True)
               for _ in range(3))
    assert len(d.submit(a, 0.0).dispatches) == 1
    assert len(d.submit(b, 0.0).dispatches) == 1        # 2048 pending < 4096
    assert d.submit(c, 0.0).dispatches == []            # 4096 pending: held in the gateway
    out = d.on_first_token(a.call_id, 0.1)               # 2048 pending again
    assert [x.call.call_id for x in out] == [c.call_id]
    assert d.on_first_token(b.call_id, 0.2) == []        # nothing left to release


# ---- 5.5 idle scale-down never drains the last ready replica for a starting one ----------------
def _ctx(*, ready: int, starting: int, idle: tuple[tuple[str, float], ...], lo: int,
         by_load: tuple[str, ...] = ()) -> ScalingContext:
    return ScalingContext("m", 100.0, ready, starting, 0, idle, 100, 0, 0, lo, 10,
                          ready_by_load=by_load)


def test_idle_scale_down_keeps_min_replicas_ready_not_starting() -> None:
    p = make_scaling_policy("cato", idle_timeout_s=60.0, max_exceeded_times=5)
    c = _ctx(ready=1, starting=1, idle=(("r0", 0.0),), lo=1)
    assert p.decide(c).remove == ()
    c2 = _ctx(ready=3, starting=2, idle=(("a", 0.0), ("b", 10.0), ("c", 20.0)), lo=2)
    assert p.decide(c2).remove == ("a",)               # 3 ready - 2 kept
    assert apply_bounds(c, ScalingDecision(remove=("r0",))).remove == ()
    # the CATO+ probe-down obeys the same bound
    q = make_scaling_policy("cato", quiet_windows_to_shrink=1, shrink_fraction=0.5)
    c3 = _ctx(ready=2, starting=1, idle=(), lo=2, by_load=("r0", "r1"))
    assert q.decide(c3).is_noop


# ---- 5.6 nodes off the critical path get latest-finish deadlines --------------------------------
def _llm(name: str, *deps: str) -> Node:
    L = LengthDist.fixed(10)
    return Node(name, NodeKind.LLM, deps=deps, model="m", input_tokens=L, output_tokens=L)


def test_off_critical_path_nodes_get_their_latest_finish() -> None:
    # r -> x -> z and y -> z; baselines 1, 4, 2, 5; SLA 20 s over L = 10 s: scale 2
    task = TaskType("t", (Node("r", NodeKind.RETRIEVE, cost=CostModel(0.01)), _llm("x", "r"),
                          _llm("y"), _llm("z", "x", "y")), SlaKind.E2E, 20.0).validate()
    base = {"r": NodeBaseline(1, 1), "x": NodeBaseline(1, 4), "y": NodeBaseline(1, 2),
            "z": NodeBaseline(1, 5)}
    off = plan_task(task, base).deadline_offsets()
    # y may finish as late as z's latest start (10 - 5 = 5 baseline seconds), not at EF = 2
    assert off["y"] == pytest.approx(10.0)
    assert off == pytest.approx({"r": 2.0, "x": 10.0, "y": 10.0, "z": 20.0})
