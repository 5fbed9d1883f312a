"""``cato simulate --config my.yaml``: a team's own tasks and models in the simulator.

The gateway config is read as ``cato serve`` reads it (:func:`cato.gateway.config.load_config`,
the same ``tasks:`` declarations and checks); each model becomes a fixed pool of replicas
(its engine urls, or its emulated or autoscaled count) with its coefficient preset -- an
emulated model slowed by its ``time_dilation`` and capped at its ``max_num_seqs``, as the
gateway models it before profiling. ``http`` steps cost what their declaration states
(``cost: {median_ms, sigma}``). Arrivals: ``--arrival`` at each of ``--rates`` for
``--duration`` seconds (default 60) with the ``--mix`` of tasks, or the rows of ``--trace``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from cato.cli._common import _fail, _floats, _progress, _write_json, console

DEFAULT_DURATION_S = 60.0


def _deployments(cfg: Any) -> tuple[Any, ...]:
    from cato.core.coefficients import PRESETS, slowed
    from cato.sim.config import ModelDeployment

    out = []
    for m in cfg.models:
        c = PRESETS[m.coefficients]
        n = len(m.replicas)
        if m.emulated is not None:
            if m.emulated.time_dilation != 1.0:
                c = slowed(c, m.emulated.time_dilation)
            if m.emulated.max_num_seqs is not None:
                c = c.with_overrides(max_num_seqs=m.emulated.max_num_seqs)
            n = n or m.emulated.replicas
        if not n and m.autoscale is not None:
            n = max(1, m.autoscale.min_replicas)
        out.append(ModelDeployment(m.name, c, max(1, n), max(1, n), max(1, n)))
    return tuple(out)


def simulate_config(config: Path, *, trace: Optional[Path], mix: Optional[str], arrival: str,
                    rates: Optional[str], policies: Optional[str], seed: int, seeds: int,
                    duration: Optional[float], json_path: Optional[Path]) -> None:
    """Simulate ``config``'s tasks and models under every policy asked for (module
    docstring); prints the comparison table, writes the rows as JSON with ``--json``."""
    import numpy as np

    from cato.gateway.config import ConfigError, load_config
    from cato.report.table import comparison_table
    from cato.sim.runner import Cell, run_cell
    from cato.sim.scenarios import user_scenario
    from cato.sim.user_trace import (TraceError, build_user_trace_stream, load_user_trace,
                                     trace_rate_rps)
    from cato.sim.workload import parse_mix

    try:
        cfg = load_config(config)
    except ConfigError as e:
        _fail(str(e))
    if seeds < 1:
        _fail(f"--seeds must be >= 1, got {seeds}")
    if duration is not None and duration <= 0:
        _fail(f"--duration must be > 0, got {duration}")
    tasks = {k: s.task.scaled(cfg.sla_scale) for k, s in cfg.task_specs().items()}
    try:
        weights = parse_mix(mix, known=tasks) if mix else {k: 1.0 for k in tasks}
    except ValueError as e:
        _fail(f"--mix: {e}")
    conc = next((m.concurrency for m in cfg.models if m.concurrency), 32)
    rows_in = None
    if trace is not None:
        try:
            rows_in = load_user_trace(trace, tasks)
        except TraceError as e:
            _fail(str(e))
        rate_list = [trace_rate_rps(rows_in)]
        span = rows_in[-1].arrival_s
    else:
        rate_list = _floats(rates, "--rates") if rates else [1.0]
        span = duration or DEFAULT_DURATION_S
    try:
        sc = user_scenario(config.stem, tasks, _deployments(cfg), mix=weights, arrival=arrival,
                           duration_s=span, rates_rps=tuple(rate_list),
                           engine_concurrency=conc)
    except ValueError as e:
        _fail(str(e))
    pol_list = [p.strip() for p in policies.split(",")] if policies else list(sc.default_policies)
    for p in pol_list:
        if p not in sc.policies:
            _fail(f"unknown policy {p!r}; known: {', '.join(sc.policies)}")
    cells = [Cell(sc, p, r, s) for r in rate_list for s in range(seed, seed + seeds)
             for p in pol_list]
    rows: list[dict[str, Any]] = []
    with _progress() as prog:
        bar = prog.add_task(f"{sc.name}: {len(cells)} runs", total=len(cells))
        for cell in cells:
            stream = None
            if rows_in is not None:
                stream = build_user_trace_stream(rows_in, tasks,
                                                 np.random.default_rng(cell.seed))
            try:
                row, _ = run_cell(cell, stream=stream)
            except ValueError as e:
                _fail(str(e))
            row["source"] = str(trace) if trace is not None else f"{arrival}"
            rows.append(row)
            prog.advance(bar)
    console.print(comparison_table(rows, baseline=pol_list[-1] if len(pol_list) > 1 else None))
    _write_json({"config": str(config), "trace": None if trace is None else str(trace),
                 "tasks": sorted(tasks), "results": rows}, json_path)
