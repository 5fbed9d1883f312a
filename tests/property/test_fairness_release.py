"""Property tests of fair shares in the dispatcher: with one tenant the release order is exactly
the queue order's (fairness changes nothing), and with several no call is lost and the tenant
bookkeeping balances."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import given, settings, strategies as st

from builders import make_call
from cato.core.coefficients import A100_LLAMA7B
from cato.core.dispatcher import Dispatch, Dispatcher
from cato.core.estimator import LatencyEstimator
from cato.core.fairness import FairnessPolicy, FairShare, ReleaseOrder, TenantShare
from cato.core.replica import ReplicaPhase
from cato.core.routing import make_routing_policy

POLICIES = ["cato", "cato-plus", "round_robin", "least_outstanding", "edf", "oracle"]

_submit = st.tuples(st.just("submit"), st.integers(16, 2000), st.integers(1, 300),
                    st.floats(-1.0, 20.0), st.booleans(), st.integers(0, 2))
op = st.one_of(   # submits weighted up, so that gateway queues build
    _submit, _submit, _submit,
    st.tuples(st.just("first"), st.integers(0, 10_000)),
    st.tuples(st.just("finish"), st.integers(0, 10_000)),
    st.tuples(st.just("fail"), st.integers(0, 10_000)),
    st.tuples(st.just("drain"), st.integers(0, 10)),
    st.tuples(st.just("add"), st.booleans()),
    st.tuples(st.just("ready"), st.integers(0, 10)),
)


def _dispatcher(policy: str, conc: int, order: ReleaseOrder | None) -> Dispatcher:
    est = LatencyEstimator({"m": A100_LLAMA7B}, learning_rate=0.0)
    pol = make_routing_policy(policy, est, np.random.default_rng(0))
    kw: dict[str, Any] = {} if order is None else {"release_order": order}
    d = Dispatcher(pol, est, default_concurrency=conc, learn=False, **kw)
    for i in range(2):
        d.add_replica(f"r{i}", "m", 0.0)
    return d


def _run(ds: list[Dispatcher], ops: list[Any], tenants: tuple[str, ...]
         ) -> list[list[tuple[float, int, str, int]]]:
    """Drive every dispatcher in ``ds`` through ``ops`` (the same calls, the same feedback, at
    the same times, as long as their decisions agree); the decision log of each."""
    logs: list[list[tuple[float, int, str, int]]] = [[] for _ in ds]
    in_flight: dict[int, str] = {}
    started: set[int] = set()
    next_rep = 2
    now = 0.0

    def each(fn: Any) -> None:
        outs: list[list[Dispatch]] = [fn(d) for d in ds]
        for log, out in zip(logs, outs):
            log.extend((now, x.call.call_id, x.replica_id, x.priority) for x in out)
        for x in outs[0]:
            in_flight[x.call.call_id] = x.replica_id

    for o in ops:
        now += 0.01
        kind = o[0]
        if kind == "submit":
            c = dataclasses.replace(
                make_call(n_in=o[1], n_out=o[2], now=now, deadline=now + o[3],
                          ttft_critical=o[4]), tenant=tenants[o[5] % len(tenants)])
            each(lambda d: d.submit(c, now).dispatches)
        elif kind in ("first", "finish", "fail") and in_flight:
            cid = sorted(in_flight)[o[1] % len(in_flight)]
            if kind == "first":
                if cid not in started:
                    started.add(cid)
                    each(lambda d: d.on_first_token(cid, now))
                continue
            rid = in_flight.pop(cid)
            each(lambda d: d.on_finish(cid, now) if kind == "finish" else d.on_failure(cid, now))
            for d in ds:
                if rid in d.pool and d.pool.get(rid).phase is ReplicaPhase.DRAINING \
                        and d.is_drained(rid):
                    assert d.remove_replica(rid) == []
        elif kind == "drain":
            ready = [r.replica_id for r in ds[0].pool if r.phase is ReplicaPhase.READY]
            if len(ready) > 1:
                rid = ready[o[1] % len(ready)]
                each(lambda d: d.drain(rid, now))
                for d in ds:
                    if d.is_drained(rid):
                        assert d.remove_replica(rid) == []
        elif kind == "add":
            each(lambda d: d.add_replica(f"r{next_rep}", "m", now, ready=o[1]))
            next_rep += 1
        elif kind == "ready":
            starting = [r.replica_id for r in ds[0].pool if r.phase is ReplicaPhase.STARTING]
            if starting:
                each(lambda d: d.mark_ready(starting[o[1] % len(starting)], now))
        if any(log != logs[0] for log in logs):
            break   # diverged: the caller compares the logs
    # finish everything still in flight (releasing what is queued)
    for r in list(ds[0].pool):
        if r.phase is ReplicaPhase.STARTING:
            each(lambda d: d.mark_ready(r.replica_id, now))
    guard = 0
    while in_flight and all(log == logs[0] for log in logs):
        guard += 1
        assert guard < 10_000
        cid = min(in_flight)
        in_flight.pop(cid)
        each(lambda d: d.on_finish(cid, now))
    return logs


@settings(max_examples=60, deadline=None)
@given(policy=st.sampled_from(POLICIES), ops=st.lists(op, max_size=120),
       conc=st.integers(1, 3), tenant=st.sampled_from(["", "acme"]),
       weight=st.sampled_from([1.0, 3.0]), share=st.sampled_from([0.0, 0.5]))
def test_one_tenant_releases_in_todays_order(policy: str, ops: list[Any], conc: int,
                                             tenant: str, weight: float, share: float) -> None:
    """Without fairness, and with fair shares over a single tenant (whatever its weight and
    guarantee), every decision -- time, call, replica, priority -- is the same."""
    fair = FairShare(FairnessPolicy({tenant: TenantShare(weight, share)}))
    today, with_fair = _run([_dispatcher(policy, conc, None), _dispatcher(policy, conc, fair)],
                            ops, (tenant,))
    assert with_fair == today


@settings(max_examples=60, deadline=None)
@given(policy=st.sampled_from(POLICIES), ops=st.lists(op, max_size=120),
       conc=st.integers(1, 3))
def test_several_tenants_lose_no_call_and_balance(policy: str, ops: list[Any],
                                                  conc: int) -> None:
    """With three tenants (different weights, one guaranteed), every call is released once and
    ends; at the end nothing is backlogged or in flight in the fair-share books."""
    fair = FairShare(FairnessPolicy({"a": TenantShare(1.0), "b": TenantShare(2.0, 0.3)}))
    d = _dispatcher(policy, conc, fair)
    (log,) = _run([d], ops, ("a", "b", "c"))
    released = [cid for _, cid, _, _ in log]
    assert len(released) == len(set(released)), "a call was released twice"
    assert d.num_tracked() == 0
    for t in ("a", "b", "c"):
        assert fair.in_flight("m", t) == 0
    assert dict(fair.backlogged("m")) == {}
