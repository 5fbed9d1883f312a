"""``cato serve``: run the gateway under uvicorn, with a graceful shutdown.

On SIGTERM or SIGINT uvicorn stops accepting connections and waits for open ones; the gateway
at once answers new requests on kept-alive connections 503 (``/ready`` too, so a load balancer
takes it out), lets in-flight work finish, and shortly before ``shutdown.drain_timeout_s`` ends
what is still running with a clear error. Then the engines it started are stopped and the
process exits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from types import FrameType

import uvicorn

from cato.gateway.app import create_app
from cato.gateway.config import GatewayConfig
from cato.gateway.gateway import Gateway

log = logging.getLogger("cato.gateway")


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the gateway when shutdown begins (uvicorn itself only says
    so once connections are closed, too late to refuse work on kept-alive ones)."""

    def __init__(self, config: uvicorn.Config, gw: Gateway) -> None:
        super().__init__(config)
        self.gw = gw
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.loop is not None and not self.should_exit:
            self.loop.call_soon_threadsafe(self.gw.begin_drain)
        super().handle_exit(sig, frame)


def run_server(config: GatewayConfig, *, profile_path: str | Path | None = None,
               log_level: str = "info", engine_log_dir: Path | None = None) -> None:
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per engine call is noise
    gw = Gateway(config, profile_path=profile_path, engine_log_dir=engine_log_dir)
    app = create_app(gw)
    uconf = uvicorn.Config(app, host=config.listen.host, port=config.listen.port,
                           log_level=log_level, access_log=False,
                           timeout_graceful_shutdown=int(config.shutdown.drain_timeout_s) + 1)
    _DrainingServer(uconf, gw).run()
