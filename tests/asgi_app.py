"""In-process test runs of the project's ASGI apps: the gateway's (``cato serve``) and the
emulated engine's (``cato engine``), called through ``httpx.ASGITransport`` instead of a
subprocess on a loopback port.

The app is the very one the servers run (:func:`cato.gateway.app.create_app`,
:func:`cato.engine.app.create_app`), with its lifespan (the gateway's start-up and shutdown)
run around the client. Use it where a test checks an error path or a response shape and a
process adds nothing; keep real processes where the process or the socket is the point (a
crash, a signal, a client that leaves mid-stream, the CLI). Two differences to bear in mind:
``ASGITransport`` hands over a response once the app has sent all of it (a streamed response
is read whole, so a test cannot act between its events), and a request's task is the app's
(cancelling it is the client leaving).

Use it in a test as ``asyncio.run(body())`` with ``async with in_process(app) as client:``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
from starlette.applications import Starlette

from cato.gateway.app import create_app
from cato.gateway.config import parse_config
from cato.gateway.gateway import Gateway

BASE_URL = "http://in-process"


@contextlib.asynccontextmanager
async def in_process(app: Starlette, *, timeout_s: float = 60.0
                     ) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` calling ``app`` in this process, inside the app's lifespan
    (started on entry: a start-up failure raises here; shut down on exit)."""
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL,
                                     timeout=timeout_s) as client:
            yield client


def gateway_app(config: dict[str, Any], tmp: Path) -> Starlette:
    """The gateway's app over ``config`` (a ``cato.yaml`` as a mapping, validated as the file
    would be), its profile kept in ``tmp``; what ``cato serve --config`` would serve."""
    gw = Gateway(parse_config(config), profile_path=tmp / "profile.json")
    return create_app(gw)
