"""``cato capacity``'s report: tables and plots of its JSON document
(:func:`cato.sim.capacity.report_json`), as plain dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import RenderableType

__all__ = ["capacity_plots", "capacity_tables", "fmt_rps"]


def fmt_rps(x: Any) -> str:
    """A rate (req/s) to 3 significant digits, ``-`` for none."""
    return "-" if x is None else f"{x:.3g}"


def capacity_tables(doc: dict[str, Any]) -> list[RenderableType]:
    """What ``cato capacity`` prints, in order: per target with a best tuned baseline (or once,
    without one), the table of capacities, then the best baseline and each policy's ratio to
    it."""
    from rich.markup import escape
    from rich.table import Table

    out: list[RenderableType] = []
    knee = doc["knee_rps"]
    censored = {(d["policy"], d["target"]): d["censored"] for d in doc["details"]}
    for best in doc["best_tuned_baseline"] or [None]:
        target = best["target"] if best else None
        rows = [r for r in doc["results"] if target is None or r["target"] == target]
        t = Table(title=f"{doc['scenario']}: SLO capacity"
                        + (f" at {target:g} attainment" if target is not None else "")
                        + f" (knee {knee:g} req/s, {len(doc['seeds'])} seeds)")
        for col in ("policy", "target", "capacity req/s", "95 % CI", "x knee", "note"):
            t.add_column(col)
        for r in sorted(rows, key=lambda r: (r["target"], -(r["slo_capacity_rps"] or 0))):
            c = censored.get((r["policy"], r["target"]))
            note = {"below": "misses the target at every rate", "above": "holds it at every "
                    "rate tried (lower bound)"}.get(c or "", "")
            if best and r["policy"] == best["policy"]:
                note = "best tuned baseline " + note
            cap = r["slo_capacity_rps"]
            t.add_row(escape(r["policy"]), f"{r['target']:g}", fmt_rps(cap),
                      f"{fmt_rps(r['ci_low_rps'])}-{fmt_rps(r['ci_high_rps'])}",
                      "-" if cap is None else f"{cap / knee:.2f}", note.strip())
        out.append(t)
        if best:
            out.append(escape(f"best tuned baseline at {best['target']:g}: "
                              f"{best['policy']} {json.dumps(best['config'])}"))
            for pol, q in best["ratios"].items():
                out.append(f"  {escape(pol)} / best baseline: {fmt_rps(q['ratio'])} "
                           f"(95 % CI {fmt_rps(q['ci_low'])}-{fmt_rps(q['ci_high'])})")
    return out


def capacity_plots(doc: dict[str, Any], out: Path, *, sweep_prefix: str) -> list[Path]:
    """Per target, attainment vs rate with the capacities marked (the Ray-like sweep's
    configurations, labels starting with ``sweep_prefix``, reduced to its best), plus a plot of
    the sweep's best 8 when it has more than one; returns the paths written."""
    from cato.report import plots

    name = doc["scenario"]
    paths: list[Path] = []
    for target in doc["targets"]:
        caps = {r["policy"]: (r["slo_capacity_rps"] or 0.0, r["ci_low_rps"] or 0.0,
                              r["ci_high_rps"] or 0.0)
                for r in doc["results"] if r["target"] == target}
        sweep = sorted((p for p in caps if p.startswith(sweep_prefix)), key=lambda p: -caps[p][0])
        main = [c for c in doc["curves"] if not c["policy"].startswith(sweep_prefix)
                or (sweep and c["policy"] == sweep[0])]
        paths.append(plots.plot_capacity_curves(
            main, caps, out / f"{name}_capacity_{target:g}.png", target=target,
            knee_rps=doc["knee_rps"], title=f"{name}: attainment vs rate, capacity at {target:g}"))
        if len(sweep) > 1:
            top = set(sweep[:8])
            paths.append(plots.plot_capacity_curves(
                [c for c in doc["curves"] if c["policy"] in top], caps,
                out / f"{name}_ray_sweep_{target:g}.png", target=target, knee_rps=doc["knee_rps"],
                title=f"{name}: Ray-like sweep (best {len(top)} of {len(sweep)}) at {target:g}"))
    return paths
