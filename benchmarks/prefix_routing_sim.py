"""Cache-affinity routing in the simulator (issue 17, parts 3-4): the peer prefix-aware
routers' sweep screen, and per-policy P95 TTFT / hit rate / attainment at fixed rates.

    .venv/bin/python benchmarks/prefix_routing_sim.py screen --scenario ide-sessions \\
        --rates 40,50 --seeds 0 1 --duration 60
    .venv/bin/python benchmarks/prefix_routing_sim.py metrics --scenario ide-sessions --rates 40 \\
        --policies cato,cato-plus,cato-prefix,prefix_aware --seeds 0 1 2 3 4 --duration 60

``screen`` runs every point of the prefix sweep (:func:`cato.sim.sweeps.prefix_sweep`) at the
given rates and seeds and names each router's best point (highest mean attainment, ties: lower
mean P95 TTFT), the setting its SLO capacity is then measured at with ``cato capacity``.
``metrics`` reports, per policy and rate, attainment, P95 TTFT of the user-facing calls (the
completion's first token on ``ide-sessions``) pooled over the seeds, and the engines' prefix
cache hit rate (hit tokens / prompt tokens looked up). JSON on stdout (``--json`` to a file).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cato.sim.policies import PolicySpec
from cato.sim.runner import run_spec
from cato.sim.scenarios import Scenario, build_stream_for, scenario
from cato.sim.sweeps import PREFIX_SWEEP_GRIDS, prefix_sweep, resolve_policies


def _cells(sc: Scenario, spec: PolicySpec, rate: float, seeds: list[int]) -> dict[str, Any]:
    att: list[float] = []
    ttft: list[float] = []
    q = h = 0
    for s in seeds:
        row, res = run_spec(sc, spec, rate, s, stream=build_stream_for(sc, rate, s))
        att.append(float(row["attainment"]))
        ttft += [r.first_token_s - r.arrival_s for r in res.records if r.first_token_s is not None]
        q += res.prefix_cache_queries
        h += res.prefix_cache_hits
    return {"policy": spec.label, "rate_rps": rate, "seeds": seeds,
            "attainment": round(float(np.mean(att)), 4),
            "attainment_per_seed": [round(a, 4) for a in att],
            "p95_ttft_ms": round(float(np.percentile(ttft, 95)) * 1e3, 1) if ttft else None,
            "p50_ttft_ms": round(float(np.percentile(ttft, 50)) * 1e3, 1) if ttft else None,
            "hit_rate": round(h / q, 4) if q else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("screen", "metrics"))
    ap.add_argument("--scenario", default="ide-sessions")
    ap.add_argument("--rates", required=True, help="comma-separated req/s")
    ap.add_argument("--policies", default="", help="metrics: comma-separated labels")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sc = scenario(args.scenario)
    if args.duration is not None:
        sc = replace(sc, duration_s=args.duration)
    rates = [float(x) for x in args.rates.split(",")]
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"scenario": sc.name, "duration_s": sc.duration_s, "mode": args.mode,
                           "rows": rows}
    if args.mode == "screen":
        specs = list(prefix_sweep(sc).values())
    else:
        specs = resolve_policies(sc, [p for p in args.policies.split(",") if p])
    for spec in specs:
        for rate in rates:
            rows.append(_cells(sc, spec, rate, args.seeds))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.mode == "screen":
        best: dict[str, str] = {}
        for router in PREFIX_SWEEP_GRIDS:
            mine: dict[str, tuple[float, float]] = {}
            for r in rows:
                if r["policy"].startswith(router + "["):
                    a, p = mine.get(r["policy"], (0.0, 0.0))
                    mine[r["policy"]] = (a + r["attainment"], p + (r["p95_ttft_ms"] or 1e12))
            if mine:
                best[router] = max(mine, key=lambda k: (mine[k][0], -mine[k][1]))
        out["best"] = best
    text = json.dumps(out, indent=1)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(json.dumps(out.get("best", {})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
