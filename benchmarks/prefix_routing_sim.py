"""Cache-affinity routing in the simulator (issue 17, parts 3-4): the peer prefix-aware
routers' sweep screen, and per-policy P95 TTFT / hit rate / attainment at fixed rates.

    .venv/bin/python benchmarks/prefix_routing_sim.py screen --scenario ide-sessions \\
        --rates 40,50 --seeds 0 1 --duration 60
    .venv/bin/python benchmarks/prefix_routing_sim.py metrics --scenario ide-sessions --rates 40 \\
        --policies cato,cato-plus,cato-prefix,prefix_aware --seeds 0 1 2 3 4 --duration 60
    .venv/bin/python benchmarks/prefix_routing_sim.py metrics --scenario ide-mixed --rates 36 \\
        --policies cato-plus,cato-prefix --seeds 0 1 2 3 4 --duration 120 --ttft-task completion

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
cache hit rate (hit tokens / prompt tokens looked up); with ``--ttft-task completion`` it adds, for
that task's calls alone, attainment, P50/P95 TTFT pooled over the seeds and the number of calls
that never got a first token (refused or unfinished: left out of the TTFT percentiles, as in the
pooled figures), since on a mixed scenario (``ide-mixed``) the pooled TTFT mixes completions
with E2E calls. ``capacity`` is ``cato capacity``
(:func:`cato.sim.capacity.measure_capacity`, target 0.9) split over processes: each part writes
its document with every simulated cell (``cells``: label -> ``[rate, seed, attainment]``);
``--merge`` preloads the parts' cells and measures every policy at once (cells not in the parts
are simulated), so the ratios use one set of bootstrap resamples as a single run would. JSON on
stdout (``--json`` to a file). ``summary --merge capacity.json`` reads such a document and
names each peer family's best point and every CATO variant's capacity ratio (paired bootstrap
interval) to the best peer, to each family's best and to prefix-blind ``cato-plus``/``cato``;
``plot --merge a.json b.json --json out.png`` draws each document's capacities with their
intervals, one panel per document.
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


def _pct_ms(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1e3, 1) if xs else None


def _cells(sc: Scenario, spec: PolicySpec, rate: float, seeds: list[int],
           task: str | None = None) -> dict[str, Any]:
    att: list[float] = []
    ttft: list[float] = []
    t_ttft: list[float] = []
    t_met = t_all = t_unserved = 0
    q = h = 0
    for s in seeds:
        row, res = run_spec(sc, spec, rate, s, stream=build_stream_for(sc, rate, s))
        att.append(float(row["attainment"]))
        ttft += [r.first_token_s - r.arrival_s for r in res.records if r.first_token_s is not None]
        q += res.prefix_cache_queries
        h += res.prefix_cache_hits
        for r in res.records:
            if task is None or r.task != task:
                continue
            t_all += 1
            t_met += bool(r.met)
            if r.first_token_s is None:
                t_unserved += 1
            else:
                t_ttft.append(r.first_token_s - r.arrival_s)
    out: dict[str, Any] = {
        "policy": spec.label, "rate_rps": rate, "seeds": seeds,
        "attainment": round(float(np.mean(att)), 4),
        "attainment_per_seed": [round(a, 4) for a in att],
        "p95_ttft_ms": _pct_ms(ttft, 95), "p50_ttft_ms": _pct_ms(ttft, 50),
        "hit_rate": round(h / q, 4) if q else 0.0}
    if task is not None:
        out.update({"task": task, "task_calls": t_all,
                    "task_attainment": round(t_met / t_all, 4) if t_all else None,
                    "task_p95_ttft_ms": _pct_ms(t_ttft, 95),
                    "task_p50_ttft_ms": _pct_ms(t_ttft, 50), "task_unserved": t_unserved})
    return out


class _PreloadedAttainment(cap.SimAttainment):
    """:class:`~cato.sim.capacity.SimAttainment` that answers from cells measured before."""

    cells: dict[tuple[str, float, int], float] = {}
    log: dict[str, list[list[float]]] = {}

    def attainment(self, spec: PolicySpec, rate_rps: float, seed: int) -> float:
        key = (spec.label, round(float(rate_rps), 6), int(seed))
        att = self.cells.get(key)
        if att is None:
            att = super().attainment(spec, rate_rps, seed)
            print(f"{spec.label} {key[1]:g} {key[2]} {att:.4f}", file=sys.stderr, flush=True)
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


def _boot(doc: dict[str, Any], label: str, settings: cap.SearchSettings, idx: np.ndarray
          ) -> tuple[float, np.ndarray]:
    """A policy's capacity and bootstrap capacities rebuilt from a capacity document's cells
    (the estimator and resamples of :mod:`cato.sim.capacity`, target 0.9)."""
    seeds = [int(s) for s in doc["seeds"]]
    cells = {(round(float(r), 6), int(s)): float(a) for r, s, a in doc["cells"][label]}
    table = cap.AttainmentTable(lambda r, s: cells[(round(float(r), 6), int(s))], seeds)
    for rate in sorted({r for r, _ in cells}):
        table.evaluate(rate)
    rates, att = table.grid()
    c, _ = cap.capacity_on_grid(rates, att.mean(axis=1), 0.9)
    return float(c[0]), cap.bootstrap_capacities(table, 0.9, idx)


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    """Each peer family's best point by capacity, and every CATO variant's ratio (paired
    resamples, 95 % percentile interval) to the best peer, to each family's best point and to
    the prefix-blind ``cato-plus`` and ``cato`` of the same document."""
    settings = cap.SearchSettings()
    idx = cap.resample_indices(len(doc["seeds"]), settings)
    est = {r["policy"]: _boot(doc, r["policy"], settings, idx) for r in doc["results"]}
    for r in doc["results"]:     # the rebuilt estimate is the document's
        if abs(est[r["policy"]][0] - r["slo_capacity_rps"]) > 1e-4:
            raise ValueError(f"{r['policy']}: cells give {est[r['policy']][0]}, the document "
                             f"{r['slo_capacity_rps']}")
    fams = {f: [k for k in est if k.startswith(f + "[")] for f in PREFIX_SWEEP_GRIDS}
    best = {f: max(ks, key=lambda k: est[k][0]) for f, ks in fams.items() if ks}
    peers = [k for ks in fams.values() for k in ks]
    best_boot = np.max(np.stack([est[k][1] for k in peers]), axis=0) if peers else None

    def ratio(a: str, b_cap: float, b_boot: np.ndarray) -> list[float | None]:
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = np.where(b_boot > 0, est[a][1] / np.where(b_boot > 0, b_boot, 1.0), np.inf)
        lo, hi = cap.percentile_interval(boot, settings.confidence)
        return [round(est[a][0] / b_cap, 4) if b_cap > 0 else None, round(lo, 4), round(hi, 4)]

    rows: dict[str, Any] = {}
    for a in (k for k in est if k not in peers):
        row: dict[str, Any] = {"capacity_rps": round(est[a][0], 3)}
        if best_boot is not None:
            row["vs_best_peer"] = ratio(a, max(est[k][0] for k in peers), best_boot)
        for f, k in best.items():
            row["vs_" + k] = ratio(a, est[k][0], est[k][1])
        for blind in ("cato-plus", "cato"):
            if blind in est and blind != a:
                row["vs_" + blind] = ratio(a, est[blind][0], est[blind][1])
        rows[a] = row
    return {"scenario": doc["scenario"], "duration_s": doc.get("duration_s"),
            "family_best": {f: [k, round(est[k][0], 3)] for f, k in best.items()},
            "best_peer": max(peers, key=lambda k: est[k][0]) if peers else None,
            "ratios": rows}


def _plot(docs: list[dict[str, Any]], out: Path) -> None:
    """SLO capacity per policy with its 95 % interval, one panel per capacity document."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(docs), figsize=(5.2 * len(docs), 5.2), squeeze=False)
    for ax, doc in zip(axes[0], docs):
        rows = doc["results"]
        y = np.arange(len(rows))[::-1]
        c = np.array([r["slo_capacity_rps"] for r in rows])
        lo = np.array([r["ci_low_rps"] for r in rows])
        hi = np.array([r["ci_high_rps"] for r in rows])
        colors = ["tab:blue" if r["policy"].startswith("cato") else "tab:gray" for r in rows]
        ax.barh(y, c, color=colors, alpha=0.8)
        ax.errorbar(c, y, xerr=[c - lo, hi - c], fmt="none", ecolor="black", capsize=2, lw=1)
        ax.set_yticks(y, [r["policy"] for r in rows], fontsize=7)
        ax.set_xlabel("SLO capacity @ 90 % (req/s)")
        dur = f"{doc['duration_s']:g} s, " if doc.get("duration_s") else ""
        ax.set_title(f"{doc['scenario']} ({dur}{len(doc['seeds'])} seeds)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("screen", "metrics", "capacity", "summary", "plot"))
    ap.add_argument("--scenario", default="ide-sessions")
    ap.add_argument("--rates", default="", help="comma-separated req/s")
    ap.add_argument("--policies", default="", help="metrics: comma-separated labels")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--merge", type=Path, nargs="*", default=[],
                    help="capacity: part documents whose cells to reuse")
    ap.add_argument("--ttft-task", default=None,
                    help="metrics: also report this task's calls alone (e.g. completion)")
    args = ap.parse_args(argv)
    if args.mode == "plot":        # --merge CAPACITY.json ... --json OUT.png
        if not args.merge or args.json is None:
            ap.error("plot needs capacity documents (--merge PATH ...) and --json OUT.png")
        _plot([json.loads(p.read_text()) for p in args.merge], args.json)
        return 0
    if args.mode == "summary":     # of a capacity document: --merge CAPACITY.json
        if len(args.merge) != 1:
            ap.error(f"summary reads one capacity document (--merge PATH), got {args.merge}")
        text = json.dumps(_summary(json.loads(args.merge[0].read_text())), indent=1)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
        print(text)
        return 0
    sc = scenario(args.scenario)
    if args.ttft_task is not None and sc.mix.get(args.ttft_task, 0.0) <= 0.0:
        ap.error(f"--ttft-task {args.ttft_task!r}: scenario {sc.name!r} has no such task in its "
                 f"mix; its tasks: {', '.join(k for k, v in sc.mix.items() if v > 0)}")
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
            rows.append(_cells(sc, spec, rate, args.seeds, args.ttft_task))
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
