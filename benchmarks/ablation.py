"""Ablation of CATO+'s levers (issue 14): at fixed cells (scenario, rate), chosen in advance
near each scenario's knee and in overload, the attainment of CATO+ with each rule switched off
or each option switched on, beside the paper's CATO and the strongest baselines, over seeds
0..n-1 with a bootstrap 95 % interval of the mean and of the paired difference to CATO+.

    .venv/bin/python benchmarks/ablation.py --seeds 5 --out docs/results/ablation

Writes ``ablation.json`` and ``ABLATION.md`` (the table BENCHMARKS §0.2 quotes) into ``--out``.
Every variant of a cell runs on the same request streams (common random numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cato.sim.capacity import percentile_interval
from cato.sim.runner import run_spec
from cato.sim.policies import UNBOUNDED_ONGOING, PolicySpec
from cato.sim.scenarios import build_stream_for, scenario

#: (scenario, rate req/s, what the cell is): fixed before the runs, near the best baseline's
#: 90 % capacity and in overload.
CELLS: tuple[tuple[str, float, str], ...] = (
    ("paper", 3.6, "knee"),
    ("mixA-poisson", 56.0, "knee"),
    ("mixB-poisson", 76.0, "knee"),
    ("mixB-poisson", 90.0, "overload"),
    ("mixB-bursty", 50.0, "knee"),
    ("multistep", 68.0, "knee"),
)


def _cp(label: str, engine_scheduling: str = "fcfs", **params: Any) -> PolicySpec:
    return PolicySpec(label, "cato-plus", routing_params=params,
                      engine_scheduling=engine_scheduling)


VARIANTS: tuple[PolicySpec, ...] = (
    PolicySpec("llmd", "llmd"),
    PolicySpec("edf", "edf"),
    PolicySpec("least_outstanding", "least_outstanding"),
    PolicySpec("ray-sweep[max_ongoing=unbounded]", "pow2",
               routing_params=dict(max_ongoing_requests=UNBOUNDED_ONGOING)),
    PolicySpec("cato", "cato"),
    _cp("cato-plus"),
    _cp("- hopeless last", hopeless_last=False),
    _cp("- prefill budget", prefill_budget_steps=None),
    _cp("- lax prompts wait", hold_lax=False),
    _cp("- soonest completion", soonest=False),
    _cp("no gateway ordering (engine FCFS)", prefill_budget_steps=None, hold_lax=False),
    _cp("engine ordering only (priority = deadline)", "priority", prefill_budget_steps=None,
        hold_lax=False, engine_priority="deadline"),
    _cp("+ engine priority (class)", "priority"),
    _cp("+ engine priority (deadline)", "priority", engine_priority="deadline"),
    _cp("+ refuse infeasible", refuse="infeasible"),
)
REFERENCE = "cato-plus"


def _mean_ci(x: np.ndarray, rng: np.random.Generator, n_boot: int = 2000
             ) -> tuple[float, float, float]:
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = percentile_interval(x[idx].mean(axis=1))
    return float(x.mean()), lo, hi


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=Path("docs/results/ablation"))
    ap.add_argument("--cells", default="", help="comma-separated scenario@rate to run "
                    "(default: all of CELLS)")
    args = ap.parse_args(argv)
    if args.seeds < 2:
        ap.error(f"--seeds must be >= 2, got {args.seeds}")
    cells = CELLS
    if args.cells:
        want = {c.strip() for c in args.cells.split(",") if c.strip()}
        cells = tuple(c for c in CELLS if f"{c[0]}@{c[1]:g}" in want)
        if not cells:
            ap.error(f"--cells names no cell of {[f'{c[0]}@{c[1]:g}' for c in CELLS]}")
    rng = np.random.default_rng(0)
    out: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for name, rate, kind in cells:
        sc = replace(scenario(name), duration_s=args.duration) if name != "paper" \
            else scenario(name)
        streams = {s: build_stream_for(sc, rate, s) for s in range(args.seeds)}
        att: dict[str, np.ndarray] = {}
        extra: dict[str, dict[str, float | None]] = {}
        for spec in VARIANTS:
            rows = [run_spec(sc, spec, rate, s, stream=streams[s])[0]
                    for s in range(args.seeds)]
            att[spec.label] = np.array([r["attainment"] for r in rows])
            extra[spec.label] = {
                "refused_share": float(np.mean([r.get("refused_share") or 0.0 for r in rows])),
            }
            print(f"[{time.perf_counter() - t0:6.0f} s] {name}@{rate:g} {spec.label}: "
                  f"{att[spec.label].mean():.3f}", file=sys.stderr, flush=True)
        ref = att[REFERENCE]
        rows_out = []
        for spec in VARIANTS:
            a = att[spec.label]
            m, lo, hi = _mean_ci(a, rng)
            d, dlo, dhi = _mean_ci(a - ref, rng)
            rows_out.append({"variant": spec.label, "attainment": m, "ci": [lo, hi],
                             "minus_cato_plus": d, "diff_ci": [dlo, dhi],
                             "per_seed": a.tolist(), **extra[spec.label]})
        out.append({"scenario": name, "rate_rps": rate, "cell": kind, "rows": rows_out})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps(
        {"seeds": args.seeds, "duration_s": args.duration, "cells": out}, indent=1))
    (args.out / "ABLATION.md").write_text(table(out, args.seeds))
    print(table(out, args.seeds))
    return 0


def table(cells: list[dict[str, Any]], seeds: int) -> str:
    head = ["variant", *[f"{c['scenario']} @ {c['rate_rps']:g} ({c['cell']})" for c in cells]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(cells[0]["rows"]):
        cols = [row["variant"]]
        for c in cells:
            r = c["rows"][i]
            s = f"{r['attainment']:.3f}"
            if r["variant"] != REFERENCE:
                s += f" ({r['minus_cato_plus']:+.3f} [{r['diff_ci'][0]:+.3f}, " \
                     f"{r['diff_ci'][1]:+.3f}])"
            if r.get("refused_share"):
                s += f", refused {r['refused_share']:.3f}"
            cols.append(s)
        lines.append("| " + " | ".join(cols) + " |")
    lines.append("")
    lines.append(f"Attainment, mean of seeds 0-{seeds - 1}; in brackets the paired difference "
                 f"to CATO+ with its bootstrap 95 % interval.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
