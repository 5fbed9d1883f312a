"""A crashed engine is named as such: ``engine <name> exited with signal SIGSEGV`` with the last
lines of its log, by the launcher, ``cato profile``, ``cato serve`` (start-up and calls) and the
test harness, never as the payload error a client happened to see. The crashes are real: an
emulated engine (``cato engine --fault crash``) that kills itself with SIGSEGV mid-response."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from asgi_app import gateway_app, in_process
from conftest import SMALL_INDEX_ROOT, launch_gateway  # type: ignore[import-not-found]
from cato.edge.procs import free_port, wait_ready
from cato.exits import EngineExited, describe_exit, last_lines
from cato.serving.launcher import EngineProcess, emulated_engine_argv, start_process

CRASH_LINE = "injected fault 'crash': segmentation fault"


def test_describe_exit_names_signals_and_codes() -> None:
    assert describe_exit(-int(signal.SIGSEGV)) == "signal SIGSEGV"
    assert describe_exit(-int(signal.SIGKILL)) == "signal SIGKILL"
    assert describe_exit(-99) == "signal 99"
    assert describe_exit(0) == "code 0"
    assert describe_exit(3) == "code 3"


def test_engine_exited_message_has_the_cause_and_the_last_lines() -> None:
    log = "\n".join(f"line {i}" for i in range(100)) + "\n\n"
    e = EngineExited("m (http://127.0.0.1:1)", -11, log, when="during a probe")
    first = str(e).splitlines()[0]
    assert first.startswith("engine m (http://127.0.0.1:1) exited with signal SIGSEGV "
                            "during a probe")
    assert "line 99" in str(e) and "line 80" in str(e) and "line 79" not in str(e)
    assert e.headline == "engine m (http://127.0.0.1:1) exited with signal SIGSEGV during a probe"
    assert "wrote no output" in str(EngineExited("x", 1, ""))
    assert last_lines("a\n\nb\n", 1) == "b"


def test_launcher_names_a_process_killed_by_sigsegv(tmp_path: Path) -> None:
    script = ("import os, signal, sys; print('loading model weights', flush=True); "
              "os.kill(os.getpid(), signal.SIGSEGV)")
    proc = start_process([sys.executable, "-c", script], "http://127.0.0.1:9",
                         log_path=tmp_path / "e.log", model="crashy")
    with pytest.raises(EngineExited) as info:
        wait_ready([proc], timeout_s=30)
    msg = str(info.value)
    assert "engine crashy (http://127.0.0.1:9) exited with signal SIGSEGV before it was ready" \
        in msg
    assert "loading model weights" in msg
    assert info.value.returncode == -int(signal.SIGSEGV)


def _crashing_engine(tmp_path: Path) -> EngineProcess:
    """An emulated engine whose every generation request kills it with SIGSEGV."""
    port = free_port()
    return start_process(emulated_engine_argv(port, model="m", preset="a100-llama7b",
                                              time_dilation=1.0, seed=0, faults=("crash",)),
                         f"http://127.0.0.1:{port}", log_path=tmp_path / "e.log", model="m")


def test_emulated_engine_crash_fault_is_a_real_sigsegv(tmp_path: Path) -> None:
    engine = _crashing_engine(tmp_path)
    try:
        wait_ready([engine])
        with pytest.raises(httpx.HTTPError):
            with httpx.Client(timeout=30, trust_env=False) as c:
                c.post(engine.url + "/v1/completions",
                       json={"model": "m", "prompt": "def f():", "max_tokens": 4}).json()
        engine.proc.wait(30)
        exited = engine.exited()
        assert exited is not None and exited.returncode == -int(signal.SIGSEGV)
        assert CRASH_LINE in str(exited)
    finally:
        engine.stop()


def _crash_config(tmp_path: Path, *, profile_at_startup: bool, replicas: int = 1) -> Path:
    config = {
        "models": [{"name": "m", "coefficients": "a100-llama7b",
                    "emulated": {"replicas": replicas, "faults": ["crash"]}}],
        "routing": {"policy": "cato"}, "profile_probes": 1,
        "profile_at_startup": profile_at_startup, "code_index_root": SMALL_INDEX_ROOT,
        "health": {"interval_s": 60.0},     # the call, not a probe, meets the crash first
    }
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cato_profile_names_the_crashed_engine(tmp_path: Path) -> None:
    cfg = _crash_config(tmp_path, profile_at_startup=True)
    proc = subprocess.run([sys.executable, "-m", "cato", "profile", "--config", str(cfg),
                           "--probes", "1", "--out", str(tmp_path / "p.json")],
                          capture_output=True, text=True, timeout=180)
    out = " ".join((proc.stdout + proc.stderr).split())    # rich wraps long lines
    assert proc.returncode != 0, out
    assert "exited with signal SIGSEGV during a profiling probe" in out, out
    assert CRASH_LINE in out, out
    assert "payload" not in out.lower(), out


def test_cato_serve_start_up_names_the_crashed_engine(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as info:
        launch_gateway(tmp_path, yaml.safe_load(
            _crash_config(tmp_path, profile_at_startup=True).read_text()), [])
    msg = str(info.value)
    assert "exited with signal SIGSEGV during a profiling probe" in msg, msg
    log = (tmp_path / "gateway.log").read_text()
    assert "start-up failed: engine m (http://127.0.0.1:" in log
    assert CRASH_LINE in log


def test_a_call_on_a_crashed_engine_names_the_crash(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The gateway (in process, ``asgi_app``: the app ``cato serve`` runs) starts a real
    engine that crashes on the call: the client's error and the gateway's log name the crash."""
    config = yaml.safe_load(_crash_config(tmp_path, profile_at_startup=False).read_text())

    async def body() -> httpx.Response:
        async with in_process(gateway_app(config, tmp_path), timeout_s=60) as c:
            return await c.post("/v1/completions",
                                json={"model": "completion", "prompt": "def f():",
                                      "max_tokens": 4})
    with caplog.at_level(logging.INFO, logger="cato.gateway"):
        r = asyncio.run(body())
    assert r.status_code in (502, 503), r.text
    err = r.json()["error"]
    assert "exited with signal SIGSEGV" in err["message"], err
    assert "payload" not in err["message"].lower(), err
    log = caplog.text
    assert "exited with signal SIGSEGV" in log and CRASH_LINE in log, log[-3000:]


def test_harness_names_an_engine_it_started_that_crashed(tmp_path: Path) -> None:
    """An engine the test started (not the gateway) crashes during the gateway's start-up
    profile: launch_gateway raises that engine's exit, not the gateway's symptom."""
    engine = _crashing_engine(tmp_path)
    try:
        wait_ready([engine])
        config = {"models": [{"name": "m", "coefficients": "a100-llama7b",
                              "replicas": [{"url": engine.url}]}],
                  "profile_probes": 1, "code_index_root": SMALL_INDEX_ROOT}
        with pytest.raises(EngineExited) as info:
            launch_gateway(tmp_path, config, [engine])
        assert info.value.headline.startswith(f"engine m ({engine.url}) exited with signal "
                                              "SIGSEGV while the gateway started")
        assert CRASH_LINE in str(info.value)
    finally:
        engine.stop()
