"""Fault injection in the emulated engine (:mod:`cato.engine.faults`): spec parsing and seeded
draws in-process, then every fault kind against real ``cato engine`` processes started the way
the gateway starts them (:mod:`cato.serving.launcher`), checked with httpx and raw sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cato.edge.procs import free_port, wait_ready
from cato.engine.faults import FAULT_KINDS, FaultPlan, FaultSpecError, parse_fault_spec, parse_fault_specs
from cato.engine.server import EngineConfig
from cato.serving.launcher import EngineProcess, emulated_engine_argv, start_process

MODEL = "cato-emulated"
HANG_READ_S = 1.0   # a client's read timeout when nothing should come
COMPLETION = {"model": MODEL, "prompt": "def f(x):", "max_tokens": 8}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "write a sort"}], "max_tokens": 8}


# ==================================================================================== unit
@pytest.mark.parametrize("spec,expected", [
    ("hang:0.1", ("hang", 0.1)), ("close-mid:1", ("close-mid", 1.0)), ("hang-mid", ("hang-mid", 1.0)),
    ("garbage:0", ("garbage", 0.0)), (" error : 0.25 ", ("error", 0.25)), ("close-before:1e-3", ("close-before", 0.001)),
])
def test_parse_fault_spec(spec: str, expected: tuple[str, float]) -> None:
    assert parse_fault_spec(spec) == expected


@pytest.mark.parametrize("spec,bad", [
    ("hangg:0.1", "'hangg'"), ("Hang", "'Hang'"), ("", "''"), (":0.5", "''"), ("hang:1.5", "1.5"),
    ("hang:-0.1", "-0.1"), ("hang:x", "'x'"), ("hang:nan", "nan"), ("hang:0.1:2", "'0.1:2'"),
])
def test_parse_fault_spec_rejects_naming_the_value_and_the_kinds(spec: str, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_fault_spec(spec)
    msg = str(info.value)
    assert repr(spec) in msg and bad in msg
    assert all(k in msg for k in FAULT_KINDS), msg


def test_parse_fault_specs_combines_and_checks_the_sum() -> None:
    assert parse_fault_specs(["hang:0.25", "error:0.5", "close-mid:0.25"]) == {"hang": 0.25, "error": 0.5,
                                                                               "close-mid": 0.25}
    assert parse_fault_specs([]) == {}
    with pytest.raises(ValueError, match=r"'hang' given twice"):
        parse_fault_specs(["hang:0.1", "hang:0.2"])
    with pytest.raises(ValueError, match=r"hang:0.6, error:0.5.*sum to 1.1"):
        parse_fault_specs(["hang:0.6", "error:0.5"])


def test_draw_frequencies_follow_the_probabilities() -> None:
    probs = {"error": 0.1, "garbage": 0.05, "close-before": 0.15, "close-mid": 0.2, "hang": 0.05,
             "hang-mid": 0.1}
    plan = FaultPlan(probs, seed=42)
    n = 40_000
    counts: dict[str | None, int] = {}
    for _ in range(n):
        k = plan.draw()
        counts[k] = counts.get(k, 0) + 1
    for kind, p in probs.items():   # binomial sd <= 0.0025 here: 0.012 is > 4.5 sd
        assert abs(counts.get(kind, 0) / n - p) < 0.012, (kind, counts)
    assert abs(counts.get(None, 0) / n - (1 - sum(probs.values()))) < 0.012, counts


def test_draws_are_seeded_and_copy_restarts_them() -> None:
    a, b, c = (FaultPlan({"hang": 0.3, "error": 0.3}, seed=s) for s in (5, 5, 6))
    seq_a = [a.draw() for _ in range(200)]
    assert seq_a == [b.draw() for _ in range(200)]
    assert seq_a != [c.draw() for _ in range(200)]
    fresh = a.copy()
    assert [fresh.draw() for _ in range(200)] == seq_a
    assert set(seq_a) == {"hang", "error", None}


def test_certain_and_empty_plans() -> None:
    always = FaultPlan({"close-mid": 0.5, "hang": 0.5}, seed=1)   # sums to 1: every request
    assert all(always.draw() is not None for _ in range(2000))
    one = FaultPlan.from_specs(["garbage"])
    assert one.probabilities == {"garbage": 1.0} and all(one.draw() == "garbage" for _ in range(100))
    none = FaultPlan()
    assert not none.active and not none.has_faults and none.draw() is None
    assert FaultPlan(down=True).active and not FaultPlan(down=True).has_faults
    zero = FaultPlan({"hang": 0.0})
    assert not zero.active and zero.probabilities == {}
    assert not EngineConfig().faults.active and EngineConfig().fault_control is False


def test_plan_json_round_trip_and_value_semantics() -> None:
    plan = FaultPlan({"hang": 0.1, "error": 0.2}, down=True, seed=9, mid_tokens=5)
    body = plan.to_json()
    assert body == {"faults": {"error": 0.2, "hang": 0.1}, "down": True, "mid_tokens": 5, "seed": 9}
    assert list(body["faults"]) == ["error", "hang"]   # canonical order
    back = FaultPlan.from_json(json.loads(json.dumps(body)))
    assert back == plan and hash(back) == hash(plan)
    assert FaultPlan.from_json({}, seed=4) == FaultPlan(seed=4)
    assert FaultPlan.from_json({"faults": None, "down": False}) == FaultPlan()
    assert plan != FaultPlan({"hang": 0.1, "error": 0.2}, down=True, seed=9, mid_tokens=4)


@pytest.mark.parametrize("body,param", [
    ({"faults": {"hangg": 1}}, "faults.hangg"), ({"faults": {"hang": 2}}, "faults.hang"),
    ({"faults": {"hang": "1"}}, "faults.hang"), ({"faults": {"hang": True}}, "faults.hang"),
    ({"faults": {"hang": 0.7, "error": 0.7}}, "faults"), ({"faults": ["hang"]}, "faults"),
    ({"down": "yes"}, "down"), ({"mid_tokens": 0}, "mid_tokens"), ({"seed": 1.5}, "seed"),
    ({"fault": {"hang": 1}}, "fault"), ([1], None),
])
def test_plan_from_json_names_the_bad_field(body: Any, param: str | None) -> None:
    with pytest.raises(FaultSpecError) as info:
        FaultPlan.from_json(body)
    assert isinstance(info.value, ValueError) and info.value.param == param


# ==================================================================================== processes
HTTP = httpx.Client(trust_env=False, timeout=10.0)   # one client: no TLS set-up per request


@pytest.fixture(scope="module", autouse=True)
def _close_client() -> Iterator[None]:
    yield
    HTTP.close()


@dataclass
class Engines:
    ctl: EngineProcess    # --fault error:0.25 --fault close-mid:0.5 --fault-mid-tokens 2 --fault-control
    cut: EngineProcess    # --fault close-mid (probability 1, 3 tokens), no control


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    logs = tmp_path_factory.mktemp("engine-logs")
    started: list[EngineProcess] = []
    try:
        p1, p2 = free_port(), free_port()
        ctl_argv = emulated_engine_argv(p1, model=MODEL, preset="a100-llama7b", time_dilation=1.0, seed=7)
        ctl_argv += ["--fault", "error:0.25", "--fault", "close-mid:0.5", "--fault-mid-tokens", "2",
                     "--fault-control"]
        cut_argv = emulated_engine_argv(p2, model=MODEL, preset="a100-llama7b", time_dilation=1.0, seed=1)
        cut_argv += ["--fault", "close-mid"]
        for port, argv in ((p1, ctl_argv), (p2, cut_argv)):
            started.append(start_process(argv, f"http://127.0.0.1:{port}", logs))
        wait_ready(started, timeout_s=60)
        yield Engines(*started)
    finally:
        for e in started:
            e.stop()


def _port(e: EngineProcess) -> int:
    return int(e.url.rsplit(":", 1)[1])


def _set_plan(e: EngineProcess, body: dict[str, Any]) -> dict[str, Any]:
    r = HTTP.post(f"{e.url}/fault", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _faults_injected(e: EngineProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(HTTP.get(f"{e.url}/metrics").text):
        for s in fam.samples:
            if s.name == "cato_engine_faults_injected_total":
                out[s.labels["kind"]] = s.value
    return out


def _metric(e: EngineProcess, name: str) -> float:
    for fam in text_string_to_metric_families(HTTP.get(f"{e.url}/metrics").text):
        for s in fam.samples:
            if s.name == name:
                return s.value
    raise AssertionError(f"{name} not exposed")


def _raw(e: EngineProcess, path: str, body: dict[str, Any], read_timeout_s: float = 5.0) -> tuple[bytes, str]:
    """One HTTP/1.1 request over a plain socket: every byte the server sent, and how the read
    ended ("eof", "reset", or "timeout": the connection still open and silent)."""
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    got = b""
    with socket.create_connection(("127.0.0.1", _port(e)), timeout=5.0) as s:
        s.sendall(head + payload)
        s.settimeout(read_timeout_s)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            return got, "timeout"
        except ConnectionResetError:
            return got, "reset"
    return got, "eof"


def _events(r: httpx.Response) -> tuple[list[str], Exception | None]:
    """The SSE payloads of a streamed response, and the error that ended the stream (None: a
    clean end)."""
    events: list[str] = []
    try:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout) as exc:
        return events, exc
    return events, None


def _assert_openai_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code and err["message"]


def _wait_idle(e: EngineProcess) -> None:
    deadline = time.monotonic() + 5.0
    while _metric(e, "vllm:num_requests_running") != 0.0:
        assert time.monotonic() < deadline, "engine request never cancelled"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------ start-up
def test_fault_flags_set_the_plan(engines: Engines) -> None:
    r = HTTP.get(f"{engines.ctl.url}/fault")
    assert r.status_code == 200
    assert r.json() == {"faults": {"error": 0.25, "close-mid": 0.5}, "down": False, "mid_tokens": 2,
                        "seed": 7}


def test_fault_endpoint_is_404_without_fault_control(engines: Engines) -> None:
    assert HTTP.get(f"{engines.cut.url}/fault").status_code == 404
    assert HTTP.post(f"{engines.cut.url}/fault", json={"faults": {}}).status_code == 404


def test_close_mid_from_the_command_line(engines: Engines) -> None:
    """``--fault close-mid``: 3 token events (the default), then the connection ends, no [DONE]."""
    before = _faults_injected(engines.cut)
    with HTTP.stream("POST", f"{engines.cut.url}/v1/completions", json={**COMPLETION, "stream": True}) as r:
        assert r.status_code == 200
        events, ended = _events(r)
    assert isinstance(ended, (httpx.RemoteProtocolError, httpx.ReadError)), ended
    assert "[DONE]" not in events and len(events) == 3
    chunks = [json.loads(ev) for ev in events]
    assert all(c["choices"][0]["finish_reason"] is None and len(c["choices"][0]["text"]) == 4 for c in chunks)
    # at the byte level: headers and 3 chunks, never the chunked body's end
    got, how = _raw(engines.cut, "/v1/completions", {**COMPLETION, "stream": True})
    assert how in ("eof", "reset") and got.startswith(b"HTTP/1.1 200")
    assert got.count(b"data: {") == 3 and b"[DONE]" not in got and not got.endswith(b"0\r\n\r\n")
    after = _faults_injected(engines.cut)
    assert after["close-mid"] - before["close-mid"] == 2 and after["error"] == before["error"]
    _wait_idle(engines.cut)


def test_close_mid_not_streamed_closes_before_any_byte(engines: Engines) -> None:
    got, how = _raw(engines.cut, "/v1/chat/completions", CHAT)
    assert got == b"" and how in ("eof", "reset")


# ------------------------------------------------------------------------------------ each kind
@pytest.mark.parametrize("path,body", [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
@pytest.mark.parametrize("stream", [False, True])
def test_error_is_an_openai_500(engines: Engines, path: str, body: dict[str, Any], stream: bool) -> None:
    _set_plan(engines.ctl, {"faults": {"error": 1.0}})
    r = HTTP.post(engines.ctl.url + path, json={**body, "stream": stream})
    _assert_openai_error(r, 500, "injected_fault")
    assert r.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize("path,body", [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
def test_garbage(engines: Engines, path: str, body: dict[str, Any]) -> None:
    _set_plan(engines.ctl, {"faults": {"garbage": 1.0}})
    with HTTP.stream("POST", engines.ctl.url + path, json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events, ended = _events(r)
    assert ended is None and events and events[0] == "<<garbage>>" and "[DONE]" not in events
    with pytest.raises(ValueError):
        json.loads(events[0])
    r = HTTP.post(engines.ctl.url + path, json=body)   # not streamed: a body that is not JSON
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()


@pytest.mark.parametrize("path,body", [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
@pytest.mark.parametrize("stream", [False, True])
def test_close_before_sends_no_byte(engines: Engines, path: str, body: dict[str, Any], stream: bool) -> None:
    _set_plan(engines.ctl, {"faults": {"close-before": 1.0}})
    got, how = _raw(engines.ctl, path, {**body, "stream": stream})
    assert got == b"" and how in ("eof", "reset")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        HTTP.post(engines.ctl.url + path, json={**body, "stream": stream})


def test_close_mid_chat_with_mid_tokens_from_the_plan(engines: Engines) -> None:
    _set_plan(engines.ctl, {"faults": {"close-mid": 1.0}, "mid_tokens": 2})
    with HTTP.stream("POST", f"{engines.ctl.url}/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        assert r.status_code == 200
        events, ended = _events(r)
    assert isinstance(ended, (httpx.RemoteProtocolError, httpx.ReadError)), ended
    chunks = [json.loads(ev) for ev in events]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len(chunks) == 1 + 2 and all(len(c["choices"][0]["delta"]["content"]) == 4 for c in chunks[1:])
    # fewer tokens asked than the plan's: all of them, the last with its finish_reason, no [DONE]
    got, how = _raw(engines.ctl, "/v1/completions", {**COMPLETION, "max_tokens": 1, "stream": True})
    assert how in ("eof", "reset") and got.count(b"data: {") == 1 and b'"finish_reason":"length"' in got
    assert b"[DONE]" not in got and not got.endswith(b"0\r\n\r\n")
    _wait_idle(engines.ctl)


def test_hang_sends_nothing_and_keeps_the_connection(engines: Engines) -> None:
    before = _faults_injected(engines.ctl)
    _set_plan(engines.ctl, {"faults": {"hang": 1.0}})
    t0 = time.monotonic()
    got, how = _raw(engines.ctl, "/v1/completions", {**COMPLETION, "stream": True}, HANG_READ_S)
    assert got == b"" and how == "timeout" and time.monotonic() - t0 >= HANG_READ_S * 0.9
    with pytest.raises(httpx.ReadTimeout):   # not streamed: no status line either
        HTTP.post(f"{engines.ctl.url}/v1/chat/completions", json=CHAT,
                   timeout=httpx.Timeout(5.0, read=HANG_READ_S))
    assert _faults_injected(engines.ctl)["hang"] - before["hang"] == 2
    assert _metric(engines.ctl, "vllm:num_requests_running") == 0.0   # never reached the engine


def test_hang_mid_streams_tokens_then_goes_silent(engines: Engines) -> None:
    _set_plan(engines.ctl, {"faults": {"hang-mid": 1.0}, "mid_tokens": 2})
    timeout = httpx.Timeout(5.0, read=HANG_READ_S)
    with httpx.Client(timeout=timeout, trust_env=False) as c:
        with c.stream("POST", f"{engines.ctl.url}/v1/completions", json={**COMPLETION, "stream": True}) as r:
            assert r.status_code == 200
            events, ended = _events(r)
        assert isinstance(ended, httpx.ReadTimeout), ended
        assert len(events) == 2 and all(json.loads(ev)["choices"][0]["text"] for ev in events)
        _wait_idle(engines.ctl)   # the engine request was cancelled when the stream stopped
        with pytest.raises(httpx.ReadTimeout):   # not streamed: like hang
            c.post(f"{engines.ctl.url}/v1/completions", json=COMPLETION)


# ------------------------------------------------------------------------------------ control
def test_down_fails_health_and_generation(engines: Engines) -> None:
    before = _faults_injected(engines.ctl)
    assert _set_plan(engines.ctl, {"down": True}) == {"faults": {}, "down": True, "mid_tokens": 3, "seed": 7}
    try:
        assert HTTP.get(f"{engines.ctl.url}/health").status_code == 503
        _assert_openai_error(HTTP.post(f"{engines.ctl.url}/v1/completions", json=COMPLETION), 503, "engine_down")
        r = HTTP.post(f"{engines.ctl.url}/v1/chat/completions", json={**CHAT, "stream": True})
        _assert_openai_error(r, 503, "engine_down")
        assert HTTP.get(f"{engines.ctl.url}/v1/models").status_code == 200
        assert _faults_injected(engines.ctl)["down"] - before["down"] == 2
    finally:
        _set_plan(engines.ctl, {"down": False})
    assert HTTP.get(f"{engines.ctl.url}/health").status_code == 200


def test_runtime_switch_healthy_to_faulty_and_back(engines: Engines) -> None:
    url = engines.ctl.url

    def streamed_ok() -> bool:
        with HTTP.stream("POST", f"{url}/v1/completions", json={**COMPLETION, "stream": True}) as r:
            events, ended = _events(r)
            return r.status_code == 200 and ended is None and events[-1] == "[DONE]" and len(events) == 9

    assert _set_plan(engines.ctl, {}) == {"faults": {}, "down": False, "mid_tokens": 3, "seed": 7}
    assert streamed_ok()
    assert _set_plan(engines.ctl, {"faults": {"error": 1.0}})["faults"] == {"error": 1.0}
    assert HTTP.get(f"{url}/fault").json()["faults"] == {"error": 1.0}
    _assert_openai_error(HTTP.post(f"{url}/v1/completions", json=COMPLETION), 500, "injected_fault")
    _set_plan(engines.ctl, {"faults": {}})
    assert streamed_ok()
    assert HTTP.post(f"{url}/v1/chat/completions", json=CHAT).json()["usage"]["completion_tokens"] == 8


def test_runtime_draws_follow_the_seed(engines: Engines) -> None:
    _set_plan(engines.ctl, {"faults": {"error": 0.5}, "seed": 3})
    expected = FaultPlan({"error": 0.5}, seed=3)
    with httpx.Client(trust_env=False) as c:
        seen = [c.post(f"{engines.ctl.url}/v1/completions", json={**COMPLETION, "max_tokens": 1}).status_code
                for _ in range(12)]
    assert seen == [500 if expected.draw() == "error" else 200 for _ in range(12)]
    assert set(seen) == {200, 500}


@pytest.mark.parametrize("body,param", [
    ({"faults": {"hangg": 1.0}}, "faults.hangg"), ({"faults": {"hang": 1.5}}, "faults.hang"),
    ({"faults": {"hang": 0.6, "error": 0.6}}, "faults"), ({"down": "yes"}, "down"),
    ({"faults": {}, "dwn": True}, "dwn"), ({"mid_tokens": 0}, "mid_tokens"),
])
def test_bad_plan_is_a_400_naming_the_field(engines: Engines, body: dict[str, Any], param: str) -> None:
    plan = _set_plan(engines.ctl, {"faults": {"hang-mid": 0.5}})
    r = HTTP.post(f"{engines.ctl.url}/fault", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert param.split(".")[-1] in r.json()["error"]["message"]
    assert HTTP.get(f"{engines.ctl.url}/fault").json() == plan   # unchanged
    r = HTTP.post(f"{engines.ctl.url}/fault", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_invalid_requests_are_rejected_before_any_draw(engines: Engines) -> None:
    _set_plan(engines.ctl, {"faults": {"hang": 1.0}})
    before = _faults_injected(engines.ctl)
    r = HTTP.post(f"{engines.ctl.url}/v1/completions", json={"max_tokens": 3}, timeout=5.0)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert _faults_injected(engines.ctl) == before


# ------------------------------------------------------------------------------------ bad flags
def test_bad_fault_flag_exits_2_naming_it(tmp_path: Path) -> None:
    port = free_port()
    argv = emulated_engine_argv(port, model=MODEL, preset="a100-llama7b", time_dilation=1.0, seed=0)
    bad = start_process(argv + ["--fault", "hang:0.5", "--fault", "hangg:0.5"], f"http://127.0.0.1:{port}",
                        tmp_path)
    direct = subprocess.Popen([sys.executable, "-m", "cato", "engine", "--port", str(free_port()),
                               "--fault", "close-mid:1.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert bad.proc.wait(timeout=60) == 2
        assert "hangg:0.5" in bad.log_tail() and "close-before" in bad.log_tail()
        _, err = direct.communicate(timeout=60)
        assert direct.returncode == 2 and b"close-mid:1.5" in err
    finally:
        bad.stop()
        if direct.poll() is None:
            direct.kill()
            direct.wait()


def test_shutdown_drops_hanging_connections_silently(tmp_path: Path) -> None:
    """SIGTERM with a ``hang`` in flight: the engine exits at once (not after uvicorn's 5 s
    graceful timeout) and the hanging client gets no byte, not even a 500."""
    port = free_port()
    argv = emulated_engine_argv(port, model=MODEL, preset="a100-llama7b", time_dilation=1.0, seed=0)
    e = start_process(argv + ["--fault", "hang"], f"http://127.0.0.1:{port}", tmp_path)
    try:
        wait_ready([e], timeout_s=60)
        payload = json.dumps({**COMPLETION, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
                      % len(payload) + payload)
            deadline = time.monotonic() + 5.0   # until the request is in (the fault counted)
            while _faults_injected(e).get("hang", 0.0) < 1.0:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            t0 = time.monotonic()
            e.proc.terminate()
            e.proc.wait(timeout=10)
            assert time.monotonic() - t0 < 3.0
            got = b""
            try:
                while chunk := s.recv(65536):
                    got += chunk
            except ConnectionResetError:
                pass
            assert got == b""
        assert "Traceback" not in e.log_tail()
    finally:
        e.stop()
