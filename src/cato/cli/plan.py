"""``cato plan --config my.yaml [--trace my.csv | --rate R] --target 0.95``: the replicas per model
that hold a target attainment at a workload's rate, at 1.5x and 2x it, and the policy that needs
the fewest (the search: :mod:`cato.sim.capacity_plan`).

The config is read as ``cato simulate --config`` reads it (its tasks, models, coefficient presets
and emulated slow-downs; the replica counts it states are what is planned, so they are ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from cato.cli._common import _fail, _floats, _progress, _write_json, console

DEFAULT_DURATION_S = 60.0


def plan_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="The gateway config (YAML) whose tasks and models are planned."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="A CSV trace (timestamp,task,input_tokens,output_tokens); its mean rate is the base rate."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Without --trace: the base rate of Poisson arrivals (req/s)."),
    mix: Optional[str] = typer.Option(None, "--mix", help="Without --trace: task weights, e.g. 'repo-qa=3,explain=1' (default: equal)."),
    target: float = typer.Option(0.95, "--target", help="The SLA attainment to hold, in (0, 1]."),
    factors: str = typer.Option("1,1.5,2", "--factors", help="Multiples of the base rate to plan for."),
    policies: str = typer.Option("cato-plus,cato,least_outstanding", "--policies", help="Comma-separated routing policies to compare."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per evaluation (seed, seed+1, ...); at least 3."),
    seed: int = typer.Option(0, "--seed", help="First seed."),
    max_replicas: int = typer.Option(16, "--max-replicas", help="The most replicas of any one model the search may try."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Without --trace: seconds of arrivals per run (default 60)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the plan as JSON."),
) -> None:
    """Capacity planning: the fewest replicas of each model that hold --target attainment at
    the trace's (or --rate's) rate and at its multiples, per policy, and which policy wins."""
    from cato.cli.simulate_config import _deployments
    from cato.gateway.config import ConfigError, load_config
    from cato.sim.capacity_plan import MIN_SEEDS, PlanWorkload, plan, plan_json
    from cato.sim.policies import fixed_policies
    from cato.sim.user_trace import TraceError, load_user_trace
    from cato.sim.workload import parse_mix

    if not 0.0 < target <= 1.0:
        _fail(f"--target must be in (0, 1], got {target:g}")
    if seeds < MIN_SEEDS:
        _fail(f"--seeds must be >= {MIN_SEEDS}, got {seeds}")
    if max_replicas < 1:
        _fail(f"--max-replicas must be >= 1, got {max_replicas}")
    if duration is not None and duration <= 0:
        _fail(f"--duration must be > 0, got {duration:g}")
    if (trace is None) == (rate is None):
        _fail("give exactly one of --trace and --rate" + (f" (got --trace {str(trace)!r} and "
              f"--rate {rate:g})" if rate is not None else ""))
    if rate is not None and not rate > 0:
        _fail(f"--rate must be > 0 req/s, got {rate:g}")
    if trace is not None and (mix or duration is not None):
        _fail("--mix and --duration are for --rate; a trace states its own tasks and times")
    factor_list = _floats(factors, "--factors")
    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names:
        _fail(f"--policies names no policy, got {policies!r}")
    for p in names:
        if p not in fixed_policies(32):
            _fail(f"--policies: unknown policy {p!r}; known: {', '.join(fixed_policies(32))}")
    try:
        cfg = load_config(config)
    except ConfigError as e:
        _fail(str(e))
    tasks = {k: s.task.scaled(cfg.sla_scale) for k, s in cfg.task_specs().items()}
    conc = next((m.concurrency for m in cfg.models if m.concurrency), 32)
    try:
        weights = parse_mix(mix, known=tasks) if mix else {k: 1.0 for k in tasks}
    except ValueError as e:
        _fail(f"--mix: {e}")
    rows = None
    if trace is not None:
        try:
            rows = load_user_trace(trace, tasks)
        except TraceError as e:
            _fail(str(e))
    try:
        wl = PlanWorkload(config.stem, tasks, _deployments(cfg), weights, trace=rows,
                          rate_rps=rate, duration_s=duration or DEFAULT_DURATION_S,
                          engine_concurrency=conc)
    except ValueError as e:
        _fail(str(e))
    seed_list = list(range(seed, seed + seeds))
    with _progress() as prog:
        bar = prog.add_task("planning", total=None)

        def on_run(policy: str, factor: float, counts: Any, s: int) -> None:
            shown = ",".join(f"{m}={n}" for m, n in sorted(counts.items()))
            prog.update(bar, advance=1, description=f"{policy} x{factor:g} [{shown}] seed {s}")

        try:
            result = plan(wl, target=target, seeds=seed_list, max_replicas=max_replicas,
                          policies=names, factors=factor_list, on_run=on_run)
        except ValueError as e:
            _fail(str(e))
    doc = plan_json(result)
    doc.update(config=str(config), trace=None if trace is None else str(trace))
    console.print(plan_table(doc))
    _write_json(doc, json_path)


def plan_table(doc: dict[str, Any]) -> Any:
    """The rich table of a :func:`~cato.sim.capacity_plan.plan_json` document."""
    from rich.table import Table

    t = Table(title=f"Capacity plan: replicas holding {doc['target']:.0%} attainment "
                    f"({doc['source']}, base {doc['base_rate_rps']:.3g} req/s, seeds "
                    f"{doc['seeds']}, at most {doc['max_replicas']} per model)")
    for col in ("policy", "rate x", "req/s", "replicas per model", "total", "attainment",
                "per seed"):
        t.add_column(col, justify="left" if col in ("policy", "replicas per model") else "right")
    for pp in doc["policies"]:
        win = " (winner)" if pp["policy"] == doc["winner"] else ""
        for r in pp["rates"]:
            reps = ", ".join(f"{m}={n}" for m, n in sorted(r["replicas"].items()))
            ok = r["feasible"]
            t.add_row(pp["policy"] + win, f"{r['factor']:g}", f"{r['rate_rps']:.3g}",
                      reps if ok else f"> {doc['max_replicas']} ({reps})",
                      str(r["total_replicas"]) if ok else "-",
                      f"{r['attainment']:.3f}" if ok else "not held",
                      " ".join(f"{a:.3f}" for a in r["per_seed"]))
    return t
