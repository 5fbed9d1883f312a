"""The documented example of CATO's router and autoscaling policy on Ray Serve runs as is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cato.edge.procs import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rayserve_cato.py"


def test_rayserve_example_serves_streamed_and_plain_completions() -> None:
    pytest.importorskip("ray")
    r = subprocess.run([sys.executable, str(EXAMPLE), str(free_port())], capture_output=True,
                       text=True, timeout=280,
                       env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) >= 2 and all(len(x) > 5 for x in lines[-2:]), r.stdout
