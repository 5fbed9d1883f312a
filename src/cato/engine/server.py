"""``cato engine``: an OpenAI-compatible HTTP server in front of an :class:`EmulatedEngine`.

It speaks the subset of vLLM's OpenAI API that the gateway and benchmark clients use:

* ``POST /v1/completions`` (``prompt``: a string or a list of one string) and
  ``POST /v1/chat/completions`` (``messages``), streamed (SSE) or not. The engine emits exactly
  ``max_tokens`` tokens (default 16; ``max_completion_tokens`` is accepted for chat), like vLLM
  with ``ignore_eos``, so ``finish_reason`` is always ``"length"``. ``priority`` (vLLM's
  extra field: an integer, default 0, smaller = more urgent) orders the engine's queue and picks
  its preemption victims when the server runs with ``--scheduling-policy priority``
  (:mod:`cato.replica_model.scheduling`); with the default ``fcfs`` it is accepted and ignored, as
  vLLM V1 does (vLLM V0 refused a non-zero one; V1's FCFS queue never reads it); a priority
  that is not an integer is a 400 naming ``priority``. Other unknown fields (``temperature``,
  ...) are accepted and ignored. Prompt tokens are counted with
  :func:`cato.text.count_tokens` (chat: over :func:`cato.text.chat_prompt_text`), generated
  tokens are 4 characters each (:mod:`cato.engine.textgen`).
* Streaming sends one SSE event per token, released as the engine model produces it (see
  :mod:`cato.engine.emulated`); a chat stream's role chunk goes out with the first token, so the
  first bytes after the headers mark the time to first token, as with vLLM. The last token's
  chunk carries ``finish_reason``; with ``stream_options.include_usage`` every chunk has
  ``"usage": null`` and a final chunk with empty ``choices`` carries the usage; then
  ``data: [DONE]``.
* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus text, vLLM metric names,
  label ``model_name``; a registry per app).
* Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for
  malformed JSON, wrong types, missing fields, or a request longer than ``max_model_len``
  (prompt + max_tokens, as vLLM checks it); 404 for a model name other than the served one
  (a request without ``model`` is served).
* A client that disconnects cancels its request in the engine.
* Fault injection (:mod:`cato.engine.faults`), off by default: ``--fault KIND[:PROB]``
  (repeatable; kinds ``error``, ``garbage``, ``close-before``, ``close-mid``, ``hang``,
  ``hang-mid``, ``crash``; PROB defaults to 1) makes each valid generation request draw at most one fault
  from a RNG seeded with ``--seed``; ``--fault-mid-tokens N`` (default 3) is how many tokens the
  ``*-mid`` kinds stream first. ``--fault-control`` adds ``GET /fault`` (the plan as JSON) and
  ``POST /fault`` (``{"faults": {"hang": 1.0}, "down": false}`` replaces it; 400 on bad input),
  else ``/fault`` is 404. A plan marked ``down`` answers 503 on ``/health`` and on every
  generation request. Injected faults are counted in ``cato_engine_faults_injected_total``
  (labels ``model_name``, ``kind``; kind ``down`` counts requests refused while down). With no
  fault configured a request pays two boolean checks, nothing per token.

The modules: :mod:`cato.engine.config` (:class:`EngineConfig`), :mod:`cato.engine.requests`
(parsing, on the shared models of :mod:`cato.edge.protocol`), :mod:`cato.engine.responses`
(bodies and SSE streams), :mod:`cato.engine.fault_responses`, :mod:`cato.engine.metrics`,
:mod:`cato.engine.app` (:func:`create_app`), and this one: serving it (:func:`serve`) and the
``cato engine`` command behind :mod:`cato.cli` (:func:`engine_command`).
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Sequence

import uvicorn

from cato.core.coefficients import preset as preset_coeffs
from cato.engine.app import create_app
from cato.engine.config import DEFAULT_MODEL, DEFAULT_PRESET, EngineConfig
from cato.engine.faults import DEFAULT_MID_TOKENS, FaultPlan

__all__ = ["EngineConfig", "create_app", "engine_command", "serve"]


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on accepted sockets whose proto
    # says TCP, and without it Nagle + delayed ACK hold small SSE writes back by ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, printing one line once it accepts connections."""

    def __init__(self, config: uvicorn.Config, banner: str, closing: asyncio.Event | None = None) -> None:
        super().__init__(config)
        self._banner = banner
        self._closing = closing

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._closing is not None:  # hanging fault responses drop their connections now
            self._closing.set()
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # everything imported so far lives forever: keep it out of the collector's way, so a
        # full collection cannot stall the event loop (and the emulated timing) for long
        gc.collect()
        gc.freeze()
        if self.started:
            print(self._banner, flush=True)


def serve(host: str = "127.0.0.1", port: int = 8000, config: EngineConfig | None = None, *,
          log_level: str = "warning") -> None:
    """Serve the emulated engine until SIGINT or SIGTERM (uvicorn's graceful shutdown: no new
    connections, streams in flight get up to 5 s, then the lifespan shutdown cancels the engine's
    requests). After SIGINT it returns; after SIGTERM uvicorn re-raises the signal, so the process
    ends with it, as any uvicorn app does. ``port=0`` picks a free port; the one line printed
    once listening says which: ``cato engine: serving <model> (<coeffs>, time dilation <d>) on
    http://<host>:<port>``; with faults or fault control, a second line says which (``cato
    engine: faults: hang:0.1 (control at /fault)``)."""
    cfg = config if config is not None else EngineConfig()
    sock = _listening_socket(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    banner = (f"cato engine: serving {cfg.model} ({cfg.coeffs.name}, time dilation "
              f"{cfg.time_dilation:g}) on http://{shown}:{bound}")
    if cfg.faults.active or cfg.fault_control:
        banner += f"\ncato engine: faults: {cfg.faults.describe()}"
        if cfg.fault_control:
            banner += " (control at /fault)"
    # keep idle client connections (a gateway's pool) open: a reconnect costs a request ~1 ms
    app = create_app(cfg)
    uconf = uvicorn.Config(app, log_level=log_level, access_log=False,
                           timeout_graceful_shutdown=5, timeout_keep_alive=75, lifespan="on")
    try:
        _Server(uconf, banner, app.state.closing).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT once it has shut down gracefully
        pass
    finally:
        sock.close()


def engine_command(
    port: int = 8000,
    host: str = "127.0.0.1",
    model: str = DEFAULT_MODEL,
    preset: str = DEFAULT_PRESET,
    time_dilation: float = 1.0,
    seed: int = 0,
    jitter: float = 0.0,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    faults: Sequence[str] = (),
    fault_control: bool = False,
    fault_mid_tokens: int = DEFAULT_MID_TOKENS,
    scheduling_policy: str = "fcfs",
    enable_prefix_caching: bool = False,
) -> None:
    """``cato engine``: serve an emulated engine (coefficient preset ``preset``) on
    ``host:port``. ``faults``: ``KIND[:PROB]`` specs (:mod:`cato.engine.faults`), drawn with
    ``seed``; ``fault_control``: serve ``GET``/``POST /fault``; ``fault_mid_tokens``: tokens the
    ``*-mid`` faults stream first; ``scheduling_policy``: vLLM's ``--scheduling-policy``
    (``fcfs`` or ``priority``); ``enable_prefix_caching``: vLLM's ``--enable-prefix-caching``
    (off by default). Raises ValueError for an unknown preset, a bad fault spec
    (naming it) or another invalid setting, before it listens."""
    plan = FaultPlan.from_specs([faults] if isinstance(faults, str) else faults, seed=seed,
                                mid_tokens=fault_mid_tokens)
    coeffs = preset_coeffs(preset)
    if max_num_seqs is not None:
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        coeffs = coeffs.with_overrides(max_num_seqs=max_num_seqs)
    cfg = EngineConfig(model=model, coeffs=coeffs, time_dilation=time_dilation, seed=seed,
                       jitter_sigma=jitter, max_model_len=max_model_len, faults=plan,
                       fault_control=fault_control, scheduling_policy=scheduling_policy,
                       enable_prefix_caching=enable_prefix_caching)
    serve(host, port, cfg)
