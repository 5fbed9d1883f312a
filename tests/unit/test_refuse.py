"""Early rejection (issue 14, lever 3): the routing policy's ``refuse`` hook as the dispatcher
applies it, CATO+'s ``refuse`` modes, and the two report figures it adds (``refused_share``,
``attainment_accepted``). Each test fails when its rule is changed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from builders import make_call, make_dispatcher
from cato.core.calls import LlmCall
from cato.core.coefficients import A100_LLAMA7B
from cato.core.dispatcher import Dispatcher
from cato.core.estimator import LatencyEstimator
from cato.core.metrics import summarize, summary_row
from cato.core.records import RequestRecord
from cato.core.routing import make_routing_policy
from cato.core.routing.base import RoutingDecision
from cato.core.routing.cato import CatoPolicy


class _RefuseAll(CatoPolicy):
    """CATO routing that refuses every call offered to ``refuse`` and remembers which."""

    def __init__(self, estimator: LatencyEstimator) -> None:
        super().__init__(estimator, np.random.default_rng(0))
        self.offered: list[int] = []

    def refuse(self, call: LlmCall, decision: RoutingDecision, now_s: float) -> str | None:
        self.offered.append(call.call_id)
        return f"no room for {call.task}"


def _refusing(replicas: int = 2, concurrency: int = 2) -> tuple[Dispatcher, _RefuseAll]:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    pol = _RefuseAll(est)
    d = Dispatcher(pol, est, default_concurrency=concurrency, learn=False)
    for i in range(replicas):
        d.add_replica(f"r{i}", "m", 0.0)
    return d, pol


def _later_node(call: LlmCall, ready_s: float) -> LlmCall:
    """The same task's call of a node that became ready after the task arrived."""
    return replace(call, ready_s=ready_s)


# ---- the dispatcher's hook ---------------------------------------------------------------------
def test_a_refused_call_is_in_no_queue_and_counts_as_a_request_and_a_violation() -> None:
    d, pol = _refusing()
    c = make_call(task="gen", now=0.0, deadline=5.0)
    res = d.submit(c, 0.0)
    assert (res.rejected, res.refused, res.reason) == (True, True, "no room for gen")
    assert res.dispatches == [] and res.decision is not None
    assert pol.offered == [c.call_id]
    assert d.where(c.call_id) is None and d.num_tracked() == 0
    assert all(r.num_queued == 0 and r.num_in_flight == 0 for r in d.pool)
    assert d.model_queue_depth("m") == 0
    w = d.take_window("m")
    assert (w.requests, w.violations) == (1, 1)   # the scaler still sees the unmet demand
    assert d.num_routed == 0


def test_only_a_tasks_first_call_is_offered_never_a_later_node_or_a_retry() -> None:
    d, pol = _refusing()
    first = make_call(now=1.0, deadline=9.0)
    later = _later_node(make_call(now=1.0, deadline=9.0), ready_s=1.5)   # ready after arrival
    assert not d.submit(later, 1.5).rejected                    # default: ready_s != arrival_s
    explicit = make_call(now=2.0, deadline=9.0)
    assert not d.submit(explicit, 2.0, at_arrival=False).rejected   # the driver says: later
    retry = make_call(now=2.0, deadline=9.0)
    assert not d.submit(retry, 2.0, avoid=frozenset({"r0"}), at_arrival=True).rejected
    assert pol.offered == []
    assert d.submit(first, 1.0).refused                         # default: ready at arrival
    after_tool = _later_node(make_call(now=1.0, deadline=9.0), ready_s=1.2)
    assert d.submit(after_tool, 1.2, at_arrival=True).refused   # e.g. retrieve -> first LLM
    assert pol.offered == [first.call_id, after_tool.call_id]
    assert d.num_tracked() == 3


def test_a_call_held_while_no_replica_is_ready_is_not_refused() -> None:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    pol = _RefuseAll(est)
    d = Dispatcher(pol, est, default_concurrency=2, learn=False)
    d.add_replica("r0", "m", 0.0, ready=False)
    c = make_call(deadline=5.0)
    res = d.submit(c, 0.0)
    assert not res.rejected and pol.offered == []              # no decision to judge yet
    assert d.model_queue_depth("m") == 1


@pytest.mark.parametrize("policy", ["cato", "cato-plus", "round_robin", "least_outstanding",
                                    "edf", "oracle", "llmd"])
def test_by_default_nothing_is_refused_even_a_hopeless_call(policy: str) -> None:
    d = make_dispatcher(policy, replicas=1, concurrency=1)
    for i in range(6):
        res = d.submit(make_call(n_out=300, deadline=-1.0 + 0.1 * i), 0.0)
        assert not res.rejected and not res.refused
    assert d.num_tracked() == 6


op = st.one_of(
    st.tuples(st.just("submit"), st.integers(16, 2000), st.integers(1, 300),
              st.floats(-1.0, 20.0), st.booleans(), st.booleans()),
    st.tuples(st.just("first"), st.integers(0, 10_000)),
    st.tuples(st.just("finish"), st.integers(0, 10_000)),
)


@settings(max_examples=40, deadline=None)
@given(mode=st.sampled_from(["hopeless", "infeasible"]), ops=st.lists(op, max_size=60),
       conc=st.integers(1, 3))
def test_refusals_keep_every_dispatcher_invariant(mode: str, ops: list, conc: int) -> None:
    """With a refusing CATO+, a refused call is tracked nowhere and never dispatched; every
    accepted call ends exactly once; limits hold."""
    d = make_dispatcher("cato-plus", replicas=2, concurrency=conc, refuse=mode)
    now = 0.0
    accepted: set[int] = set()
    refused: set[int] = set()
    in_flight: set[int] = set()
    started: set[int] = set()
    done: set[int] = set()

    def apply(dispatches) -> None:
        for x in dispatches:
            cid = x.call.call_id
            assert cid in accepted and cid not in in_flight and cid not in done
            in_flight.add(cid)

    for o in ops:
        now += 0.01
        if o[0] == "submit":
            c = make_call(n_in=o[1], n_out=o[2], now=now, deadline=now + o[3], ttft_critical=o[4])
            res = d.submit(c, now, at_arrival=o[5])
            assert res.refused == res.rejected
            if res.refused:
                assert o[5], "a later node was refused"
                assert res.dispatches == [] and d.where(c.call_id) is None
                refused.add(c.call_id)
            else:
                accepted.add(c.call_id)
                apply(res.dispatches)
        elif in_flight:
            cid = sorted(in_flight)[o[1] % len(in_flight)]
            if o[0] == "first":
                if cid not in started:
                    started.add(cid)
                    apply(d.on_first_token(cid, now))
                continue
            in_flight.discard(cid)
            done.add(cid)
            apply(d.on_finish(cid, now))
        for r in d.pool:
            assert r.num_in_flight <= r.concurrency_limit
        assert d.num_tracked() == len(accepted - done)
        assert all(d.where(cid) is None for cid in refused)
    guard = 0
    while in_flight:
        guard += 1
        assert guard < 10_000
        cid = min(in_flight)
        in_flight.discard(cid)
        done.add(cid)
        apply(d.on_finish(cid, now))
    assert done == accepted and d.num_tracked() == 0


# ---- CATO+'s modes -----------------------------------------------------------------------------
def _loaded(mode: str) -> tuple[Dispatcher, LlmCall]:
    """Two replicas, one slot each, both held by long calls with more queued behind them
    (accepted as later nodes, so never refused), and a call that an idle replica serves in
    time (1.5x its isolated service) but none can now."""
    d = make_dispatcher("cato-plus", replicas=2, concurrency=1, refuse=mode)
    for _ in range(4):
        c = make_call(n_out=400, deadline=1000.0)
        assert not d.submit(c, 0.0, at_arrival=False).rejected
    for r in d.pool:
        for cid in list(r.in_flight):
            d.on_first_token(cid, 0.0)
    probe = make_call(n_out=50, deadline=0.0)
    iso = d.estimator.isolated(probe).completion_s
    probe = replace(probe, deadline_s=1.5 * iso)
    return d, probe


def test_hopeless_mode_refuses_only_what_an_idle_replica_cannot_serve_in_time() -> None:
    d = make_dispatcher("cato-plus", replicas=2, concurrency=4, refuse="hopeless")
    call = make_call(n_out=100, deadline=0.0)
    iso = d.estimator.isolated(call).completion_s
    lost = replace(call, deadline_s=0.9 * iso)
    res = d.submit(lost, 0.0)
    assert res.refused and "hopeless" in res.reason and "idle replica" in res.reason
    assert f"{iso:.3g} s" in res.reason                   # what it needs alone
    ok = make_call(n_out=100, deadline=iso)                # slack == service: not hopeless
    assert not d.submit(ok, 0.0).rejected
    # under load, hopeless mode still accepts a call an idle replica would serve in time
    d2, probe = _loaded("hopeless")
    res2 = d2.submit(probe, 0.0)
    assert not res2.rejected and res2.decision is not None and res2.decision.predicted_violation


def test_infeasible_mode_also_refuses_what_no_replica_can_serve_in_time_now() -> None:
    d, probe = _loaded("infeasible")
    res = d.submit(probe, 0.0)
    assert res.refused and res.decision is not None and res.decision.predicted_violation
    assert "past its slack" in res.reason and "predicted" in res.reason
    assert d.where(probe.call_id) is None
    # the same call on an idle pool is accepted
    idle = make_dispatcher("cato-plus", replicas=2, concurrency=1, refuse="infeasible")
    assert not idle.submit(replace(probe, call_id=probe.call_id + 10**6), 0.0).rejected
    # and a hopeless call is refused in this mode too
    lost = make_call(n_out=100, deadline=0.01)
    assert idle.submit(lost, 0.0).refused


def test_none_mode_accepts_what_the_others_refuse() -> None:
    d, probe = _loaded("none")
    assert not d.submit(probe, 0.0).rejected
    assert not d.submit(make_call(n_out=100, deadline=0.01), 0.0).rejected


def test_an_unknown_refuse_mode_is_a_value_error_naming_it() -> None:
    est = LatencyEstimator({"m": A100_LLAMA7B})
    with pytest.raises(ValueError, match="'sometimes'"):
        make_routing_policy("cato-plus", est, np.random.default_rng(0), refuse="sometimes")
    assert make_routing_policy("cato-plus", est, np.random.default_rng(0)).refuse_mode == "none"


# ---- the report figures ------------------------------------------------------------------------
def _rec(i: int, status: str, met: bool, task: str = "t") -> RequestRecord:
    ok = status == "ok"
    return RequestRecord(id=i, task=task, policy="p", arrival_s=float(i),
                         first_token_s=float(i) + 0.1 if ok else None,
                         last_token_s=float(i) + 0.5 if ok else None, n_in=10, n_out=5,
                         sla_kind="e2e", sla_s=1.0, status=status,  # type: ignore[arg-type]
                         met=met, replica="r0" if ok else None)


def test_refused_share_and_attainment_among_accepted_are_recomputable_from_records() -> None:
    recs = ([_rec(i, "ok", True) for i in range(6)] + [_rec(6 + i, "ok", False) for i in range(2)]
            + [_rec(8 + i, "rejected", False) for i in range(3)] + [_rec(11, "timeout", False)]
            + [_rec(12, "rejected", False, task="u"), _rec(13, "rejected", False, task="u")])
    s = summarize(recs, warmup_fraction=0.0)
    o = s.overall
    assert o.refused_share == pytest.approx(5 / 14)
    assert o.attainment_accepted == pytest.approx(6 / 9)
    assert o.attainment == pytest.approx(o.attainment_accepted * (1 - o.refused_share))
    assert s.tasks["u"].refused_share == 1.0 and s.tasks["u"].attainment_accepted is None
    row = summary_row(s, policy="p", scenario="x", rate_rps=1.0, seed=0)
    assert row["refused_share"] == pytest.approx(5 / 14)
    assert row["attainment_accepted"] == pytest.approx(6 / 9)
    assert row["tasks"]["u"]["attainment_accepted"] is None
    assert row["tasks"]["t"]["refused_share"] == pytest.approx(3 / 12)
    assert row["attainment"] == pytest.approx(6 / 14)         # a refusal is a miss
    assert row["num_rejected"] == 5                           # existing keys unchanged


def test_nothing_refused_gives_share_zero_and_equal_attainments() -> None:
    s = summarize([_rec(0, "ok", True), _rec(1, "ok", False)], warmup_fraction=0.0)
    assert s.overall.refused_share == 0.0
    assert s.overall.attainment_accepted == s.overall.attainment == 0.5
    empty = summarize([], warmup_fraction=0.0).overall
    assert empty.refused_share == 0.0 and empty.attainment_accepted is None
