"""Cache-affinity routing in the simulator (issue 17, parts 3-4): the peer prefix-aware
routers' sweep screen, and per-policy P95 TTFT / hit rate / attainment at fixed rates.

    .venv/bin/python benchmarks/prefix_routing_sim.py screen --scenario ide-sessions \\
        --rates 40,50 --seeds 0 1 --duration 60
    .venv/bin/python benchmarks/prefix_routing_sim.py metrics --scenario ide-sessions --rates 40 \\
        --policies cato,cato-plus,cato-prefix,prefix_aware --seeds 0 1 2 3 4 --duration 60

    .venv/bin/python benchmarks/prefix_routing_sim.py capacity --scenario ide-mixed \\
        --policies cato-plus,cato-prefix --seeds 0 1 2 3 4 --duration 60 --json part_a.json
    .venv/bin/python benchmarks/prefix_routing_sim.py capacity --scenario ide-mixed \\
        --policies cato-plus,cato-prefix,llmd_prefix[w=2] --seeds 0 1 2 3 4 --duration 60 \\
        --merge part_a.json part_b.json --json capacity.json

``screen`` runs every point of the prefix sweep (:func:`cato.sim.sweeps.prefix_sweep`) at the
given rates and seeds and names each router's best point (highest mean attainment, ties: lower
mean P95 TTFT), the setting its SLO capacity is then measured at with ``cato capacity``.
``metrics`` reports, per policy and rate, attainment, P95 TTFT of the user-facing calls (the
completion's first token on ``ide-sessions``) pooled over the seeds, and the engines' prefix
cache hit rate (hit tokens / prompt tokens looked up). ``capacity`` is ``cato capacity``
(:func:`cato.sim.capacity.measure_capacity`, target 0.9) split over processes: each part writes
its document with every simulated cell (``cells``: label -> ``[rate, seed, attainment]``);
``--merge`` preloads the parts' cells and measures every policy at once (cells not in the parts
are simulated), so the ratios use one set of bootstrap resamples as a single run would. JSON on
stdout (``--json`` to a file).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cato.sim import capacity as cap
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


class _PreloadedAttainment(cap.SimAttainment):
    """:class:`~cato.sim.capacity.SimAttainment` that answers from cells measured before."""

    cells: dict[tuple[str, float, int], float] = {}
    log: dict[str, list[list[float]]] = {}

    def attainment(self, spec: PolicySpec, rate_rps: float, seed: int) -> float:
        key = (spec.label, round(float(rate_rps), 6), int(seed))
        att = self.cells.get(key)
        if att is None:
            att = super().attainment(spec, rate_rps, seed)
        self.log.setdefault(spec.label, []).append([key[1], key[2], att])
        return att


def _capacity(sc: Scenario, labels: list[str], seeds: list[int], merge: list[Path]
              ) -> dict[str, Any]:
    for part in merge:
        for label, rows in json.loads(part.read_text())["cells"].items():
            for rate, seed, att in rows:
                _PreloadedAttainment.cells[(label, round(float(rate), 6), int(seed))] = att
    specs = resolve_policies(sc, labels)
    real = cap.SimAttainment
    cap.SimAttainment = _PreloadedAttainment   # type: ignore[misc]
    try:
        rep = cap.measure_capacity(sc, specs, seeds, (0.9,))
    finally:
        cap.SimAttainment = real   # type: ignore[misc]
    doc = cap.report_json(rep)
    doc["duration_s"] = sc.duration_s
    doc["cells"] = {k: sorted(set(map(tuple, v))) for k, v in _PreloadedAttainment.log.items()}
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("screen", "metrics", "capacity"))
    ap.add_argument("--scenario", default="ide-sessions")
    ap.add_argument("--rates", default="", help="comma-separated req/s")
    ap.add_argument("--policies", default="", help="metrics: comma-separated labels")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--merge", type=Path, nargs="*", default=[],
                    help="capacity: part documents whose cells to reuse")
    args = ap.parse_args(argv)
    sc = scenario(args.scenario)
    if args.duration is not None:
        sc = replace(sc, duration_s=args.duration)
    if args.mode == "capacity":
        doc = _capacity(sc, [p for p in args.policies.split(",") if p], args.seeds, args.merge)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(json.dumps({"results": [(r["policy"], r["slo_capacity_rps"], r["ci_low_rps"],
                                       r["ci_high_rps"]) for r in doc["results"]],
                          "best": doc["best_tuned_baseline"]}))
        return 0
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
