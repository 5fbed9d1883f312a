"""OpenAI's error shape, for every server of the project (the gateway, its Ray Serve plug-in,
the emulated engine): an HTTP status and the body ``{"error": {"message", "type", "param",
"code"}}``.

:class:`ApiError` is the one exception that carries such an answer; raise it where a request
is refused and turn it into a response (:meth:`ApiError.response`) at the HTTP edge. The
factories below name the common cases. A request that fails its pydantic model
(:mod:`cato.edge.protocol`) becomes a 400 :class:`ApiError` through
:func:`cato.edge.protocol.invalid_request`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from starlette.responses import JSONResponse
from typing_extensions import TypedDict

__all__ = ["ApiError", "ErrorBody", "ErrorObject", "bad_request", "engine_failed",
           "error_body", "not_found", "overloaded", "retry_after", "stream_error",
           "unavailable"]


class ErrorObject(TypedDict):
    """The `error` member of an error body."""

    message: Annotated[str, Field(min_length=1)]
    type: str
    param: Annotated[str | None, Field(description="The offending field or header, if one.")]
    code: str | None


class ErrorBody(TypedDict):
    """OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorObject


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> ErrorBody:
    """The body of an error response (or of the error event that ends a stream)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def stream_error(message: str, code: str | None = None) -> ErrorBody:
    """The ``{"error": ...}`` event that ends a stream that has already begun (its status line
    is long sent, so the error can only be an event, followed by ``[DONE]``): type
    ``engine_error``, no ``param``, ``code`` (default ``engine_failed``). Every server of the
    project ends a broken stream with it (the gateway, its task API, the Ray Serve proxy)."""
    return error_body(message, "engine_error", None, code or "engine_failed")


def retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header of ``seconds``, rounded, at least 1."""
    return {"Retry-After": str(max(1, round(seconds)))}


class ApiError(Exception):
    """An error a client sees: HTTP ``status`` plus an OpenAI-style body (``message``,
    ``type``, ``param``: the offending field or header, ``code``), with extra response
    ``headers`` (``Retry-After``, ``WWW-Authenticate``, ...)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def __repr__(self) -> str:
        return (f"ApiError({self.status}, {self.message!r}, type={self.type!r}, "
                f"param={self.param!r}, code={self.code!r})")

    def body(self) -> ErrorBody:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """400 ``invalid_request_error``."""
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str = "model_not_found") -> ApiError:
    """404 ``invalid_request_error`` (an unknown model, by default)."""
    return ApiError(404, message, param=param, code=code)


def overloaded(message: str, retry_after_s: float, code: str = "queue_full") -> ApiError:
    """429: the server sheds the request (a full queue); the client may retry later."""
    return ApiError(429, message, type="rate_limit_error", code=code,
                    headers=retry_after(retry_after_s))


def engine_failed(message: str) -> ApiError:
    """502: the engine failed before the response started."""
    return ApiError(502, message, type="engine_error", code="engine_failed")


def unavailable(message: str) -> ApiError:
    """503 ``not_ready``: retry in a second."""
    return ApiError(503, message, type="service_unavailable", code="not_ready",
                    headers=retry_after(1))
