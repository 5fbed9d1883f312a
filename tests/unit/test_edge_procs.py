"""Process supervision (:mod:`cato.edge.procs`) with real child processes: a free port, the
start (own session, output to a log or an in-memory tail), readiness over HTTP, a crash named
with the child's last words, the stop (SIGTERM, then SIGKILL after the grace period) and the
child dying with its parent (Linux ``PR_SET_PDEATHSIG`` and the portable watcher)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cato.edge.procs import (_PARENT_DEATH_SHIM, ChildProcess, _shim_argv, free_port, spawn,
                             start_child, stop_process, wait_ready)
from cato.exits import EngineExited

LINUX = sys.platform.startswith("linux")

#: A tiny HTTP server: 200 on every GET once it listens (after ``delay`` seconds).
SERVER = ("import http.server, sys, time\n"
          "time.sleep(float(sys.argv[2]))\n"
          "class H(http.server.BaseHTTPRequestHandler):\n"
          "    def do_GET(self):\n"
          "        self.send_response(200); self.end_headers(); self.wfile.write(b'{}')\n"
          "    def log_message(self, *a): pass\n"
          "print('listening', flush=True)\n"
          "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_start_wait_ready_and_stop(tmp_path: Path) -> None:
    port = free_port()
    child = start_child([sys.executable, "-c", SERVER, str(port), "0.3"],
                        f"http://127.0.0.1:{port}", log_path=tmp_path / "logs" / "s.log",
                        role="server")
    try:
        assert child.alive() and child.tail is None
        assert os.getsid(child.proc.pid) == child.proc.pid           # its own session
        waited = wait_ready([child], timeout_s=30, path="/")
        assert 0.2 < waited < 30
        assert "listening" in child.log_tail()
    finally:
        child.stop(timeout_s=5)
    assert not child.alive() and child.proc.returncode == -signal.SIGTERM
    assert child.exited() is not None


def test_spawn_hands_the_log_file_to_the_child_only(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd")) if LINUX else 0
    proc = spawn([sys.executable, "-c", "print('hi')"], log_path=tmp_path / "x.log",
                 env={"PATH": os.environ.get("PATH", "")})
    assert proc.wait(30) == 0 and proc.stdout is None
    if LINUX:
        assert len(os.listdir("/proc/self/fd")) == before
    assert (tmp_path / "x.log").read_text() == "hi\n"


def test_a_crash_before_ready_is_named_with_its_last_words() -> None:
    script = "import sys; print('loading weights', flush=True); sys.exit(3)"
    child = start_child([sys.executable, "-c", script], "http://127.0.0.1:9", role="gateway")
    assert child.tail is not None                                 # no log: kept in memory
    with pytest.raises(EngineExited) as info:
        wait_ready([child], timeout_s=30)
    msg = str(info.value)
    assert msg.startswith("gateway http://127.0.0.1:9 exited with code 3 before it was ready (")
    assert "loading weights" in msg and info.value.returncode == 3


def test_not_ready_in_time_is_a_runtime_error() -> None:
    port = free_port()
    child = start_child([sys.executable, "-c", SERVER, str(port), "60"],
                        f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(RuntimeError, match=r"not ready after 1 s: \['http://127"):
            wait_ready([child], timeout_s=1.0)
    finally:
        child.stop(timeout_s=5)


def test_wait_ready_accepts_a_custom_check() -> None:
    port = free_port()
    child = start_child([sys.executable, "-c", SERVER, str(port), "0"],
                        f"http://127.0.0.1:{port}")
    try:
        wait_ready([child], 30, "/v1/models", ready=lambda r: r.json() == {})
        with pytest.raises(RuntimeError, match="not ready"):
            wait_ready([child], 0.3, "/", ready=lambda r: False)
    finally:
        child.stop()


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace_period() -> None:
    script = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('up', flush=True); time.sleep(60)")
    proc = spawn([sys.executable, "-c", script])
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    t0 = time.monotonic()
    stop_process(proc, timeout_s=0.5)
    assert proc.returncode == -signal.SIGKILL and 0.4 < time.monotonic() - t0 < 10
    stop_process(proc)                                            # already gone: no error


def _orphan_check(tmp_path: Path, spawn_line: str, *, dies: bool = True) -> None:
    """A parent starts a sleeping child as ``spawn_line`` does and is SIGKILLed: the child
    (the program itself: the shim exec'd it) must die too (or, ``dies`` False, must not)."""
    script = ("import signal, subprocess, sys, time\n"
              "from cato.edge.procs import _shim_argv, spawn\n"
              "argv = [sys.executable, '-c', 'import time; time.sleep(120)', 'orphan-check']\n"
              f"{spawn_line}\n"
              "print(p.pid, flush=True)\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:    # the shim has become the program (same pid)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().endswith(b"\0orphan-check\0"):
                    break
            time.sleep(0.05)
        else:
            pytest.fail("the child never became the program")
        assert _alive(pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        if dies:
            assert _gone(pid, 15), "the child outlived the process that started it"
        else:
            assert not _gone(pid, 1.0)
            os.kill(pid, signal.SIGKILL)
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(not LINUX, reason="checks /proc")
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_child_dies_with_its_parent(tmp_path: Path, sig: str) -> None:
    _orphan_check(tmp_path, f"p = spawn(argv, die_with_parent=signal.{sig}, keep_output=False)")


@pytest.mark.skipif(not LINUX, reason="checks /proc")
def test_without_die_with_parent_the_child_outlives_it(tmp_path: Path) -> None:
    """The control: the check above can fail."""
    _orphan_check(tmp_path, "p = spawn(argv, keep_output=False)", dies=False)


@pytest.mark.skipif(not LINUX, reason="checks /proc")
def test_child_dies_with_its_parent_through_the_portable_watcher(tmp_path: Path) -> None:
    _orphan_check(tmp_path, "p = subprocess.Popen(_shim_argv(argv, signal.SIGTERM, 'watch'), "
                            "start_new_session=True)")


def test_a_child_stopped_normally_takes_its_watcher_along() -> None:
    proc = subprocess.Popen(_shim_argv([sys.executable, "-c", "import time; time.sleep(60)"],
                                       signal.SIGTERM, "watch"), start_new_session=True)
    try:
        time.sleep(0.5)
        stop_process(proc, timeout_s=5)
        assert proc.returncode == -signal.SIGTERM
        deadline = time.monotonic() + 5      # the watcher (same process group) leaves too
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the watcher outlived its child")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_shim_runs_nothing_when_the_parent_is_already_gone(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = [sys.executable, "-S", "-c", _PARENT_DEATH_SHIM, "1", str(int(signal.SIGKILL)),
            "auto", sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    assert subprocess.run(argv, timeout=30).returncode == 0     # its parent is not pid 1
    assert not marker.exists()


def test_a_program_that_cannot_run_is_named(tmp_path: Path) -> None:
    child = ChildProcess("http://127.0.0.1:9", ["/nonexistent/engine"],
                         spawn(["/nonexistent/engine"], log_path=tmp_path / "e.log",
                               die_with_parent=signal.SIGKILL),
                         tmp_path / "e.log", role="engine")
    with pytest.raises(EngineExited, match="exited with code 127 before it was ready") as info:
        wait_ready([child], timeout_s=30)
    assert "cannot run /nonexistent/engine" in str(info.value)
