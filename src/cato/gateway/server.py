"""``cato serve``: run the gateway under uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from cato.gateway.app import create_app
from cato.gateway.config import GatewayConfig
from cato.gateway.gateway import Gateway


def run_server(config: GatewayConfig, *, profile_path: str | Path | None = None,
               log_level: str = "info", engine_log_dir: Path | None = None) -> None:
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per engine call is noise
    gw = Gateway(config, profile_path=profile_path, engine_log_dir=engine_log_dir)
    app = create_app(gw)
    uvicorn.run(app, host=config.listen.host, port=config.listen.port, log_level=log_level,
                access_log=False, timeout_graceful_shutdown=10)
