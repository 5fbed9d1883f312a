"""CATO's Algorithm 1 over Ray Serve replica snapshots (no Ray cluster): the ranking, the merge
of reported and local load, the request as the router sees it."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from cato.core.estimator import LatencyEstimator
from cato.core.coefficients import preset
from cato.rayserve.ranking import (CallLoad, ReplicaLoad, RequestInfo, SlackRanker, asgi_headers,
                                   merge_view, replica_state, request_info)

NOW = 1_000.0


def ranker(**kw: object) -> SlackRanker:
    return SlackRanker(model="m", **kw)   # type: ignore[arg-type]


def decoding(rid: str, prompt: int = 200, out: int = 128, since: float = 0.5) -> CallLoad:
    """A call that got its first token ``since`` seconds ago."""
    return CallLoad(rid, "generation", prompt, out, NOW - since - 0.1, NOW - since)


def prefilling(rid: str, prompt: int) -> CallLoad:
    return CallLoad(rid, "summarization", prompt, 40, NOW - 0.01)


def test_slack_beats_queue_length() -> None:
    """A TTFT-critical call avoids the replica with fewer calls whose one call is a huge
    prefill (it would miss its 250 ms), and takes the busier replica that meets it: a
    least-outstanding router would pick A."""
    r = ranker()
    a = ReplicaLoad("A", NOW, 32, (prefilling("a1", 30_000),))
    b = ReplicaLoad("B", NOW, 32, (decoding("b1"), decoding("b2")))
    call = r.make_call(RequestInfo(task="completion"), arrival_s=NOW, now_s=NOW)
    assert call.ttft_critical and call.deadline_s == pytest.approx(NOW + 0.25)
    ranking = r.rank(call, [a, b], NOW)
    assert ranking.order == ["B", "A"]
    assert ranking.decision is not None and ranking.decision.priority == 2
    assert not ranking.decision.predicted_violation
    # the estimates behind it: A's TTFT is seconds, B's within the slack
    assert r.estimate(call, a, NOW).ttft_s > 1.0
    assert r.estimate(call, b, NOW).ttft_s < 0.25


def test_shortest_queue_among_those_that_meet_the_slack() -> None:
    r = ranker()
    busy = ReplicaLoad("busy", NOW, 32, (decoding("x"), decoding("y")))
    idle = ReplicaLoad("idle", NOW, 32, ())
    one = ReplicaLoad("one", NOW, 32, (decoding("z"),))
    call = r.make_call(RequestInfo(task="translation"), arrival_s=NOW, now_s=NOW)
    ranking = r.rank(call, [busy, one, idle], NOW)
    assert ranking.order == ["idle", "one", "busy"]
    assert ranking.decision is not None and ranking.decision.priority == 2


def test_already_late_call_gets_priority_zero() -> None:
    r = ranker()
    call = r.make_call(RequestInfo(task="completion"), arrival_s=NOW - 1.0, now_s=NOW)
    ranking = r.rank(call, [ReplicaLoad("A", NOW, 8, ()), ReplicaLoad("B", NOW, 8, ())], NOW)
    assert ranking.decision is not None
    assert ranking.decision.priority == 0 and ranking.decision.predicted_violation


def test_no_replica_meets_the_slack_gives_priority_one() -> None:
    """A per-request SLA below the isolated TTFT: no replica can meet it."""
    r = ranker()
    call = r.make_call(RequestInfo(task="completion", slo_ttft_ms=5.0, prompt_tokens=2000),
                       arrival_s=NOW, now_s=NOW)
    assert call.deadline_s == pytest.approx(NOW + 0.005)
    a = ReplicaLoad("A", NOW, 8, (decoding("a"),))
    b = ReplicaLoad("B", NOW, 8, ())
    ranking = r.rank(call, [a, b], NOW)
    assert ranking.decision is not None
    assert ranking.decision.priority == 1 and ranking.decision.predicted_violation
    assert ranking.order[0] == "B"        # zero wait, fewest calls first


def test_full_replica_waits_for_a_slot() -> None:
    """At its concurrency limit a replica's estimate includes the wait for a slot."""
    r = ranker()
    full = ReplicaLoad("full", NOW, 2, (decoding("a", out=400), decoding("b", out=400)))
    call = r.make_call(RequestInfo(task="summarization"), arrival_s=NOW, now_s=NOW)
    assert r.estimate(call, full, NOW).wait_s > 0
    assert r.estimate(call, ReplicaLoad("free", NOW, 3, full.calls), NOW).wait_s == 0
    assert r.rank(call, [full, ReplicaLoad("free", NOW, 3, full.calls)], NOW).order[0] == "free"


def test_make_call_uses_hints_and_task_defaults() -> None:
    r = ranker(sla_scale=2.0)
    info = request_info({"x-cato-task": "summarization", "x-cato-prompt-tokens": "900",
                         "x-cato-max-tokens": "64", "x-slo-e2e-ms": "1500"})
    c = r.make_call(info, arrival_s=NOW, now_s=NOW + 0.1)
    assert (c.task, c.num_prompt_tokens, c.expected_output_tokens) == ("summarization", 900, 64)
    assert not c.ttft_critical and c.deadline_s == pytest.approx(NOW + 1.5)
    d = r.make_call(RequestInfo(task="summarization"), arrival_s=NOW, now_s=NOW)
    assert d.deadline_s == pytest.approx(NOW + 6.0)          # 3 s x sla_scale 2
    assert d.num_prompt_tokens == 320                        # the task's typical prompt
    # unknown or missing task: the default task
    assert r.make_call(RequestInfo(task="nope"), arrival_s=NOW, now_s=NOW).task == "generation"
    assert r.sla(RequestInfo(task="completion", slo_ttft_ms=100)) == (r.sla(
        RequestInfo(task="completion"))[0], 0.1)


def test_request_info_ignores_malformed_hints() -> None:
    info = request_info({"x-cato-prompt-tokens": "lots", "x-slo-ttft-ms": "-3",
                         "x-cato-max-tokens": "nan"}, fallback_task="completion")
    assert info == RequestInfo(task="completion")
    assert request_info({"x-cato-task": "translation"}, "completion").task == "translation"


def test_asgi_headers_and_pending_request_headers() -> None:
    scope = {"type": "http", "headers": [(b"X-Cato-Task", b"completion"), (b"host", b"h")]}
    assert asgi_headers(scope) == {"x-cato-task": "completion", "host": "h"}
    pytest.importorskip("ray")
    from ray.serve._private.common import StreamingHTTPRequest

    from cato.rayserve.router import pending_request_headers
    arg = pickle.dumps(StreamingHTTPRequest(scope, proxy_actor_name="proxy"))
    pr = SimpleNamespace(args=[arg], kwargs={})
    assert pending_request_headers(pr)["x-cato-task"] == "completion"   # type: ignore[arg-type, index]
    assert pending_request_headers(SimpleNamespace(args=[b"junk", 3], kwargs={})) is None  # type: ignore[arg-type]


def test_merge_view_prefers_reports_and_forgets_finished_calls() -> None:
    local = {"r1": CallLoad("r1", "completion", 768, 14, NOW - 0.2),
             "r2": CallLoad("r2", "generation", 200, 150, NOW - 0.05, eta_first_s=NOW + 1.0)}
    reported = ReplicaLoad("A", NOW - 0.5, 16, (
        CallLoad("r1", "completion", 1500, 14, NOW - 0.21, NOW - 0.1),   # true length, 1st token
        CallLoad("gone", "completion", 100, 10, NOW - 3.0, NOW - 2.9),  # finished here since
        CallLoad("other", "translation", 300, 72, NOW - 1.0, NOW - 0.8)))  # another router's
    v = merge_view("A", reported, local, {"gone"}, 5, now_s=NOW)
    by = {c.rid: c for c in v.calls}
    assert set(by) == {"r1", "r2", "other"} and v.limit == 16
    assert by["r1"].prompt_tokens == 1500 and by["r1"].first_token_s == NOW - 0.1
    assert by["r1"].started_s == NOW - 0.2                     # the router's own clock
    assert by["r2"].first_token_s is None                      # its first token not due yet
    # a stale report is ignored (but its limit kept); a due ETA counts as a first token
    v2 = merge_view("A", reported, local, set(), 5, now_s=NOW + 60, max_age_s=30)
    by2 = {c.rid: c for c in v2.calls}
    assert set(by2) == {"r1", "r2"} and by2["r2"].first_token_s == NOW + 1.0
    assert merge_view("A", None, {}, set(), 5, now_s=NOW).limit == 5


def test_replica_state_mirrors_the_dispatcher() -> None:
    v = ReplicaLoad("A", NOW, 8, (prefilling("p", 1000), decoding("d", prompt=100, out=50)))
    s = replica_state(v, "m", NOW)
    assert s.num_in_flight == 2 and s.pending_prefill_tokens == 1000
    assert s.ctx_expected_sum == pytest.approx(1000 + 20 + 100 + 25)
    assert s.has_free_slot and not s.is_idle
    est = LatencyEstimator({"m": preset("a100-llama7b")})
    assert est.models() == ["m"]


def test_stats_round_trip() -> None:
    v = ReplicaLoad("A", NOW, 8, (prefilling("p", 1000), decoding("d")), "m", "a100-llama7b", 2.0)
    back = ReplicaLoad.from_stats("A", v.to_stats())
    assert back is not None and back.calls == v.calls and back.limit == 8
    assert back.time_scale == 2.0
    assert ReplicaLoad.from_stats("A", {}) is None
    assert ReplicaLoad.from_stats("A", {"v": 99}) is None
    assert ReplicaLoad.from_stats("A", {"v": 1, "t": "x", "limit": 2}) is None


def test_unknown_default_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown default task"):
        SlackRanker(default_task="nope")


def test_time_scale_slows_the_estimates() -> None:
    call_info = RequestInfo(task="completion")
    fast, slow = ranker(), ranker(time_scale=4.0)
    c1 = fast.make_call(call_info, arrival_s=NOW, now_s=NOW)
    c2 = slow.make_call(call_info, arrival_s=NOW, now_s=NOW)
    e1 = fast.estimate(c1, ReplicaLoad("A", NOW, 8), NOW).ttft_s
    e2 = slow.estimate(c2, ReplicaLoad("A", NOW, 8), NOW).ttft_s
    assert e2 == pytest.approx(4 * e1, rel=1e-6)


def test_payload_of_the_ingress_gives_exact_lengths() -> None:
    from cato.rayserve.ranking import PAYLOAD_KEY, payload_info
    payload = {PAYLOAD_KEY: 1, "task": "summarization", "prompt_tokens": 1234,
               "max_tokens": 77, "headers": {"X-Slo-E2E-Ms": "2500", "x-cato-task": "x"}}
    info = payload_info(payload)
    assert info == RequestInfo("summarization", None, 2500.0, 1234, 77)
    pytest.importorskip("ray")
    from cato.rayserve.router import pending_request_info
    pr = SimpleNamespace(args=[payload], kwargs={},
                         metadata=SimpleNamespace(multiplexed_model_id=""))
    assert pending_request_info(pr) == info   # type: ignore[arg-type]
    # a handle call without CATO's payload: Ray's multiplexed model id names the task
    other = SimpleNamespace(args=[{"a": 1}], kwargs={},
                            metadata=SimpleNamespace(multiplexed_model_id="translation"))
    assert pending_request_info(other).task == "translation"   # type: ignore[arg-type]


def test_batch_cap_and_time_scale_make_the_latency_model() -> None:
    from cato.rayserve.ranking import engine_coefficients
    c = engine_coefficients("a100-llama7b", 2.0, 4)
    base = preset("a100-llama7b")
    assert c.max_num_seqs == 4 and c.t_floor_ms == pytest.approx(2 * base.t_floor_ms)
    assert engine_coefficients("a100-llama7b") == base
    with pytest.raises(ValueError):
        engine_coefficients("a100-llama7b", 0.0)
    # a batch cap below the concurrency limit makes a full engine queue calls: a wait
    r = ranker(max_num_seqs=2)
    call = r.make_call(RequestInfo(task="summarization"), arrival_s=NOW, now_s=NOW)
    busy = ReplicaLoad("A", NOW, 32, (decoding("a", out=300), decoding("b", out=300)))
    assert r.estimate(call, busy, NOW).wait_s > 0
    assert ranker().estimate(call, busy, NOW).wait_s == 0
