"""``cato fronts``' report: tables and plots of its JSON document
(:func:`cato.sim.pareto_report.report_json`), as plain dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import RenderableType

__all__ = ["fronts_plots", "fronts_tables"]


def _ci(x: Any, fmt: str = ".3f") -> str:
    return "-" if not x or x[0] is None else f"{x[0]:{fmt}}-{x[1]:{fmt}}"


def fronts_tables(doc: dict[str, Any]) -> list[RenderableType]:
    """What ``cato fronts`` prints, in order, per rate: the table of each family's front, then
    per family how its points compare with the best baseline front and its cost ratios."""
    from rich.markup import escape
    from rich.table import Table

    out: list[RenderableType] = []
    for r in doc["rates"]:
        t = Table(title=f"{doc['scenario']} @ {r['rate_rps']:g} req/s: Pareto fronts "
                        f"({len(doc['seeds'])} seeds; 95 % bootstrap intervals)")
        for col in ("family", "configuration on the front", "attainment", "95 % CI",
                    "replica-s / met", "95 % CI", "best baseline front"):
            t.add_column(col)
        pts = [p for p in r["points"] if p["on_family_front"]]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for p in pts:       # configurations with identical per-seed results: one row
            groups.setdefault((p["family"], json.dumps(p["per_seed"])), []).append(p)
        for same in sorted(groups.values(), key=lambda g: (g[0]["family"],
                                                          g[0]["attainment"] or 0.0)):
            p = same[0]
            named = [n for q in same for n in q["named"] if n != q["label"]]
            name = p["label"] + (f" (= {', '.join(named)})" if named else "") \
                + (f" (+{len(same) - 1} with identical runs)" if len(same) > 1 else "")
            cost = p["replica_s_per_met"]
            t.add_row(escape(p["family"]), escape(name), f"{p['attainment']:.3f}",
                      _ci(p["attainment_ci"]), "-" if cost is None else f"{cost:.3f}",
                      _ci(p["replica_s_per_met_ci"]),
                      "yes" if p["on_best_baseline_front"] else "")
        out.append(t)
        for fam, c in r["comparisons"].items():
            out += _comparison_lines(fam, c)
    return out


def _comparison_lines(fam: str, c: dict[str, Any]) -> list[RenderableType]:
    from rich.markup import escape

    out: list[RenderableType] = []
    n_dom = len(c["baseline_front_points_dominated"])
    n_all = n_dom + len(c["baseline_front_points_not_dominated"])
    out.append(escape(
        f"{fam}: its points match or beat {n_dom} of the {n_all} points of the best "
        f"baseline front" + (" (its front dominates)" if c["dominates_best_baseline_front"]
                             else "; not dominated: "
                             + ", ".join(c["baseline_front_points_not_dominated"]))))
    for g in c["ranges"]:
        out.append(f"  attainment {g['from_attainment']:.3f}-{g['to_attainment']:.3f}:"
                   f" {g['verdict']}")
    for q in c["cost_ratio_at"]:
        at = (f"{q['attainment']:.3f} (the best baseline's highest)"
              if q["at_best_baseline_top"] else f"{q['attainment']:g}")
        if q["ratio"] is None:
            why = ("neither front reaches it" if q["family_cost"] is None
                   and q["baseline_cost"] is None else "the baseline front does not "
                   "reach it" if q["baseline_cost"] is None else f"{fam}'s front does "
                   "not reach it")
            out.append(f"  at attainment {at}: no ratio ({why})")
            continue
        ci = (f"95 % CI {_ci(q['ci'])}" if q["ci"] else
              f"no interval: computable in {q['computable_fraction']:.0%} of resamples")
        out.append(escape(
            f"  at attainment {at}: cost ratio {q['ratio']:.3f} ({ci}); "
            f"{fam} {q['family_cost']:.3f} vs baseline {q['baseline_cost']:.3f} "
            f"replica-s/met; goal <= 0.8: {q['goal_verdict']}"))
    return out


def fronts_plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """Per rate, attainment vs replica-seconds per met request with the fronts; returns the
    paths written."""
    from cato.report import plots

    return [plots.plot_pareto_fronts(
        r["points"], r["fronts"], r["best_baseline_front"],
        out / f"{doc['scenario']}_fronts_{r['rate_rps']:g}.png",
        title=f"{doc['scenario']} @ {r['rate_rps']:g} req/s: attainment vs cost "
              f"({len(doc['seeds'])} seeds, {doc['duration_s']:g} s)")
        for r in doc["rates"]]
