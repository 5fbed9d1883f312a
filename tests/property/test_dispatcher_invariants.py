"""Property tests of the dispatcher: no call lost or duplicated, limits and phases respected."""

from hypothesis import given, settings, strategies as st

from builders import make_call, make_dispatcher
from cato.core.replica import ReplicaPhase

POLICIES = ["cato", "round_robin", "least_outstanding", "pow2", "edf", "oracle"]

op = st.one_of(
    st.tuples(st.just("submit"), st.integers(16, 2000), st.integers(1, 300),
              st.floats(-1.0, 20.0), st.booleans()),
    st.tuples(st.just("first"), st.integers(0, 10_000)),
    st.tuples(st.just("finish"), st.integers(0, 10_000)),
    st.tuples(st.just("fail"), st.integers(0, 10_000)),
    st.tuples(st.just("drain"), st.integers(0, 10)),
    st.tuples(st.just("add"), st.booleans()),
    st.tuples(st.just("ready"), st.integers(0, 10)),
)


@settings(max_examples=60, deadline=None)
@given(policy=st.sampled_from(POLICIES), ops=st.lists(op, max_size=80),
       conc=st.integers(1, 4))
def test_every_call_is_in_exactly_one_place(policy: str, ops: list, conc: int) -> None:
    d = make_dispatcher(policy, replicas=2, concurrency=conc, max_ongoing_requests=conc) \
        if policy == "pow2" else make_dispatcher(policy, replicas=2, concurrency=conc)
    now = 0.0
    submitted: set[int] = set()
    in_flight: dict[int, str] = {}
    started: set[int] = set()
    done: set[int] = set()
    next_rep = 2

    def apply(dispatches) -> None:
        for x in dispatches:
            cid = x.call.call_id
            assert cid in submitted and cid not in in_flight and cid not in done, "duplicate"
            r = d.pool.get(x.replica_id)
            assert r.phase is ReplicaPhase.READY, "dispatched to a replica that is not ready"
            in_flight[cid] = x.replica_id

    for o in ops:
        now += 0.01
        kind = o[0]
        if kind == "submit":
            c = make_call(n_in=o[1], n_out=o[2], now=now, deadline=now + o[3], ttft_critical=o[4])
            submitted.add(c.call_id)
            res = d.submit(c, now)
            assert not res.rejected
            apply(res.dispatches)
        elif kind in ("first", "finish", "fail") and in_flight:
            cid = sorted(in_flight)[o[1] % len(in_flight)]
            if kind == "first":
                if cid not in started:
                    apply(d.on_first_token(cid, now))   # a prefill budget may release more
                    started.add(cid)
                continue
            rid = in_flight.pop(cid)
            done.add(cid)
            apply(d.on_finish(cid, now) if kind == "finish" else d.on_failure(cid, now))
            if rid in d.pool and d.pool.get(rid).phase is ReplicaPhase.DRAINING \
                    and d.is_drained(rid):
                assert d.remove_replica(rid) == []
        elif kind == "drain":
            ready = [r for r in d.pool if r.phase is ReplicaPhase.READY]
            if len(ready) > 1:
                r = ready[o[1] % len(ready)]
                apply(d.drain(r.replica_id, now))
                if d.is_drained(r.replica_id):
                    assert d.remove_replica(r.replica_id) == []
        elif kind == "add":
            apply(d.add_replica(f"r{next_rep}", "m", now, ready=o[1]))
            next_rep += 1
        elif kind == "ready":
            starting = [r for r in d.pool if r.phase is ReplicaPhase.STARTING]
            if starting:
                apply(d.mark_ready(starting[o[1] % len(starting)].replica_id, now))
        # invariants after every step
        for r in d.pool:
            assert r.num_in_flight <= r.concurrency_limit
            assert set(r.in_flight) <= set(in_flight)
        tracked = submitted - done
        assert d.num_tracked() == len(tracked), "a call was lost or duplicated"
        for cid in tracked:
            where = d.where(cid)
            assert where is not None
            assert (cid in in_flight) == where[1]
    # drain everything: every submitted call ends exactly once
    for r in list(d.pool):
        if r.phase is ReplicaPhase.STARTING:
            apply(d.mark_ready(r.replica_id, now))
    guard = 0
    while in_flight:
        guard += 1
        assert guard < 10_000
        cid = next(iter(sorted(in_flight)))
        in_flight.pop(cid)
        done.add(cid)
        apply(d.on_finish(cid, now))
    assert done == submitted, "some calls never ran"
    assert d.num_tracked() == 0
