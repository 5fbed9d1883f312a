"""Hand-computed routing decisions for every policy, and every priority case of Algorithm 1."""

import pytest

from builders import make_call, make_dispatcher
from cato.core.routing import make_routing_policy, routing_policy_names


def _busy_cato():
    """r0 runs a 1000-token generation, r1 a 10-token one; both have concurrency 1."""
    d = make_dispatcher("cato", replicas=2, concurrency=1)
    long = make_call(n_out=1000, deadline=100.0)
    short = make_call(n_out=10, deadline=100.0)
    assert d.submit(long, 0.0).dispatches[0].replica_id == "r0"   # both idle: first replica
    assert d.submit(short, 0.0).dispatches[0].replica_id == "r1"  # shortest queue
    d.on_first_token(long.call_id, 0.0)
    d.on_first_token(short.call_id, 0.0)
    return d


def test_priority0_violated_slack_goes_to_shortest_wait() -> None:
    d = _busy_cato()
    dec = d.policy.route(make_call(deadline=-1.0), d.pool, 0.0)
    assert (dec.replica_id, dec.priority, dec.predicted_violation) == ("r1", 0, True)


def test_priority1_no_replica_meets_slack_goes_to_shortest_wait() -> None:
    d = _busy_cato()
    # r1 frees its slot after ~9 decode steps of ~10.6 ms (~95 ms): a 50 ms deadline is lost
    dec = d.policy.route(make_call(deadline=0.050, ttft_critical=True), d.pool, 0.0)
    assert (dec.replica_id, dec.priority) == ("r1", 1)
    assert dec.estimate.wait_s == pytest.approx(9 * 0.0106, rel=0.1)


def test_priority2_shortest_queue_that_meets_slack() -> None:
    d = _busy_cato()
    # both have one outstanding; r0 (visited first) needs ~10 s, r1 ~0.1 s + ~0.55 s service
    dec = d.policy.route(make_call(n_in=200, n_out=50, deadline=2.0), d.pool, 0.0)
    assert (dec.replica_id, dec.priority, dec.predicted_violation) == ("r1", 2, False)
    assert dec.estimate.completion_s < 2.0


def test_priority2_prefers_the_shorter_queue_when_both_meet() -> None:
    d = make_dispatcher("cato", replicas=3, concurrency=8)
    d.submit(make_call(deadline=100.0), 0.0)   # r0
    d.submit(make_call(deadline=100.0), 0.0)   # r1
    dec = d.policy.route(make_call(deadline=100.0), d.pool, 0.0)
    assert (dec.replica_id, dec.priority) == ("r2", 2)


def test_gateway_queue_orders_by_priority_then_deadline() -> None:
    d = make_dispatcher("cato", replicas=1, concurrency=1)
    first = make_call(n_out=20, deadline=100.0)
    d.submit(first, 0.0)
    d.on_first_token(first.call_id, 0.0)
    late = make_call(deadline=90.0)       # priority 2 (meets)
    early = make_call(deadline=50.0)      # priority 2, earlier deadline
    lost = make_call(deadline=-1.0)       # priority 0
    for c in (late, early, lost):
        assert d.submit(c, 0.0).dispatches == []
    order = []
    cur = first
    for _ in range(3):
        nxt = d.on_finish(cur.call_id, 1.0)
        assert len(nxt) == 1
        cur = nxt[0].call
        order.append(cur.call_id)
        d.on_first_token(cur.call_id, 1.0)
    assert order == [lost.call_id, early.call_id, late.call_id]


def test_round_robin_cycles() -> None:
    d = make_dispatcher("round_robin", replicas=3, concurrency=8)
    got = [d.submit(make_call(), 0.0).dispatches[0].replica_id for _ in range(7)]
    assert got == ["r0", "r1", "r2", "r0", "r1", "r2", "r0"]


def test_least_outstanding_picks_the_emptiest() -> None:
    d = make_dispatcher("least_outstanding", replicas=3, concurrency=8)
    calls = [make_call() for _ in range(3)]
    for c in calls:
        d.submit(c, 0.0)                    # r0, r1, r2
    d.on_finish(calls[1].call_id, 1.0)      # r1 now empty
    assert d.submit(make_call(), 1.0).dispatches[0].replica_id == "r1"


def test_pow2_respects_max_ongoing_and_queues_fifo() -> None:
    d = make_dispatcher("pow2", replicas=2, max_ongoing_requests=1)
    a, b, c, e = (make_call() for _ in range(4))
    placed = {d.submit(x, 0.0).dispatches[0].replica_id for x in (a, b)}
    assert placed == {"r0", "r1"}          # with one free slot each, both get one
    assert d.submit(c, 0.0).dispatches == []   # all at max_ongoing: waits in the router
    assert d.submit(e, 0.0).dispatches == []
    out = d.on_finish(a.call_id, 1.0)
    assert [x.call.call_id for x in out] == [c.call_id]   # FIFO
    assert all(r.num_in_flight <= 1 for r in d.pool)


def test_pow2_picks_fewer_ongoing_of_two_samples() -> None:
    d = make_dispatcher("pow2", replicas=2, max_ongoing_requests=10)
    for _ in range(3):
        d.submit(make_call(), 0.0)
    loads = sorted(r.num_in_flight for r in d.pool)
    assert loads == [1, 2]  # with two replicas both are sampled: never 3/0


def test_edf_releases_earliest_deadline_first() -> None:
    d = make_dispatcher("edf", replicas=1, concurrency=1)
    a = make_call(deadline=100.0)
    d.submit(a, 0.0)
    x, y = make_call(deadline=30.0), make_call(deadline=20.0)
    d.submit(x, 0.0)
    d.submit(y, 0.0)
    assert d.on_finish(a.call_id, 1.0)[0].call.call_id == y.call_id


def test_oracle_serves_hopeless_calls_last() -> None:
    d = make_dispatcher("oracle", replicas=1, concurrency=1)
    a = make_call(deadline=100.0)
    d.submit(a, 0.0)
    hopeless = make_call(n_out=500, deadline=0.5)        # needs ~5 s alone
    fine = make_call(n_out=10, deadline=50.0)
    d.submit(hopeless, 0.0)
    d.submit(fine, 0.0)
    assert d.on_finish(a.call_id, 1.0)[0].call.call_id == fine.call_id


def test_unknown_policy_and_bad_params_are_clear() -> None:
    import numpy as np
    from cato.core.estimator import LatencyEstimator
    est = LatencyEstimator({})
    with pytest.raises(ValueError, match="unknown routing policy 'nope'"):
        make_routing_policy("nope", est, np.random.default_rng())
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        make_routing_policy("pow2", est, np.random.default_rng(), max_ongoing_requests=0)
    assert {"cato", "round_robin", "pow2", "least_outstanding", "edf", "oracle"} <= set(
        routing_policy_names())


# ---- pinning Algorithm 1 (each of these fails when its rule is changed) -------------------------
def _release_order(d, first, n: int, now: float) -> list[int]:
    """Finish ``first`` and each released call in turn on a concurrency-1 replica: the order
    in which the gateway queue releases ``n`` calls."""
    order = []
    cur = first
    for _ in range(n):
        nxt = d.on_finish(cur.call_id, now)
        assert len(nxt) == 1
        cur = nxt[0].call
        order.append(cur.call_id)
        d.on_first_token(cur.call_id, now)
    return order


def test_queue_order_is_priority_then_deadline_where_deadline_order_disagrees() -> None:
    d = make_dispatcher("cato", replicas=1, concurrency=1)
    blocker = make_call(n_out=200, deadline=100.0)          # ~2.1 s on the only slot
    d.submit(blocker, 0.0)
    d.on_first_token(blocker.call_id, 0.0)
    fine = make_call(n_out=10, deadline=10.0)               # meets: priority 2, deadline 10
    at_risk = make_call(n_out=1500, deadline=12.0)          # ~16 s alone: priority 1, deadline 12
    lost = make_call(n_out=10, now=10.5, deadline=10.4)     # late already: priority 0, 10.4
    got = [d.submit(fine, 0.0).decision, d.submit(at_risk, 0.0).decision,
           d.submit(lost, 10.5).decision]
    assert [x.priority for x in got] == [2, 1, 0]
    # (priority, deadline): lost, at_risk, fine; (deadline, priority) would give fine first
    assert _release_order(d, blocker, 3, 11.0) == [lost.call_id, at_risk.call_id, fine.call_id]


def test_priority2_takes_the_shortest_queue_not_the_shortest_wait() -> None:
    d = make_dispatcher("cato", replicas=2, concurrency=1)
    a, b, c = make_call(n_out=5), make_call(n_out=100), make_call(n_out=5)
    assert [d.submit(x, 0.0).decision.replica_id for x in (a, b, c)] == ["r0", "r1", "r0"]
    for x in (a, b):
        d.on_first_token(x.call_id, 0.0)
    probe = make_call(n_out=10, deadline=100.0)
    r0, r1 = d.pool.get("r0"), d.pool.get("r1")
    assert (r0.outstanding, r1.outstanding) == (2, 1)
    e0 = d.policy._estimate(probe, r0, 2, 0.0)
    e1 = d.policy._estimate(probe, r1, 2, 0.0)
    # both meet the slack; r0 has the longer queue but the shorter wait (and completion)
    assert max(e0.completion_s, e1.completion_s) < 100.0
    assert e0.wait_s < e1.wait_s and e0.completion_s < e1.completion_s
    dec = d.policy.route(probe, d.pool, 0.0)
    assert (dec.replica_id, dec.priority) == ("r1", 2)


def test_slack_zero_is_already_violated_priority0() -> None:
    d = _busy_cato()
    dec = d.policy.route(make_call(deadline=2.0, now=2.0), d.pool, 2.0)   # slack exactly 0
    assert (dec.priority, dec.predicted_violation) == (0, True)
    dec = d.policy.route(make_call(deadline=2.0 + 1e-9, now=2.0), d.pool, 2.0)
    assert dec.priority == 1                                  # slack > 0 but no replica meets


def test_completion_exactly_at_the_deadline_meets_the_slack() -> None:
    d = make_dispatcher("cato", replicas=1, concurrency=4)
    probe = make_call(n_in=300, n_out=40)
    est = d.policy._estimate(probe, d.pool.get("r0"), 2, 0.0).completion_s
    exact = make_call(n_in=300, n_out=40, deadline=est)       # slack == expected completion
    dec = d.policy.route(exact, d.pool, 0.0)
    assert (dec.priority, dec.predicted_violation) == (2, False)
