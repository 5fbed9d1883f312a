"""``python -m cato.rayserve`` through :func:`start_ray_serve`, as the benchmark runs it: its own
local Ray cluster, READY, the replica-count series, and a stop that leaves nothing behind.
Marked ``ray`` and ``slow``."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cato.edge.procs import free_port
from cato.rayserve.launch import start_ray_serve

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


def _pids_with(marker: str) -> list[int]:
    """Engine processes: command lines with ``marker`` and ``engine`` (not the launcher's)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read()
                    if marker.encode() in cmd and b"\0engine\0" in cmd:
                        out.append(int(d))
            except OSError:
                pass
    return out


def test_start_ray_serve_lifecycle(tmp_path: Path) -> None:
    """Two models behind the ingress (as ``cato bench compare`` starts the paper scenario),
    CATO's router and autoscaling policy on each."""
    pytest.importorskip("ray")
    openai = pytest.importorskip("openai")
    tag = uuid.uuid4().hex[:6]
    code_model, star_model = f"codellama-{tag}", f"starcoder-{tag}"
    models = [{"engine": {"model": code_model, "concurrency": 4, "max_num_seqs": 4},
               "replicas": 1, "min_replicas": 1, "max_replicas": 2},
              {"engine": {"model": star_model, "preset": "a100-starcoder2-7b", "concurrency": 4},
               "replicas": 1, "min_replicas": 1, "max_replicas": 2}]
    port = free_port()
    rs = start_ray_serve("ray-serve-cato", port=port, models=models,
                         task_models={"completion": star_model, "translation": star_model,
                                      "generation": code_model, "summarization": code_model},
                         log_path=tmp_path / "rs.log", timeout_s=150, num_cpus=3,
                         replica_num_cpus=0.5)
    try:
        assert rs.url == f"http://127.0.0.1:{port}" and rs.alive()
        client = openai.OpenAI(base_url=rs.url + "/v1", api_key="none", max_retries=0)
        assert {m.id for m in client.models.list().data} == {code_model, star_model}
        r = client.completions.create(model=code_model, prompt="def f():", max_tokens=3,
                                      extra_headers={"x-cato-task": "generation"})
        assert r.model == code_model and r.usage is not None and r.usage.completion_tokens == 3
        # a task as the model: its model serves it; streamed through the ingress
        texts = [c.choices[0].text for c in client.completions.create(
            model="completion", prompt="import os", max_tokens=4, stream=True)]
        assert len([t for t in texts if t]) == 4
        deadline = time.monotonic() + 20
        while rs.num_replicas() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rs.num_replicas() == 2                 # engines only, not the ingress
        s = rs.status()
        assert s is not None and s["app"] == "RUNNING" and s["t"] <= time.time()
        assert sorted(s["deployments"].values()) == [1, 1]
        assert len(_pids_with(code_model)) == 1 and len(_pids_with(star_model)) == 1
        assert b"--max-num-seqs" in open(f"/proc/{_pids_with(code_model)[0]}/cmdline",
                                         "rb").read()
    finally:
        code = rs.stop()
    assert code == 0, rs.log_tail()
    assert "stopped" in rs.log_tail()
    deadline = time.monotonic() + 15
    while _pids_with(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _pids_with(tag), "an engine outlived ray serve"
    with pytest.raises(ProcessLookupError):    # nothing of Ray's left in its process group
        os.killpg(rs.proc.pid, 0)
    assert len(rs.replica_history()) >= 1


def test_start_ray_serve_reports_a_failed_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown Ray Serve variant"):
        start_ray_serve("ray-serve-fast", port=free_port(), replicas=1, engine={})
    pytest.importorskip("ray")
    # an engine that cannot start: the deployment fails, the process exits with its log
    with pytest.raises(RuntimeError, match="exited with code|not ready"):
        start_ray_serve("ray-serve", port=free_port(), replicas=1, timeout_s=60, num_cpus=2,
                        engine={"command": ["false", "{port}"], "start_timeout_s": 5},
                        log_path=tmp_path / "bad.log", replica_num_cpus=0.5)
