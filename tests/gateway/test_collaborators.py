"""The gateway's collaborators stand alone: the health rules are pure, and the one mapping of
domain outcomes to HTTP gives every status, error type, code and ``Retry-After`` the clients
have always seen."""

from __future__ import annotations

import pytest

from cato.core.replica import ReplicaPhase
from cato.gateway.config import Health
from cato.gateway.health import HealthRules, ReplicaHealth
from cato.gateway.http_errors import api_error, stream_error_event
from cato.gateway.outcomes import (CallOutcome, CallTimeout, EngineFailed, EngineRejected,
                                   GatewayBusy, NoHealthyReplica, NotReady, QueueFull, Refused,
                                   ShuttingDown, TaskQueueFull)
from cato.serving.engine_client import CallAborted, EngineError

READY, EJECTED = ReplicaPhase.READY, ReplicaPhase.EJECTED


def test_probe_rules_eject_after_failures_and_readmit_after_backoff() -> None:
    rules = HealthRules(Health(unhealthy_after=2, healthy_after=2, interval_s=1.0))
    h = ReplicaHealth()
    assert rules.probe_failed(h, None, READY) is None
    ej = rules.probe_failed(h, 500, READY, exited="engine exited with signal 9")
    assert ej is not None and ej.streaming_too
    assert ej.reason == "2 failed health probes (engine exited with signal 9)"
    rules.ejected(h, now=100.0)
    assert not rules.probe_succeeded(h, EJECTED, now=100.5)
    assert not rules.probe_succeeded(h, EJECTED, now=101.0)       # back-off: 1 s x 2
    assert rules.probe_succeeded(h, EJECTED, now=102.0)
    rules.readmitted(h)
    assert h.ejected_at is None and h.probe_failures == 0 and h.call_errors == 0


def test_call_failure_rules() -> None:
    rules = HealthRules(Health(eject_after_errors=2))
    h = ReplicaHealth()
    assert rules.call_failed(h, "HTTP 500", READY) is None
    ej = rules.call_failed(h, "HTTP 500", READY)
    assert ej is not None and not ej.streaming_too
    assert rules.call_failed(ReplicaHealth(), "refused", EJECTED, unreachable=True) is None
    ej = rules.call_failed(ReplicaHealth(), "refused", READY, unreachable=True)
    assert ej is not None and ej.streaming_too and ej.reason == "engine unreachable: refused"


def test_ejection_is_blocked_for_the_last_ready_replica_and_past_the_fraction() -> None:
    rules = HealthRules(Health(max_ejected_fraction=0.5))
    assert rules.ejection_blocked("m", [READY, READY, READY, READY]) is None
    assert "ejected already" in (rules.ejection_blocked("m", [EJECTED, EJECTED, READY, READY])
                                 or "")
    assert "last ready replica" in (rules.ejection_blocked("m", [READY, EJECTED]) or "")


@pytest.mark.parametrize("outcome, status, type_, code, retry_after", [
    (NotReady("starting"), 503, "service_unavailable", "not_ready", "1"),
    (ShuttingDown("bye"), 503, "service_unavailable", "shutting_down", "1"),
    (NoHealthyReplica("none", model="m", retry_after_s=2.0), 503, "service_unavailable",
     "no_healthy_replica", "2"),
    (NoHealthyReplica("none", model="m", retry_after_s=0.2), 503, "service_unavailable",
     "no_healthy_replica", "1"),
    (QueueFull("shed", retry_after_s=7), 429, "rate_limit_error", "queue_full", "7"),
    (TaskQueueFull("shed", retry_after_s=3), 429, "rate_limit_error", "task_queue_full", "3"),
    (GatewayBusy("busy", retry_after_s=1.0), 429, "rate_limit_error", "gateway_busy", "1"),
    (Refused("no", retry_after_s=60), 429, "rate_limit_error", "sla_unattainable", "60"),
    (CallTimeout("late"), 504, "timeout_error", "sla_timeout", None),
    (EngineFailed("broke"), 502, "engine_error", "engine_failed", None),
    (EngineRejected("bad", status=422), 422, "invalid_request_error", "engine_rejected", None),
])
def test_each_outcome_maps_to_its_http_answer(outcome: CallOutcome, status: int, type_: str,
                                              code: str, retry_after: str | None) -> None:
    e = api_error(outcome)
    assert (e.status, e.type, e.code, e.param, e.message) == (status, type_, code, None,
                                                              outcome.message)
    assert e.headers.get("Retry-After") == retry_after


def test_engine_failures_after_the_start_map_to_502_or_504() -> None:
    e = api_error(EngineError("cut"))
    assert (e.status, e.type, e.code) == (502, "engine_error", "engine_failed")
    e = api_error(CallAborted("timeout", "far past its SLA"))
    assert (e.status, e.type, e.code) == (504, "engine_error", "sla_timeout")
    assert stream_error_event(CallAborted("shutdown", "bye")) == {"error": {
        "message": "bye", "type": "engine_error", "param": None, "code": "shutting_down"}}
    assert stream_error_event(QueueFull("shed", retry_after_s=1)) == {"error": {
        "message": "shed", "type": "engine_error", "param": None, "code": "queue_full"}}
