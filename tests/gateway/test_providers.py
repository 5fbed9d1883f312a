"""The local process provider with a capacity: real processes, health and free slots."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from cato.gateway.providers import LocalProcessProvider


def test_local_capacity_bounds_processes_and_health_reports_exit(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "http.server", "--bind", "{host}", "{port}"]
    p = LocalProcessProvider({"m": cmd}, log_dir=tmp_path, capacity=2)

    async def scenario() -> None:
        assert await p.free_slots("m") == 2
        a = await p.start("m")
        b = await p.start("m")
        assert await p.free_slots("m") == 0
        with pytest.raises(RuntimeError, match="capacity of 2"):
            await p.start("m")
        assert await p.exit_reason(a) is None
        assert a.pid and a.url.startswith("http://127.0.0.1:")
        assert a.process is not None
        a.process.proc.kill()
        a.process.proc.wait(5)
        assert (await p.exit_reason(a) or "") == "engine exited with signal SIGKILL"
        await p.stop(a)
        assert await p.free_slots("m") == 1
        with pytest.raises(RuntimeError, match="exited with signal SIGKILL|not ready"):
            b.process.proc.kill()   # type: ignore[union-attr]
            await p.wait_ready(b, 5.0)
        await p.stop(b)
        assert await p.free_slots("m") == 2

    asyncio.run(scenario())
