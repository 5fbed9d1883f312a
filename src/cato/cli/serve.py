"""``cato serve``, ``cato profile``, ``cato engine`` and ``cato demo``: live serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from cato.cli._common import _fail, _progress, console


def _gateway_config(config: Optional[Path], port: Optional[int], host: Optional[str],
                    policy: Optional[str], replicas: int, time_dilation: float) -> Any:
    from cato.gateway.config import ConfigError, default_config, load_config
    try:
        cfg = load_config(config) if config is not None else default_config(
            replicas=replicas, policy=policy or "cato", time_dilation=time_dilation)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    changes: dict[str, Any] = {}
    if port is not None or host is not None:
        changes["listen"] = cfg.listen.model_copy(update={
            k: v for k, v in (("port", port), ("host", host)) if v is not None})
    if policy is not None and config is not None:
        from cato.core.routing import routing_policy_names
        if policy not in routing_policy_names():
            _fail(f"unknown routing policy {policy!r}; known: {', '.join(routing_policy_names())}")
        changes["routing"] = cfg.routing.model_copy(update={"policy": policy})
    return cfg.model_copy(update=changes) if changes else cfg


def serve(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Gateway YAML config "
                                          "(default: the embedded default, emulated engines)."),
    host: Optional[str] = typer.Option(None, help="Listen address (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Listen port (default 8000)."),
    policy: Optional[str] = typer.Option(None, help="Routing policy (cato or a baseline)."),
    replicas: int = typer.Option(2, min=1, max=64, help="Emulated engines of the default."),
    time_dilation: float = typer.Option(1.0, min=0.01, help="Emulated engines run this many "
                                        "times slower than the modelled GPU."),
    profile: Optional[Path] = typer.Option(None, help="Profile file (default "
                                           "~/.cache/cato/profile.json)."),
    log_level: str = typer.Option("info", help="Log level."),
) -> None:
    """Run the SLA-aware gateway (OpenAI-compatible API on /v1)."""
    from cato.gateway.server import run_server
    cfg = _gateway_config(config, port, host, policy, replicas, time_dilation)
    run_server(cfg, profile_path=profile, log_level=log_level)


def profile_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Gateway YAML config."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the profile "
                                       "(default: the config's profile_path or "
                                       "~/.cache/cato/profile.json)."),
    probes: int = typer.Option(3, min=1, max=50, help="Probes per node."),
    replicas: int = typer.Option(2, min=1, max=64, help="Emulated engines of the default."),
) -> None:
    """Measure node baselines against the configured engines at light load."""
    import asyncio

    from cato.gateway.gateway import Gateway
    from cato.gateway.profiler import measure_profile
    cfg = _gateway_config(config, None, None, None, replicas, 1.0)
    gw = Gateway(cfg, profile_path=out)

    async def go() -> Any:
        try:
            await asyncio.to_thread(gw.start_engines)
            from cato.gateway.executor import Tools
            gw.tools = await asyncio.to_thread(Tools.open, cfg.code_index_root)
            return await measure_profile(gw, probes_per_node=probes,
                                         on_progress=lambda s: console.print(f"  probing {s}"))
        finally:
            await gw.aclose()

    try:
        prof = asyncio.run(go())
    except Exception as exc:   # engines unreachable, etc.: one clear line
        _fail(f"profiling failed: {exc}")
    prof.save(gw.profile_path)
    from cato.report.serving import profile_table
    console.print(profile_table(str(gw.profile_path), prof.model_dump()["nodes"]))
    for name, mp in prof.models.items():
        console.print(f"model {name}: time scale {mp.time_scale:.3f} x {mp.coefficients}")


def engine(
    port: int = typer.Option(8000, min=0, max=65535),
    host: str = typer.Option("127.0.0.1"),
    model: str = typer.Option("cato-emulated", help="Model name the engine serves."),
    preset: str = typer.Option("a100-llama7b", help="Coefficient set of the replica model."),
    time_dilation: float = typer.Option(1.0, help="Run this many times slower than modelled."),
    seed: int = typer.Option(0),
    jitter: float = typer.Option(0.0, help="Log-normal sigma of step-time jitter."),
    max_model_len: Optional[int] = typer.Option(None),
    max_num_seqs: Optional[int] = typer.Option(None, help="Batch cap (vLLM's --max-num-seqs); "
                                               "default: the preset's."),
    fault: Optional[list[str]] = typer.Option(
        None, "--fault", metavar="KIND[:PROB]",
        help="Inject a fault (repeatable): error, garbage, close-before, close-mid, hang or "
             "hang-mid, with probability PROB (default 1) per request, drawn with --seed."),
    fault_control: bool = typer.Option(False, "--fault-control",
                                       help="Serve GET/POST /fault to read and replace the fault "
                                            "plan at runtime."),
    fault_mid_tokens: int = typer.Option(3, min=1, help="Tokens close-mid and hang-mid stream "
                                         "before they cut the stream."),
    scheduling_policy: str = typer.Option(
        "fcfs", "--scheduling-policy",
        help="Engine queue order (vLLM's --scheduling-policy): fcfs, or priority (each request's "
             "integer 'priority', smaller first; KV preemption takes the largest)."),
    enable_prefix_caching: bool = typer.Option(
        False, "--enable-prefix-caching/--no-enable-prefix-caching",
        help="Automatic prefix caching (vLLM's flag): 16-token blocks of the prompt text, hashed "
             "and kept in the KV cache (LRU); cached tokens skip prefill. Off by default."),
) -> None:
    """Run an emulated engine: an OpenAI-compatible server over the protocol's replica model."""
    from cato.engine.server import engine_command
    try:
        engine_command(port=port, host=host, model=model, preset=preset,
                       time_dilation=time_dilation, seed=seed, jitter=jitter,
                       max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                       faults=fault or (), fault_control=fault_control,
                       fault_mid_tokens=fault_mid_tokens, scheduling_policy=scheduling_policy,
                       enable_prefix_caching=enable_prefix_caching)
    except ValueError as exc:
        _fail(str(exc))


def demo(
    rate: float = typer.Option(20.0, help="Requests per second (Poisson)."),
    duration: float = typer.Option(20.0, help="Seconds of load."),
    seed: int = typer.Option(0),
    mix: str = typer.Option("A", help="Task mix: A, B or task=weight,..."),
    policy: str = typer.Option("cato", help="Routing policy of the gateway."),
    replicas: int = typer.Option(2, min=1, max=64, help="Emulated engines."),
    url: Optional[str] = typer.Option(None, help="Use a running gateway instead of starting "
                                      "one."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results as JSON."),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="The started gateway's "
                                       "port (default: a free one)."),
    admin_key_env: Optional[str] = typer.Option(
        None, help="Environment variable holding an admin key: the started gateway then "
                   "requires it for /admin, /metrics and /dashboard (default: all open)."),
    autoscale: bool = typer.Option(False, help="Start with one engine and let the gateway "
                                   "scale between 1 and --replicas (scale events on the "
                                   "dashboard)."),
) -> None:
    """Start the gateway over emulated engines, send a mixed coding load, print goodput.
    The live dashboard is at <gateway>/dashboard while the load runs."""
    import asyncio
    import os
    import shutil
    import tempfile

    import yaml

    from cato.demo import build_requests, demo_config, per_task, run_load, start_gateway, stop
    from cato.sim.workload import parse_mix
    if rate <= 0 or duration <= 0:
        _fail(f"--rate and --duration must be positive, got {rate} and {duration}")
    if admin_key_env is not None and not os.environ.get(admin_key_env):
        _fail(f"--admin-key-env {admin_key_env}: that environment variable is not set or empty")
    try:
        mix_map = parse_mix(mix)
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"building {rate:g} req/s x {duration:g} s of real coding prompts (seed {seed})")
    reqs = build_requests(rate, duration, mix_map, seed)
    proc = None
    cfg_dir: Optional[Path] = None     # the started gateway's config, removed at the end
    if url is None:
        console.print(f"starting cato serve ({replicas} emulated engines, policy {policy}) ...")
        args = ["--policy", policy, "--replicas", str(replicas)]
        if admin_key_env is not None or autoscale:
            cfg_dir = Path(tempfile.mkdtemp(prefix="cato-demo-"))
            cfg_path = cfg_dir / "cato.yaml"
            cfg_path.write_text(yaml.safe_dump(demo_config(
                replicas=replicas, policy=policy, admin_key_env=admin_key_env,
                autoscale=autoscale)))
            args = ["--config", str(cfg_path), "--policy", policy]
        try:
            proc, url = start_gateway(args, port=port)
        except RuntimeError as exc:
            if cfg_dir is not None:
                shutil.rmtree(cfg_dir, ignore_errors=True)
            _fail(str(exc))
        console.print(f"gateway ready at {url}")
    console.print(f"live dashboard: {url}/dashboard", soft_wrap=True)
    try:
        with _progress() as prog:
            tid = prog.add_task("requests", total=len(reqs))
            results = asyncio.run(run_load(url, reqs, lambda: prog.advance(tid)))
    finally:
        if proc is not None:
            stop(proc)
        if cfg_dir is not None:
            shutil.rmtree(cfg_dir, ignore_errors=True)
    rows = per_task(results)
    from cato.report.serving import demo_table
    total = sum(r.met for r in results) / max(1, len(results))
    console.print(demo_table(rows, num_requests=len(results), policy=policy))
    console.print(f"overall goodput (share of requests meeting their SLA): {total:.3f}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"policy": policy, "rate": rate, "duration": duration,
                                         "seed": seed, "goodput": total, "tasks": rows},
                                        indent=1))
