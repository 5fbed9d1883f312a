"""The dispatcher's side of reliability: ejection and re-admission, retries placed away from
the replica that failed, queue bounds for new work only, and the admission estimate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import make_call, make_dispatcher
from cato.core.replica import ReplicaPhase

POLICIES = ["cato", "cato-plus", "round_robin", "least_outstanding", "pow2", "edf"]


@pytest.mark.parametrize("policy", POLICIES)
def test_ejected_replica_gets_no_work_and_its_queue_moves(policy: str) -> None:
    d = make_dispatcher(policy, replicas=2, concurrency=1)
    calls = [make_call() for _ in range(6)]
    for c in calls:
        d.submit(c, 0.0)
    d.eject("r0", 0.1)
    assert d.pool.get("r0").phase is ReplicaPhase.EJECTED
    assert d.pool.get("r0").num_queued == 0          # queued work re-routed, none lost
    for _ in range(4):
        res = d.submit(make_call(), 0.2)
        assert all(x.replica_id == "r1" for x in res.dispatches)
    assert d.num_tracked() == 10
    d.readmit("r0", 0.3)
    assert d.pool.get("r0").phase is ReplicaPhase.READY


@pytest.mark.parametrize("policy", POLICIES)
def test_retry_avoids_the_replica_that_failed(policy: str) -> None:
    d = make_dispatcher(policy, replicas=3, concurrency=8)
    for i in range(20):
        c = make_call()
        first = d.submit(c, float(i)).dispatches
        rid = first[0].replica_id if first else None
        if rid is None:
            continue
        d.on_failure(c.call_id, float(i))
        again = d.submit(c, float(i), avoid=frozenset({rid})).dispatches
        assert again and again[0].replica_id != rid
        d.on_finish(c.call_id, float(i) + 0.5)


def test_retry_with_every_replica_avoided_still_runs() -> None:
    d = make_dispatcher("cato", replicas=1, concurrency=2)
    c = make_call()
    d.submit(c, 0.0)
    d.on_failure(c.call_id, 0.0)
    assert d.submit(c, 0.0, avoid=frozenset({"r0"})).dispatches


def test_retries_are_not_counted_twice_in_the_scalers_window() -> None:
    d = make_dispatcher("cato", replicas=2, concurrency=2)
    c = make_call()
    d.submit(c, 0.0)
    d.on_failure(c.call_id, 0.0)
    d.submit(c, 0.0, avoid=frozenset({"r0"}))
    assert d.take_window("m").requests == 1


def test_model_queue_bound_sheds_new_work_only() -> None:
    d = make_dispatcher("pow2", replicas=1, concurrency=1)    # late binding: the model queue
    d.max_queue_per_model = 3
    slots = d.pool.get("r0").concurrency_limit
    results = [d.submit(make_call(), 0.0) for _ in range(slots + 5)]
    # `slots` released, 3 queued, then shed
    assert [r.rejected for r in results] == [False] * (slots + 3) + [True] * 2
    assert "queue of model" in results[-1].reason


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["submit", "eject0", "eject1", "readmit0", "readmit1",
                                 "finish"]), min_size=1, max_size=60),
       st.sampled_from(["cato", "round_robin", "pow2"]))
def test_no_accepted_call_is_ever_dropped(ops: list[str], policy: str) -> None:
    """Whatever ejections and re-admissions happen, every accepted call is tracked until it
    finishes: ejecting re-routes queued calls even past the queue bounds."""
    d = make_dispatcher(policy, replicas=2, concurrency=1)
    d.max_queue_per_replica = 2
    d.max_queue_per_model = 2
    accepted: set[int] = set()
    running: list[int] = []
    t = 0.0
    for op in ops:
        t += 0.01
        if op == "submit":
            c = make_call()
            res = d.submit(c, t)
            if not res.rejected:
                accepted.add(c.call_id)
            running += [x.call.call_id for x in res.dispatches]
        elif op.startswith("eject"):
            running += [x.call.call_id for x in d.eject(f"r{op[-1]}", t)]
        elif op.startswith("readmit"):
            running += [x.call.call_id for x in d.readmit(f"r{op[-1]}", t)]
        elif running:
            cid = running.pop(0)
            running += [x.call.call_id for x in d.on_finish(cid, t)]
            accepted.discard(cid)
        assert d.num_tracked() == len(accepted)


def test_best_estimate_grows_with_queued_work() -> None:
    d = make_dispatcher("cato", replicas=1, concurrency=1)
    probe = make_call(deadline=1.0, ttft_critical=True)
    idle = d.best_estimate_s(probe, 0.0)
    for _ in range(10):
        d.submit(make_call(n_in=2000, n_out=400), 0.0)
    busy = d.best_estimate_s(probe, 0.0)
    assert idle is not None and busy is not None and busy > idle * 3


def test_health_monitor_never_ejects_the_last_ready_replica() -> None:
    """HealthMonitor: at most `max_ejected_fraction` of a model's replicas, never the last."""
    from cato.gateway.config import GatewayConfig, Health, ModelConfig, Replica
    from cato.gateway.gateway import Gateway
    cfg = GatewayConfig(models=(ModelConfig(name="m", replicas=tuple(
        Replica(url=f"http://127.0.0.1:{9 + i}") for i in range(4))),),
        health=Health(max_ejected_fraction=0.5, eject_after_errors=1))
    gw = Gateway(cfg)
    gw.apply_profile(None)
    rids = [gw.attach_replica("m", r.url) for r in cfg.models[0].replicas]
    for rid in rids:
        gw.health.call_failed(rid, "HTTP 500")
    phases = [gw.dispatcher.pool.get(r).phase for r in rids]
    assert phases.count(ReplicaPhase.EJECTED) == 2         # half of 4
    assert gw.health.of(rids[-1]).blocked is not None
    one = Gateway(GatewayConfig(models=(ModelConfig(name="m", replicas=(
        Replica(url="http://127.0.0.1:9"),)),)))
    one.apply_profile(None)
    rid = one.attach_replica("m", "http://127.0.0.1:9")
    one.health.call_failed(rid, "refused", unreachable=True)
    assert one.dispatcher.pool.get(rid).phase is ReplicaPhase.READY
    assert "last ready replica" in (one.health.of(rid).blocked or "")


def test_engine_without_health_endpoint_is_probed_at_its_model_list() -> None:
    """llama-cpp-python's server has no /health: a 404 there switches the probe to /v1/models
    (a real HTTP server on loopback), so it is not ejected; a dead one still is."""
    import asyncio

    from aiohttp import web

    from cato.gateway.config import GatewayConfig, Health, ModelConfig, Replica
    from cato.gateway.gateway import Gateway

    async def main() -> tuple[ReplicaPhase, ReplicaPhase, set[str]]:
        app = web.Application()
        app.router.add_get("/v1/models", lambda r: web.json_response({"data": []}))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        urls = [f"http://127.0.0.1:{port}", "http://127.0.0.1:9", f"http://127.0.0.1:{port}"]
        cfg = GatewayConfig(models=(ModelConfig(name="m", replicas=tuple(
            Replica(url=u) for u in urls)),), health=Health(unhealthy_after=2, timeout_s=1))
        gw = Gateway(cfg)
        gw.apply_profile(None)
        rids = [gw.attach_replica("m", u) for u in urls]
        for _ in range(3):
            await gw.health.probe_all()
        out = (gw.dispatcher.pool.get(rids[0]).phase, gw.dispatcher.pool.get(rids[1]).phase,
               set(gw.health._fallback))
        await gw.client.aclose()
        await runner.cleanup()
        return out

    live, dead, fallback = asyncio.run(main())
    assert live is ReplicaPhase.READY and dead is ReplicaPhase.EJECTED
    assert "m-0" in fallback and "m-1" not in fallback
