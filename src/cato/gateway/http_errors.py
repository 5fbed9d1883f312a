"""The one place where the gateway's outcomes become HTTP: status codes, OpenAI-style error
bodies (:class:`~cato.edge.errors.ApiError`) and ``Retry-After``.

* a :class:`~cato.gateway.outcomes.CallOutcome` (the call path could not serve a call:
  shed, refused, timed out, no healthy replica, engine failed, ...) maps by its class
  (:func:`outcome_error`);
* an :class:`~cato.serving.engine_client.EngineError` once the engine had begun answering maps
  to 504 (``sla_timeout``) or 502, of type ``engine_error`` (:func:`engine_error`); in a stream
  that has begun it is an error event instead (:func:`stream_error_event`);
* :func:`exception_handlers` are the Starlette app's handlers: an outcome, an ``ApiError``
  (request validation, auth), Starlette's own HTTP errors, and anything else (a 500, logged).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from cato.edge.errors import ApiError, ErrorBody, stream_error
from cato.gateway.outcomes import (CallOutcome, CallTimeout, EngineFailed, EngineRejected,
                                   GatewayBusy, NoHealthyReplica, NotReady, QueueFull, Refused,
                                   Shed, ShuttingDown, TaskQueueFull, Unavailable)
from cato.serving.engine_client import EngineError

log = logging.getLogger("cato.gateway")

#: error code of a 429 refusing a request at arrival as unable to meet its SLA under the
#: current load (admission control, or the routing policy's early rejection); a per-request
#: SLA below what the task takes on an idle replica is a 400 ``slo_infeasible`` instead
SLA_UNATTAINABLE = "sla_unattainable"

#: (status, type, code) of each outcome; a subclass not named here takes its base's
_SHAPES: dict[type[CallOutcome], tuple[int, str, str | None]] = {
    NotReady: (503, "service_unavailable", "not_ready"),
    ShuttingDown: (503, "service_unavailable", "shutting_down"),
    NoHealthyReplica: (503, "service_unavailable", "no_healthy_replica"),
    Unavailable: (503, "service_unavailable", None),
    QueueFull: (429, "rate_limit_error", "queue_full"),
    TaskQueueFull: (429, "rate_limit_error", "task_queue_full"),
    GatewayBusy: (429, "rate_limit_error", "gateway_busy"),
    Shed: (429, "rate_limit_error", "queue_full"),
    Refused: (429, "rate_limit_error", SLA_UNATTAINABLE),
    CallTimeout: (504, "timeout_error", "sla_timeout"),
    EngineFailed: (502, "engine_error", "engine_failed"),
    EngineRejected: (400, "invalid_request_error", "engine_rejected"),
    CallOutcome: (500, "server_error", None),
}


def outcome_error(e: CallOutcome) -> ApiError:
    """The client's answer to an outcome of the call path."""
    status, type_, code = next(_SHAPES[c] for c in type(e).__mro__ if c in _SHAPES)
    if isinstance(e, EngineRejected):
        status = e.status        # the engine's own 4xx
    headers = None if e.retry_after_s is None else \
        {"Retry-After": str(max(1, round(e.retry_after_s)))}
    return ApiError(status, e.message, type=type_, code=code, headers=headers)


def engine_error(e: EngineError) -> ApiError:
    """An engine failure once its answer had begun (the response not yet sent to the client)."""
    return ApiError(504 if e.code == "sla_timeout" else 502, str(e), type="engine_error",
                    code=e.code)


def api_error(e: CallOutcome | EngineError) -> ApiError:
    return outcome_error(e) if isinstance(e, CallOutcome) else engine_error(e)


def stream_error_event(e: CallOutcome | EngineError) -> ErrorBody:
    """The ``{"error": ...}`` event that ends a stream that has begun
    (:func:`cato.edge.errors.stream_error`, with the message and code the client would have
    had as a response)."""
    a = api_error(e)
    return stream_error(a.message, a.code)


async def _outcome(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CallOutcome)
    return outcome_error(exc).response()


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else None
    return ApiError(exc.status_code, str(exc.detail), code=code).response()


async def _internal(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s", request.url.path)
    return ApiError(500, f"internal error: {type(exc).__name__}", type="server_error").response()


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """The Starlette app's exception handlers."""
    return {CallOutcome: _outcome, ApiError: _api_error, HTTPException: _http_error,
            Exception: _internal}
