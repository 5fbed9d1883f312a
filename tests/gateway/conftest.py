"""Real processes on loopback: emulated engines (``cato engine``) and the gateway
(``cato serve --config``), started and stopped by the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import pytest
import yaml

import cato
from cato.demo import start_gateway, stop
from cato.edge.procs import free_port, wait_ready
from cato.exits import EngineExited
from cato.serving.launcher import EngineProcess, emulated_engine_argv, start_process

SMALL_INDEX_ROOT = str(Path(cato.__file__).parent)   # index CATO's own sources: fast to build


def start_engines(n: int, tmp: Path, *, model: str = "m", time_dilation: float = 1.0,
                  preset: str = "a100-llama7b") -> list[EngineProcess]:
    engines = []
    for i in range(n):
        port = free_port()
        argv = emulated_engine_argv(port, model=model, preset=preset,
                                    time_dilation=time_dilation, seed=i)
        engines.append(start_process(argv, f"http://127.0.0.1:{port}", tmp / "logs"))
    wait_ready(engines, timeout_s=60)
    return engines


class RunningGateway:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, engines: list[EngineProcess],
                 log: Path) -> None:
        self.proc, self.url, self.engines, self.log = proc, url, engines, log

    def close(self) -> None:
        stop(self.proc)
        for e in self.engines:
            e.stop()


class Exits(Protocol):
    def exited(self, when: str = "") -> EngineExited | None: ...


def raise_if_exited(engines: Sequence[Exits], cause: BaseException | None = None,
                    when: str = "") -> None:
    """If one of ``engines`` (processes a test started) is gone, raise why: ``engine X exited
    with signal SIGSEGV`` and its last lines, rather than the symptom a client saw."""
    for e in engines:
        exited = e.exited(when)
        if exited is not None:
            raise exited from cause


def launch_gateway(tmp: Path, config: dict[str, Any], engines: list[EngineProcess],
                   watch: Sequence[Exits] = ()) -> RunningGateway:
    """``cato serve`` over ``config``; if it does not start and one of ``engines`` or ``watch``
    (engines the test started) has exited, the error names that engine's exit."""
    cfg_path = tmp / "cato.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    log = tmp / "gateway.log"
    try:
        proc, url = start_gateway(["--config", str(cfg_path),
                                   "--profile", str(tmp / "profile.json")],
                                  timeout_s=120, log_path=log)
    except RuntimeError as exc:
        try:
            raise_if_exited([*engines, *watch], exc, when="while the gateway started")
            raise
        finally:  # the caller's fixture never gets to tear them down: no orphaned engines
            for engine in engines:
                engine.stop()
    return RunningGateway(proc, url, engines, log)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """Two emulated A100-like engines behind the gateway, CATO routing, profiled at start-up."""
    tmp = tmp_path_factory.mktemp("gw")
    engines = start_engines(2, tmp)
    config = {
        "models": [{"name": "m", "coefficients": "a100-llama7b", "accepts_priority": True,
                    "replicas": [{"url": e.url} for e in engines]}],
        "routing": {"policy": "cato"},
        "profile_probes": 1,
        "code_index_root": SMALL_INDEX_ROOT,
        "limits": {"max_prompt_tokens": 4096, "max_tokens": 2048},
    }
    gw = launch_gateway(tmp, config, engines)
    yield gw
    gw.close()
