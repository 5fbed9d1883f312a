"""The live dashboard: ``/dashboard`` (the page), ``/dashboard/data`` (its JSON, polled every
second), ``/dashboard/static/<file>`` (its script, styles and the vendored chart library, all
package data: nothing comes from a CDN), ``/dashboard/login`` and ``/dashboard/logout``.

Protection is that of ``/admin/*`` (:meth:`~cato.gateway.auth.Authenticator.admin`, scope
``admin``): open when no key of any kind is configured, else an admin key is needed. An API
client sends it as ``Authorization: Bearer KEY``; a browser cannot on navigation, so the page
offers a login form that POSTs the key and, if it is an admin key, gets a session cookie
(:data:`COOKIE`: ``HttpOnly``, ``SameSite=Strict``, ``Path=/dashboard``, ``Secure`` over HTTPS)
holding a random token that :class:`Sessions` maps to the key; the key itself never goes into
the cookie. Every request re-checks the session's key with the authenticator, so the counters of
``cato_auth_requests`` see dashboard reads like any admin read. Refusals: the page answers with
the login form (401, or 403 when no key can open the admin scope); the data endpoint with the
OpenAI-style error body.

Static files are served only from the fixed list :data:`STATIC_TYPES` (no path from the client
reaches the file system), with an ETag and a year's ``Cache-Control: immutable``: the page
references each file with ``?v=<its sha256 prefix>``, so a new version is a new URL.
"""

from __future__ import annotations

import hashlib
import html
import math
import secrets
import time
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from cato.edge.errors import ApiError, bad_request, not_found
from cato.gateway.gateway import Gateway

#: the session cookie's name
COOKIE = "cato_dashboard"

#: the files under ``/dashboard/static/`` and their content types
STATIC_TYPES = {
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}

_MAX_LOGIN_BYTES = 4096
_EVENTS_KEPT = 200      # scale and health events per answer, newest last


def _static_bytes(name: str) -> bytes:
    return resources.files("cato.gateway").joinpath("static", name).read_bytes()


class Sessions:
    """Dashboard sessions: random token -> (admin key, expiry). At most ``max_sessions`` (the
    oldest goes first), each valid ``ttl_s`` seconds from login."""

    def __init__(self, *, ttl_s: float = 12 * 3600.0, max_sessions: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.clock = clock
        self._by_token: dict[str, tuple[str, float]] = {}   # insertion order: oldest first

    def open(self, key: str) -> str:
        """A new session for ``key``; its token."""
        while len(self._by_token) >= self.max_sessions:
            del self._by_token[next(iter(self._by_token))]
        token = secrets.token_urlsafe(32)
        self._by_token[token] = (key, self.clock() + self.ttl_s)
        return token

    def key_for(self, token: str | None) -> str | None:
        """The key of a live session, or None (unknown or expired: then forgotten)."""
        if not token:
            return None
        entry = self._by_token.get(token)
        if entry is None:
            return None
        if self.clock() >= entry[1]:
            del self._by_token[token]
            return None
        return entry[0]

    def close(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def __len__(self) -> int:
        return len(self._by_token)


class Dashboard:
    """The dashboard's handlers over one gateway."""

    def __init__(self, gw: Gateway, sessions: Sessions | None = None) -> None:
        self.gw = gw
        self.sessions = sessions or Sessions()
        self._static = {name: _static_bytes(name) for name in STATIC_TYPES}
        self._etag = {name: hashlib.sha256(b).hexdigest()[:16]
                      for name, b in self._static.items()}

    # ---- protection --------------------------------------------------------------------------
    def _check(self, request: Request) -> None:
        """Raises the admin scope's 401/403 unless the request carries an admin key (header or
        session cookie) or the operations endpoints are open."""
        header = request.headers.get("authorization")
        if header is None:
            key = self.sessions.key_for(request.cookies.get(COOKIE))
            if key is not None:
                header = f"Bearer {key}"
        self.gw.auth.admin(header, "admin")

    def _login_page(self, status: int, message: str = "") -> HTMLResponse:
        text = _static_bytes("login.html").decode()
        note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
        text = text.replace("{{message}}", note).replace(
            "{{css}}", f"/dashboard/static/dashboard.css?v={self._etag['dashboard.css']}")
        return HTMLResponse(text, status_code=status,
                            headers={"Cache-Control": "no-store"})

    # ---- routes ------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        try:
            self._check(request)
        except ApiError as e:
            if e.status == 403:
                msg = e.message
            elif request.cookies.get(COOKIE):
                msg = "Your session has expired; sign in again."
            else:
                msg = ""
            return self._login_page(e.status, msg)
        text = _static_bytes("dashboard.html").decode()
        for name in STATIC_TYPES:
            text = text.replace("{{" + name + "}}",
                                f"/dashboard/static/{name}?v={self._etag[name]}")
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    async def login(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > _MAX_LOGIN_BYTES:
            return self._login_page(413, f"The login form is over {_MAX_LOGIN_BYTES} bytes.")
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        key = (fields.get("key") or [""])[0].strip()
        if not key:
            return self._login_page(401, "Enter an admin key (auth.admin_keys).")
        try:
            self.gw.auth.admin(f"Bearer {key}", "admin")
        except ApiError as e:
            return self._login_page(e.status, e.message)
        resp = RedirectResponse("/dashboard", status_code=303)
        resp.set_cookie(COOKIE, self.sessions.open(key), max_age=int(self.sessions.ttl_s),
                        path="/dashboard", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
        return resp

    async def logout(self, request: Request) -> Response:
        self.sessions.close(request.cookies.get(COOKIE))
        resp = RedirectResponse("/dashboard", status_code=303)
        resp.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict")
        return resp

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self._static:
            raise not_found(f"No dashboard file {name!r}; known: {', '.join(STATIC_TYPES)}",
                            param="name", code="not_found")
        etag = f'"{self._etag[name]}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable",
                   "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(self._static[name], media_type=STATIC_TYPES[name], headers=headers)

    async def data(self, request: Request) -> Response:
        self._check(request)
        raw = request.query_params.get("since", "0")
        try:
            since = float(raw)
        except ValueError:
            since = math.nan
        if not math.isfinite(since):
            raise bad_request(f"since must be a number of Unix seconds, got {raw!r}",
                              param="since")
        return JSONResponse(self.snapshot(since), headers={"Cache-Control": "no-store"})

    def snapshot(self, since: float) -> dict[str, Any]:
        """What the page draws: the tasks' SLAs, the samples after ``since``, and the latest
        scale and health events."""
        gw, tl = self.gw, self.gw.metrics.timeline
        tasks: dict[str, dict[str, Any]] = {}
        if gw.planner is not None:
            # a pipeline shares its name (and its metrics) with the direct task it extends;
            # the direct task's SLA is the one shown, ``endpoints`` says which serve the name
            for kind, catalogue in (("pipeline", gw.planner.pipelines),
                                    ("direct", gw.planner.direct)):
                for name, pt in catalogue.items():
                    t = pt.task
                    seen = tasks.get(name, {}).get("endpoints", [])
                    tasks[name] = {"endpoints": sorted({*seen, kind}),
                                   "sla_kind": t.sla_kind.value,
                                   "sla_ms": round(t.sla_s * 1000, 3),
                                   "e2e_bound_ms": None if t.e2e_bound_s is None
                                   else round(t.e2e_bound_s * 1000, 3)}
        scale = sorted((dict(vars(e)) for p in gw.provisioners.values() for e in p.events),
                       key=lambda e: e["at_unix"])[-_EVENTS_KEPT:]
        health = [{"at_unix": e.at_unix, "replica": e.replica, "action": e.action,
                   "reason": e.reason} for e in list(gw.health.events)[-_EVENTS_KEPT:]]
        return {"object": "cato.dashboard", "now": round(tl.clock(), 3),
                "interval_s": tl.interval_s, "window_s": tl.window_s, "horizon_s": tl.horizon_s,
                "policy": gw.config.routing.policy, "tasks": tasks,
                "models": [m.name for m in gw.config.models],
                "samples": tl.since(since), "scale_events": scale, "health_events": health}


def dashboard_routes(gw: Gateway) -> list[Route]:
    """The dashboard's routes, for :func:`cato.gateway.app.create_app`'s list."""
    d = Dashboard(gw)
    return [Route("/dashboard", d.page, methods=["GET"]),
            Route("/dashboard/data", d.data, methods=["GET"]),
            Route("/dashboard/login", d.login, methods=["POST"]),
            Route("/dashboard/logout", d.logout, methods=["POST"]),
            Route("/dashboard/static/{name}", d.static, methods=["GET"])]
