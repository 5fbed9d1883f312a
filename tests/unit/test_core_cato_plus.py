"""CATO+ (cato.core.routing.cato.CatoPlusPolicy): one unit test per rule, each failing when its
rule is changed."""

from __future__ import annotations

from builders import make_call, make_dispatcher
from cato.core.coefficients import A100_LLAMA7B


def _blocked(n_out: int = 200):
    """One replica, concurrency 1, its slot held by a call ~n_out decode steps long."""
    d = make_dispatcher("cato-plus", replicas=1, concurrency=1)
    blocker = make_call(n_out=n_out, deadline=1000.0)
    assert len(d.submit(blocker, 0.0).dispatches) == 1
    d.on_first_token(blocker.call_id, 0.0)
    return d, blocker


def test_hopeless_call_gets_priority3_where_even_an_idle_replica_is_too_slow() -> None:
    d = make_dispatcher("cato-plus", replicas=2, concurrency=4)
    iso = d.estimator.isolated(make_call(n_out=100)).completion_s      # ~1.05 s
    dec = d.policy.route(make_call(n_out=100, deadline=0.9 * iso), d.pool, 0.0)
    assert (dec.priority, dec.predicted_violation) == (3, True)
    # the paper's rule would give an already-violated call priority 0; CATO+ gives it 3 too
    assert d.policy.route(make_call(deadline=-1.0), d.pool, 0.0).priority == 3


def test_slack_equal_to_the_isolated_service_is_not_hopeless() -> None:
    d = make_dispatcher("cato-plus", replicas=1, concurrency=4)
    iso = d.estimator.isolated(make_call(n_out=100)).completion_s
    dec = d.policy.route(make_call(n_out=100, deadline=iso), d.pool, 0.0)
    assert dec.priority in (1, 2)                             # `slack < service` is strict
    assert d.policy.demote(make_call(n_out=100, deadline=iso), 2, 0.0) is None


def test_hopeless_calls_wait_behind_every_salvageable_one() -> None:
    d, blocker = _blocked()
    hopeless = make_call(n_out=100, deadline=0.5)             # earliest deadline, but lost
    fine = make_call(n_out=10, deadline=50.0)
    assert d.submit(hopeless, 0.0).decision.priority == 3
    assert d.submit(fine, 0.0).decision.priority == 2
    out = d.on_finish(blocker.call_id, 2.0)
    assert [x.call.call_id for x in out] == [fine.call_id]


def test_at_risk_call_is_priority1_on_the_soonest_replica() -> None:
    d = make_dispatcher("cato-plus", replicas=2, concurrency=1)
    long, short = make_call(n_out=1000, deadline=100.0), make_call(n_out=10, deadline=100.0)
    d.submit(long, 0.0)
    d.submit(short, 0.0)
    d.on_first_token(long.call_id, 0.0)
    d.on_first_token(short.call_id, 0.0)
    call = make_call(n_out=20, deadline=0.3)                 # alone ~0.2 s: salvageable...
    assert d.estimator.isolated(call).completion_s < 0.3
    dec = d.policy.route(call, d.pool, 0.0)                   # ...but no replica meets 0.3 s
    assert (dec.replica_id, dec.priority, dec.predicted_violation) == ("r1", 1, True)


def test_feasible_call_goes_to_the_soonest_completion_not_the_shortest_queue() -> None:
    # r0: two outstanding, short ones (shorter wait); r1: one long one (shorter queue)
    d = make_dispatcher("cato-plus", replicas=2, concurrency=1)
    a, b, c = make_call(n_out=5), make_call(n_out=100), make_call(n_out=5)
    assert [d.submit(x, 0.0).decision.replica_id for x in (a, b, c)] == ["r0", "r1", "r0"]
    for x in (a, b):
        d.on_first_token(x.call_id, 0.0)
    probe = make_call(n_out=10, deadline=100.0)
    e0 = d.policy._estimate(probe, d.pool.get("r0"), 2, 0.0)
    e1 = d.policy._estimate(probe, d.pool.get("r1"), 2, 0.0)
    assert e0.wait_s < e1.wait_s < 100.0 and e0.completion_s < e1.completion_s
    dec = d.policy.route(probe, d.pool, 0.0)
    # Algorithm 1 (cato) takes r1, the shortest queue that meets the slack; CATO+ the soonest
    assert (dec.replica_id, dec.priority, dec.predicted_violation) == ("r0", 2, False)
    assert dec.estimate.completion_s == e0.completion_s


def test_soonest_replica_that_misses_the_slack_makes_the_call_at_risk() -> None:
    d = make_dispatcher("cato-plus", replicas=2, concurrency=1)
    for n in (1000, 800):                                     # both slots held for seconds
        c = make_call(n_out=n, deadline=100.0)
        d.submit(c, 0.0)
        d.on_first_token(c.call_id, 0.0)
    call = make_call(n_out=20, deadline=1.0)                  # alone ~0.2 s: salvageable
    dec = d.policy.route(call, d.pool, 0.0)
    assert (dec.replica_id, dec.priority, dec.predicted_violation) == ("r1", 1, True)


def test_call_that_became_hopeless_while_queued_is_demoted_at_the_head() -> None:
    d, blocker = _blocked()                                   # slot busy ~2.1 s
    tight = make_call(n_out=20, deadline=2.5)                 # meets at 0 (after ~2.1 s wait)
    loose = make_call(n_out=20, deadline=60.0)
    assert d.submit(tight, 0.0).decision.priority == 2
    assert d.submit(loose, 0.0).decision.priority == 2
    # the blocker ends late, at 2.4 s: tight needs ~0.2 s alone, so it cannot make 2.5 s
    out = d.on_finish(blocker.call_id, 2.4)
    assert [x.call.call_id for x in out] == [loose.call_id]
    assert [(e.call.call_id, e.priority) for e in d.pool.get("r0").queue] == [(tight.call_id, 3)]


def test_prefill_budget_holds_calls_at_two_steps_of_prompt_tokens() -> None:
    d = make_dispatcher("cato-plus", replicas=1, concurrency=8)
    r = d.pool.get("r0")
    assert r.prefill_budget_tokens == 2 * A100_LLAMA7B.max_num_batched_tokens
    calls = [make_call(n_in=1024, n_out=20, deadline=100.0, ttft_critical=True)
             for _ in range(5)]
    released = [len(d.submit(c, 0.0).dispatches) for c in calls]
    assert released == [1, 1, 1, 1, 0]                        # 4096 pending: the 5th waits
    assert r.pending_prefill_tokens == 4096 and r.num_in_flight == 4 < r.concurrency_limit
    # the paper's CATO has no budget: all five go to the engine
    p = make_dispatcher("cato", replicas=1, concurrency=8)
    assert [len(p.submit(make_call(n_in=1024, deadline=100.0), 0.0).dispatches)
            for _ in range(5)] == [1] * 5


def test_lax_call_waits_until_no_prompt_awaits_prefill_and_urgent_ones_pass_it() -> None:
    d = make_dispatcher("cato-plus", replicas=1, concurrency=8)
    r = d.pool.get("r0")
    first = make_call(n_in=500, n_out=20, deadline=100.0, ttft_critical=True)
    lax = make_call(n_in=300, n_out=40, deadline=3.0)            # E2E-critical, seconds of slack
    urgent = make_call(n_in=700, n_out=10, deadline=0.25, ttft_critical=True)
    assert len(d.submit(first, 0.0).dispatches) == 1             # 500 tokens await prefill
    assert d.submit(lax, 0.0).dispatches == []                    # held in the gateway
    assert [x.call.call_id for x in d.submit(urgent, 0.01).dispatches] == [urgent.call_id]
    assert d.on_first_token(first.call_id, 0.05) == []            # urgent's 700 still pending
    out = d.on_first_token(urgent.call_id, 0.1)                   # nothing pending: lax goes
    assert [x.call.call_id for x in out] == [lax.call_id]
    assert r.pending_prefill_tokens == 300
    # switched off, the lax call goes at once, as any call under the budget
    off = make_dispatcher("cato-plus", replicas=1, concurrency=8, hold_lax=False)
    off.submit(make_call(n_in=500, n_out=20, deadline=100.0, ttft_critical=True), 0.0)
    assert len(off.submit(make_call(n_in=300, n_out=40, deadline=3.0), 0.0).dispatches) == 1


# ---- the ablation switches: each one off gives back the rule it replaces ----------------------
def test_switches_off_give_back_algorithm1_rules() -> None:
    d = make_dispatcher("cato-plus", replicas=2, concurrency=1, soonest=False)
    a, b, c = make_call(n_out=5), make_call(n_out=100), make_call(n_out=5)
    for x in (a, b, c):
        d.submit(x, 0.0)
    for x in (a, b):
        d.on_first_token(x.call_id, 0.0)
    dec = d.policy.route(make_call(n_out=10, deadline=100.0), d.pool, 0.0)
    assert (dec.replica_id, dec.priority) == ("r1", 2)          # shortest queue, not soonest
    p = make_dispatcher("cato-plus", replicas=2, concurrency=4, hopeless_last=False)
    assert p.policy.route(make_call(deadline=-1.0), p.pool, 0.0).priority == 0
    iso = p.estimator.isolated(make_call(n_out=100)).completion_s
    assert p.policy.route(make_call(n_out=100, deadline=0.9 * iso), p.pool, 0.0).priority == 1
    assert p.policy.demote(make_call(n_out=100, deadline=0.5), 2, 0.0) is None
    n = make_dispatcher("cato-plus", replicas=1, concurrency=8, prefill_budget_steps=None)
    assert n.pool.get("r0").prefill_budget_tokens is None


def test_engine_priority_deadline_mode_orders_by_class_then_deadline() -> None:
    d = make_dispatcher("cato-plus", replicas=1, concurrency=8, engine_priority="deadline")
    early, late = make_call(deadline=1.5), make_call(deadline=2.5)
    pe = d.policy.engine_priority(early, 2, 0.0)
    pl = d.policy.engine_priority(late, 2, 0.0)
    assert isinstance(pe, int) and pe < pl and pl - pe == 1000
    assert d.policy.engine_priority(late, 1, 0.0) < pe            # the class dominates
    assert make_dispatcher("cato-plus").policy.engine_priority(late, 2, 0.0) == 2


def test_bad_switch_values_name_the_parameter() -> None:
    import pytest
    for bad, word in ((dict(engine_priority="edf"), "engine_priority"),
                      (dict(prefill_budget_steps=0), "prefill_budget_steps"),
                      (dict(refuse="maybe"), "refuse")):
        with pytest.raises(ValueError, match=word):
            make_dispatcher("cato-plus", **bad)
