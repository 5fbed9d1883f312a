"""Errors at the HTTP edge, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Raised directly for request validation and auth; the call path's domain outcomes
(:mod:`cato.gateway.outcomes`) become these in :mod:`cato.gateway.http_errors` only."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An error a client sees: HTTP status plus an OpenAI-style body."""

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

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str = "model_not_found") -> ApiError:
    return ApiError(404, message, param=param, code=code)


def overloaded(message: str, retry_after_s: float, code: str = "queue_full") -> ApiError:
    """429: the gateway sheds the request (a full queue); the client may retry later."""
    return ApiError(429, message, type="rate_limit_error", code=code,
                    headers={"Retry-After": str(max(1, round(retry_after_s)))})


def engine_failed(message: str) -> ApiError:
    """502: the engine failed before the response started."""
    return ApiError(502, message, type="engine_error", code="engine_failed")


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, type="service_unavailable", code="not_ready",
                    headers={"Retry-After": "1"})
