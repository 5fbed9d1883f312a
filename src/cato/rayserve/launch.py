"""Run a Ray Serve variant in its own process: ``python -m cato.rayserve`` and
:func:`start_ray_serve` (the benchmark's entry point).

The process starts Ray (a fresh local cluster, or ``--address`` of an existing one), starts
Serve's HTTP proxy on the given host and port, deploys :func:`cato.rayserve.app.build_app`,
waits until the application is RUNNING and ``/v1/models`` answers, prints one line
``READY <url>`` and then, every ``--status-interval`` seconds, appends the engine deployments'
replica counts (from ``serve.status()``; an ingress is not counted) to ``--status-path`` as a
JSON line (``{"t", "app", "running", "starting", "stopping", "states", "deployments"}``): the
replicas-over-time series.
SIGTERM or SIGINT: ``serve.shutdown()`` (each replica stops its engine), ``ray.shutdown()``,
exit 0.

This module imports Ray only in the child process; :func:`start_ray_serve` works without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import httpx
import typer

from cato.edge.procs import spawn

READY_PREFIX = "READY "


# ------------------------------------------------------------------------------ the parent side
@dataclass
class RayServeProcess:
    """A running ``python -m cato.rayserve``: its base ``url`` (``http://host:port``; clients
    use ``url + "/v1"``), its log, and the replica-count series it writes."""

    url: str
    variant: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    status_path: Path
    started_s: float = field(default_factory=time.time)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def replica_history(self) -> list[dict[str, Any]]:
        """Every status sample so far (``t`` is Unix time)."""
        out: list[dict[str, Any]] = []
        try:
            lines = self.status_path.read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue    # a line being written
        return out

    def status(self) -> dict[str, Any] | None:
        """The latest status sample, or None before the first."""
        h = self.replica_history()
        return h[-1] if h else None

    def num_replicas(self) -> int | None:
        """Engine replicas RUNNING at the latest sample, all models together (None before the
        first; per model: ``status()["deployments"]``)."""
        s = self.status()
        return None if s is None else int(s["running"])

    def stop(self, timeout_s: float = 90.0) -> int | None:
        """SIGTERM (graceful: Serve and Ray shut down, engines stop), then SIGKILL of the whole
        process group after ``timeout_s``. Returns the exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> RayServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_argv(variant: str, *, port: int, replicas: int = 2, min_replicas: int | None = None,
                max_replicas: int | None = None, engine: Mapping[str, Any] | None = None,
                models: Sequence[Mapping[str, Any]] | None = None,
                task_models: Mapping[str, str] | None = None,
                host: str = "127.0.0.1", address: str | None = None,
                num_cpus: int | None = None, status_path: Path | None = None,
                status_interval_s: float = 1.0, ready_timeout_s: float = 180.0,
                autoscaling: Mapping[str, Any] | None = None,
                cato_scaling: Mapping[str, Any] | None = None,
                router: Mapping[str, Any] | None = None,
                replica_num_cpus: float = 1.0) -> list[str]:
    """The command line of ``python -m cato.rayserve`` for these settings."""
    argv = [sys.executable, "-m", "cato.rayserve", "--variant", variant, "--host", host,
            "--port", str(port), "--replicas", str(replicas),
            "--engine", json.dumps(dict(engine or {})),
            "--status-interval", repr(status_interval_s),
            "--ready-timeout", repr(ready_timeout_s),
            "--replica-num-cpus", repr(replica_num_cpus)]
    if min_replicas is not None:
        argv += ["--min-replicas", str(min_replicas)]
    if max_replicas is not None:
        argv += ["--max-replicas", str(max_replicas)]
    if address is not None:
        argv += ["--address", address]
    if num_cpus is not None:
        argv += ["--num-cpus", str(num_cpus)]
    if status_path is not None:
        argv += ["--status-path", str(status_path)]
    for flag, val in (("--autoscaling", autoscaling), ("--cato-scaling", cato_scaling),
                      ("--router", router), ("--task-models", task_models)):
        if val:
            argv += [flag, json.dumps(dict(val))]
    if models:
        argv += ["--models", json.dumps([dict(m) for m in models])]
    return argv


def start_ray_serve(variant: str, *, port: int, replicas: int = 2,
                    min_replicas: int | None = None, max_replicas: int | None = None,
                    engine: Mapping[str, Any] | None = None,
                    log_path: Path | None = None, timeout_s: float = 180.0,
                    models: Sequence[Mapping[str, Any]] | None = None,
                    task_models: Mapping[str, str] | None = None,
                    host: str = "127.0.0.1", address: str | None = None,
                    num_cpus: int | None = None, status_interval_s: float = 1.0,
                    autoscaling: Mapping[str, Any] | None = None,
                    cato_scaling: Mapping[str, Any] | None = None,
                    router: Mapping[str, Any] | None = None,
                    replica_num_cpus: float = 1.0) -> RayServeProcess:
    """Start ``python -m cato.rayserve`` and return once it printed READY (its app RUNNING and
    ``/v1/models`` answering). A clear RuntimeError, with the tail of its log, if it exits or
    is not ready within ``timeout_s`` (it is then stopped). Output goes to ``log_path`` (default:
    a temporary file); the replica-count series to ``log_path`` with suffix
    ``.status.jsonl``.

    One model: ``engine`` (:class:`~cato.rayserve.engine.EngineOptions` as a mapping) and
    ``replicas`` (with ``min_replicas`` / ``max_replicas``: autoscaling). Several models:
    ``models=[{"engine", "replicas", "min_replicas", "max_replicas"}, ...]`` behind an ingress,
    ``task_models`` mapping tasks to model names (see :func:`cato.rayserve.app.build_app`)."""
    from cato.rayserve.variants import VARIANTS
    if variant not in VARIANTS:
        raise ValueError(f"unknown Ray Serve variant {variant!r}; known: {', '.join(VARIANTS)}")
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="cato-rayserve-")) / f"{variant}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    status_path = log_path.with_suffix(".status.jsonl")
    status_path.unlink(missing_ok=True)
    from cato.rayserve.variants import model_specs
    model_specs(models, engine=engine, num_replicas=replicas, min_replicas=min_replicas,
                max_replicas=max_replicas)     # a bad option fails here, not in the child
    argv = launch_argv(variant, port=port, replicas=replicas, min_replicas=min_replicas,
                       max_replicas=max_replicas, engine=engine, models=models,
                       task_models=task_models, host=host, address=address,
                       num_cpus=num_cpus, status_path=status_path,
                       status_interval_s=status_interval_s, ready_timeout_s=timeout_s,
                       autoscaling=autoscaling, cato_scaling=cato_scaling, router=router,
                       replica_num_cpus=replica_num_cpus)
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    proc = spawn(argv, log_path=log_path, env=env)
    rs = RayServeProcess(f"http://{host}:{port}", variant, proc, log_path, status_path)
    deadline = time.monotonic() + timeout_s + 15.0
    while True:
        ready = _ready_line(log_path)
        if ready is not None:
            rs.url = ready
            return rs
        if proc.poll() is not None:
            raise RuntimeError(f"ray serve ({variant}) exited with code {proc.returncode} "
                               f"before it was ready; log {log_path}:\n{rs.log_tail()}")
        if time.monotonic() > deadline:
            rs.stop(30.0)
            raise RuntimeError(f"ray serve ({variant}) not ready after {timeout_s:.0f} s; "
                               f"log {log_path}:\n{rs.log_tail()}")
        time.sleep(0.2)


def _ready_line(log_path: Path) -> str | None:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX):].strip()
    return None


# ------------------------------------------------------------------------------ the child side
def _json_arg(raw: str | None, what: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        v = json.loads(raw)
    except ValueError as e:
        raise SystemExit(f"--{what} is not valid JSON: {e}") from None
    if not isinstance(v, dict):
        raise SystemExit(f"--{what} must be a JSON object")
    return v


def _sample(app_name: str) -> dict[str, Any]:
    """Replica counts of the application's engine deployments (not the ingress's)."""
    from ray import serve

    from cato.rayserve.app import INGRESS_NAME
    st = serve.status()
    app = st.applications.get(app_name)
    states: dict[str, int] = {}
    per: dict[str, int] = {}
    status = "NOT_STARTED"
    if app is not None:
        status = str(getattr(app.status, "value", app.status))
        for name, dep in app.deployments.items():
            if name == INGRESS_NAME:
                continue
            for k, v in dep.replica_states.items():
                key = str(getattr(k, "value", k))
                states[key] = states.get(key, 0) + int(v)
                if key == "RUNNING":
                    per[name] = per.get(name, 0) + int(v)
    return {"t": round(time.time(), 3), "app": status,
            "running": states.get("RUNNING", 0),
            "starting": states.get("STARTING", 0) + states.get("PENDING_MIGRATION", 0),
            "stopping": states.get("STOPPING", 0), "states": states, "deployments": per}


PROG = "python -m cato.rayserve"

app = typer.Typer(add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
"""The child side's command line (one command: no subcommand name)."""


@app.command(help="Serve OpenAI-compatible engine replicas with Ray Serve (ray-serve, "
                  "ray-serve-tuned, ray-serve-cato, ray-serve-prefix).")
def serve_command(
    variant: str = typer.Option("ray-serve", "--variant"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(..., "--port"),
    replicas: int = typer.Option(2, "--replicas"),
    min_replicas: Optional[int] = typer.Option(None, "--min-replicas"),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas"),
    engine: str = typer.Option("{}", "--engine", help="EngineOptions as JSON"),
    models: Optional[str] = typer.Option(None, "--models",
                                         help="several models: JSON list of {engine, "
                                              "replicas, min_replicas, max_replicas}"),
    task_models: Optional[str] = typer.Option(None, "--task-models",
                                              help="task -> model name (JSON)"),
    autoscaling: Optional[str] = typer.Option(None, "--autoscaling",
                                              help="AutoscalingConfig overrides (JSON)"),
    cato_scaling: Optional[str] = typer.Option(None, "--cato-scaling",
                                               help="Algorithm 2 parameters (JSON)"),
    router: Optional[str] = typer.Option(None, "--router",
                                         help="router kwargs (JSON): CATO's router's "
                                              "(ray-serve-cato) or PrefixCacheAffinityRouter's "
                                              "(ray-serve-prefix)"),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="an existing Ray cluster (default: start a "
                                               "local one)"),
    num_cpus: Optional[int] = typer.Option(None, "--num-cpus",
                                           help="logical CPUs of the local cluster (default: "
                                                "enough for max replicas)"),
    replica_num_cpus: float = typer.Option(1.0, "--replica-num-cpus"),
    app_name: str = typer.Option("cato", "--app-name"),
    route_prefix: str = typer.Option("/", "--route-prefix"),
    status_path: Optional[str] = typer.Option(None, "--status-path"),
    status_interval: float = typer.Option(1.0, "--status-interval"),
    ready_timeout: float = typer.Option(180.0, "--ready-timeout"),
) -> None:
    code = _serve(variant=variant, host=host, port=port, replicas=replicas,
                  min_replicas=min_replicas, max_replicas=max_replicas, engine=engine,
                  models=models, task_models=task_models, autoscaling=autoscaling,
                  cato_scaling=cato_scaling, router=router, address=address,
                  num_cpus=num_cpus, replica_num_cpus=replica_num_cpus, app_name=app_name,
                  route_prefix=route_prefix, status_path=status_path,
                  status_interval=status_interval, ready_timeout=ready_timeout)
    raise typer.Exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cato.rayserve`` (the typer :data:`app`) on ``argv`` (default: the command
    line); its exit code (2 for a usage error)."""
    try:
        app(args=None if argv is None else list(argv), prog_name=PROG)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        raise
    return 0


def _serve(*, variant: str, host: str, port: int, replicas: int, min_replicas: int | None,
           max_replicas: int | None, engine: str, models: str | None, task_models: str | None,
           autoscaling: str | None, cato_scaling: str | None, router: str | None,
           address: str | None, num_cpus: int | None, replica_num_cpus: float, app_name: str,
           route_prefix: str, status_path: str | None, status_interval: float,
           ready_timeout: float) -> int:
    import ray
    from ray import serve

    from cato.rayserve.app import build_app

    from cato.rayserve.variants import model_specs

    engine_opts = _json_arg(engine, "engine")
    model_list = None
    if models:
        try:
            model_list = json.loads(models)
        except ValueError as e:
            raise SystemExit(f"--models is not valid JSON: {e}") from None
        if not isinstance(model_list, list) or not all(isinstance(m, dict) for m in model_list):
            raise SystemExit("--models must be a JSON list of objects")
    specs = model_specs(model_list, engine=engine_opts, num_replicas=replicas,
                        min_replicas=min_replicas, max_replicas=max_replicas)
    serve_app = build_app(variant, num_replicas=replicas, min_replicas=min_replicas,
                          max_replicas=max_replicas, engine=engine_opts, models=model_list,
                          task_models=_json_arg(task_models, "task-models") or None,
                          replica_num_cpus=replica_num_cpus,
                          autoscaling=_json_arg(autoscaling, "autoscaling") or None,
                          cato_scaling=_json_arg(cato_scaling, "cato-scaling") or None,
                          router=_json_arg(router, "router") or None)
    if address is None:
        most = sum(max(sp.replicas, sp.max_replicas or 0) for sp in specs)
        cpus = num_cpus or max(os.cpu_count() or 1, int(most * replica_num_cpus + 0.999) + 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 log_to_driver=False, namespace="cato-rayserve")
    else:
        ray.init(address=address, log_to_driver=False, namespace="cato-rayserve")
    stop = {"flag": False}

    def _on_signal(signum: int, frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    status_file = open(status_path, "a") if status_path else None   # noqa: SIM115
    code = 0
    try:
        serve.start(http_options={"host": host, "port": port},
                    proxy_location="HeadOnly")
        serve.run(serve_app, name=app_name, route_prefix=route_prefix)
        prefix = "" if route_prefix == "/" else route_prefix.rstrip("/")
        url = f"http://{host}:{port}{prefix}"
        deadline = time.monotonic() + ready_timeout
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while not stop["flag"]:
                try:
                    if client.get(url + "/v1/models").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url}/v1/models did not answer within "
                                       f"{ready_timeout:.0f} s")
                time.sleep(0.2)
        if not stop["flag"]:
            print(json.dumps({"variant": variant, "url": url,
                              "status": _sample(app_name)}), flush=True)
            print(READY_PREFIX + url, flush=True)
        next_sample = 0.0
        while not stop["flag"]:
            if status_file is not None and time.monotonic() >= next_sample:
                next_sample = time.monotonic() + status_interval
                try:
                    status_file.write(json.dumps(_sample(app_name)) + "\n")
                    status_file.flush()
                except Exception as e:   # noqa: BLE001  (keep serving; say why)
                    print(f"status sample failed: {e}", flush=True)
            time.sleep(0.1)
    except Exception as e:   # noqa: BLE001
        print(f"ERROR {type(e).__name__}: {e}", flush=True)
        code = 1
    finally:
        print("shutting down", flush=True)
        shutdown: Any = serve.shutdown
        try:
            shutdown()
        finally:
            ray.shutdown()
            if status_file is not None:
                status_file.close()
    print("stopped", flush=True)
    return code
