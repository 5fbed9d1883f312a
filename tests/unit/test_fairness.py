"""Fair shares between tenants (cato.core.fairness): validation, service counters, lifting of
idle tenants, weights, guaranteed shares, and the dispatcher releasing by tenant."""

from __future__ import annotations

import dataclasses
import heapq

import pytest
from hypothesis import given, settings, strategies as st

from builders import make_call, make_dispatcher
from cato.core.calls import LlmCall
from cato.core.fairness import (DEFAULT_SHARE, FairnessPolicy, FairShare, TenantShare,
                                call_cost)
from cato.core.replica import GatewayQueue, QueueEntry, heap_remove


def _call(tenant: str, *, n_in: int = 100, n_out: int = 50, deadline: float = 10.0,
          now: float = 0.0) -> LlmCall:
    return dataclasses.replace(make_call(n_in=n_in, n_out=n_out, deadline=deadline, now=now),
                               tenant=tenant)


# ---- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [0.0, -1.0, float("inf"), float("nan")])
def test_weight_must_be_finite_and_positive(weight: float) -> None:
    with pytest.raises(ValueError, match="weight must be a finite number > 0"):
        TenantShare(weight=weight)


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_guaranteed_share_must_be_in_unit_interval(share: float) -> None:
    with pytest.raises(ValueError, match=r"guaranteed_share must be in \[0, 1\]"):
        TenantShare(guaranteed_share=share)


def test_guaranteed_shares_must_sum_to_at_most_one() -> None:
    with pytest.raises(ValueError, match=r"sum to at most 1, got 1.2 \(a=0.6, b=0.6\)"):
        FairnessPolicy({"a": TenantShare(guaranteed_share=0.6),
                        "b": TenantShare(guaranteed_share=0.6)})
    FairnessPolicy({"a": TenantShare(guaranteed_share=0.5),
                    "b": TenantShare(guaranteed_share=0.5)})   # exactly 1 is fine


def test_unnamed_tenants_get_the_default_share() -> None:
    p = FairnessPolicy({"a": TenantShare(2.0)})
    assert p.share("zzz") == DEFAULT_SHARE
    assert not p.is_default and FairnessPolicy({"a": TenantShare()}).is_default


# ---- counters ------------------------------------------------------------------------------
def test_release_charges_weighted_tokens_divided_by_weight() -> None:
    f = FairShare(FairnessPolicy({"heavy": TenantShare(4.0)}))
    a, h = _call("a", n_in=100, n_out=50), _call("heavy", n_in=100, n_out=50)
    assert call_cost(a) == 100 + 2 * 50
    f.queued(a)
    f.queued(h)
    f.released(a)
    f.released(h)
    assert f.counter("m", "a") == 200.0
    assert f.counter("m", "heavy") == 50.0
    assert f.in_flight("m", "a") == 1 and dict(f.backlogged("m")) == {}
    f.done(a)
    assert f.in_flight("m", "a") == 0
    with pytest.raises(ValueError, match="tenant 'a' has no call"):
        f.done(a)


def test_idle_tenant_is_lifted_to_the_smallest_backlogged_counter() -> None:
    f = FairShare()
    for _ in range(3):                 # a runs alone for a while: counter 600
        c = _call("a")
        f.queued(c)
        f.released(c)
    f.queued(_call("a"))               # a stays backlogged
    f.queued(_call("b"))               # b arrives: no credit for its idle time
    assert f.counter("m", "b") == f.counter("m", "a") == 600.0


def test_tenant_arriving_to_an_empty_gateway_is_lifted_to_the_last_to_leave() -> None:
    f = FairShare()
    c = _call("a")
    f.queued(c)
    f.released(c)                      # a leaves the backlog at 200
    f.queued(_call("b"))
    assert f.counter("m", "b") == 200.0
    f.queued(_call("c"))               # c joins b (backlogged at 200)
    assert f.counter("m", "c") == 200.0


def test_counters_never_decrease_when_lifted() -> None:
    f = FairShare()
    b1 = _call("b")
    f.queued(b1)
    f.queued(_call("b"))               # b backlogged, at 0
    for _ in range(5):                 # a comes and goes: 1000
        c = _call("a")
        f.queued(c)
        f.released(c)
    f.released(b1)                     # b, still backlogged, at 200
    f.queued(_call("a"))               # a joins: the floor is 200, a keeps its 1000
    assert f.counter("m", "a") == 1000.0 and f.counter("m", "b") == 200.0


def test_models_are_kept_apart() -> None:
    f = FairShare()
    c = dataclasses.replace(_call("a"), model="other")
    f.queued(c)
    f.released(c)
    assert f.counter("other", "a") == 200.0 and f.counter("m", "a") == 0.0


# ---- the choice ----------------------------------------------------------------------------
def test_choose_smallest_counter_then_fewest_in_flight_then_most_urgent() -> None:
    f = FairShare()
    for c in (_call("a"), _call("a")):
        f.queued(c)
        f.released(c)
    f.queued(_call("a"))
    f.queued(_call("b"))               # lifted to a's 400: a tie on counters
    heads = {"a": (0.0, 1.0, 1.0), "b": (0.0, 9.0, 2.0)}
    assert f.choose("m", heads, slots=8) == "b"      # fewer in flight (0 < 2) wins the tie
    assert f.choose("m", {"a": (0.0, 1.0, 1.0)}, slots=8) == "a"
    g = FairShare()
    g.queued(_call("a"))
    g.queued(_call("b"))
    assert g.choose("m", {"a": (1.0, 5.0, 7.0), "b": (0.0, 9.0, 8.0)}, 8) == "b"   # urgency


def test_weights_share_releases_in_proportion() -> None:
    """Both tenants always backlogged with equal calls: tenant w2 of weight 2 gets twice the
    releases of w1."""
    f = FairShare(FairnessPolicy({"w2": TenantShare(2.0)}))
    got = {"w1": 0, "w2": 0}
    for t in got:
        f.queued(_call(t))
    for i in range(300):
        t = f.choose("m", {"w1": (0.0, float(i)), "w2": (0.0, float(i) + 0.5)}, slots=8)
        c = _call(t)
        f.queued(c)      # the tenant stays backlogged: another call behind the released one
        f.released(c)
        got[t] += 1
    assert got["w2"] == pytest.approx(2 * got["w1"], rel=0.02)


def test_tenant_below_its_guarantee_goes_first() -> None:
    f = FairShare(FairnessPolicy({"gold": TenantShare(guaranteed_share=0.5)}))
    for t in ("gold", "gold", "gold", "other"):   # gold has the larger counter
        c = _call(t)
        f.queued(c)
        f.released(c)
    f.queued(_call("gold"))
    f.queued(_call("other"))
    heads = {"gold": (0.0, 5.0, 1.0), "other": (0.0, 1.0, 2.0)}
    assert f.choose("m", heads, slots=8) == "gold"     # 3 in flight < 0.5 x 8
    assert f.choose("m", heads, slots=6) == "other"    # 3 in flight = 0.5 x 6: no priority


# ---- in the dispatcher ---------------------------------------------------------------------
def test_dispatcher_releases_the_starved_tenant_before_the_flood() -> None:
    """One replica, one slot: A queues ten urgent calls, then B one lax call. Without fairness
    B waits behind all of A's; with fair shares it goes at the second free slot."""
    def order(fair: bool) -> list[str]:
        d = make_dispatcher("cato", replicas=1, concurrency=1)
        if fair:
            d.order = FairShare()
        released: list[LlmCall] = []
        for i in range(10):
            released += [x.call for x in d.submit(_call("A", deadline=5.0 + i), 0.0).dispatches]
        released += [x.call for x in d.submit(_call("B", deadline=100.0), 0.0).dispatches]
        now = 0.0
        while len(released) < 11:
            now += 1.0
            released += [x.call for x in d.on_finish(released[-1].call_id, now)]
        return [c.tenant for c in released]

    assert order(False) == ["A"] * 10 + ["B"]
    fair = order(True)
    assert fair.index("B") == 2   # A's first call, A's second (B lifted to A's counter), B
    assert sorted(fair) == ["A"] * 10 + ["B"]


def test_dispatcher_books_balance_after_shedding_and_removal() -> None:
    f = FairShare()
    d = make_dispatcher("cato", replicas=1, concurrency=1)
    d.order = f
    d.max_queue_per_replica = 1
    first = d.submit(_call("A"), 0.0)
    assert len(first.dispatches) == 1
    assert not d.submit(_call("A"), 0.0).rejected          # queued
    shed = d.submit(_call("B"), 0.0)
    assert shed.rejected                                    # over the queue bound: shed
    assert dict(f.backlogged("m")) == {"A": 1} and f.in_flight("m", "A") == 1
    d.drain("r0", 0.0)
    lost = d.remove_replica("r0")
    assert len(lost) == 1   # the in-flight call; the queued one waits in the model's queue
    assert f.in_flight("m", "A") == 0 and dict(f.backlogged("m")) == {"A": 1}


def test_free_slot_takes_the_starved_tenants_call_from_a_busier_replica() -> None:
    """Two replicas, one slot each, A's calls queued at both; B's call is routed to one of
    them. The first slot to free -- on the other replica -- goes to B (its call moves there)
    rather than to A's head there."""
    d = make_dispatcher("cato", replicas=2, concurrency=1)
    d.order = FairShare()
    running: dict[str, int] = {}
    for i in range(8):
        for x in d.submit(_call("A", deadline=5.0 + i), 0.0).dispatches:
            running[x.replica_id] = x.call.call_id
    b = _call("B", deadline=100.0)
    assert d.submit(b, 0.0).dispatches == []
    where = d.where(b.call_id)
    assert where is not None and where[1] is False
    queued_at = where[0]
    other = "r1" if queued_at == "r0" else "r0"
    out = d.on_finish(running[other], 1.0)
    assert [(x.call.tenant, x.replica_id) for x in out] == [("B", other)]
    assert d.where(b.call_id) == (other, True)
    assert all(e.call.tenant == "A" for e in d.pool.get(queued_at).queue)
    assert len(d.pool.get(queued_at).queue.tenants) == 1


# ---- the queues' tenant operations ---------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 50), st.integers(1, 500),
                              st.sampled_from(["", "a", "b"])), max_size=120))
def test_gateway_queue_remove_and_heads_match_a_sorted_list(
        ops: list[tuple[bool, int, int, str]]) -> None:
    """Pushes, pops and removals anywhere: order, per-tenant counts, each tenant's head and the
    prefix sums behind rank() stay those of a plain sorted list."""
    q, ref = GatewayQueue(), []
    for seq, (push, k, tokens, tenant) in enumerate(ops):
        if push or not ref:
            c = dataclasses.replace(make_call(n_in=tokens), tenant=tenant)
            e = QueueEntry((float(k), float(seq)), c, 0, False)
            q.push(e)
            ref.append(e)
            ref.sort(key=lambda x: x.key)
        elif k % 3 == 0:
            assert q.pop() is ref.pop(0)
        else:
            victim = ref.pop(k % len(ref))
            q.remove(victim)
        assert list(q) == ref
        assert q.tenants == {t: sum(e.call.tenant == t for e in ref)
                             for t in {e.call.tenant for e in ref}}
        assert q.heads() == {t: next(e for e in ref if e.call.tenant == t) for t in q.tenants}
        for probe in ref[:5] + ref[-3:]:
            ahead = [e for e in ref if e.key < probe.key]
            assert q.rank(probe.key) == (len(ahead), sum(e.call.num_prompt_tokens
                                                           for e in ahead))
    with pytest.raises(ValueError, match="is not queued here"):
        q.remove(QueueEntry((1e9, 0.0), make_call(), 0, False))


def test_heap_remove_keeps_a_heap() -> None:
    h: list[QueueEntry] = []
    entries = [QueueEntry((float(k), float(i)), make_call(), 0, False)
               for i, k in enumerate([5, 3, 8, 1, 9, 2, 7])]
    for e in entries:
        heapq.heappush(h, e)
    heap_remove(h, entries[2])       # inside
    heap_remove(h, h[0])             # the head
    assert [heapq.heappop(h).key[0] for _ in range(len(h))] == [2, 3, 5, 7, 9]
    with pytest.raises(ValueError, match="is not in this queue"):
        heap_remove([entries[0]], entries[1])
