"""Markdown tables of `cato capacity` JSON files: per scenario and target, the best tuned
baseline (its configuration), its SLO capacity, and CATO's, CATO+'s (with and without early
rejection) and the oracle's capacity ratios to it with their bootstrap 95 % intervals.

    .venv/bin/python benchmarks/capacity_table.py docs/results/capacity/*.json
    .venv/bin/python benchmarks/capacity_table.py --readme docs/results/capacity/*.json

``--readme``: the short table of the README (90 % and 95 %, two decimals).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _config(cfg: dict[str, Any]) -> str:
    parts = [cfg.get("routing", "?")]
    params = {**cfg.get("routing_params", {}), **cfg.get("scaling_params", {})}
    for k in ("engine_concurrency", "engine_scheduling"):
        if k in cfg:
            params[k.replace("engine_", "")] = cfg[k]
    if params:
        parts.append(", ".join(f"{k}={v}" for k, v in sorted(params.items())))
    return " ".join(parts)


def _ratio(r: dict[str, float] | None) -> str:
    if r is None or r.get("ratio") is None:
        return "—"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    ci = "no interval" if lo is None or hi is None else f"{lo:.3f}, {hi:.3f}"
    return f"{r['ratio']:.3f} [{ci}]"


def _short(r: dict[str, float] | None) -> str:
    if r is None or r.get("ratio") is None:
        return "—"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    return f"{r['ratio']:.2f}" + ("" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]")


REFUSE = "cato-plus-refuse"


def rows(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    caps = {(r["policy"], r["target"]): r for r in data["results"]}
    out = []
    for best in data["best_tuned_baseline"]:
        t = best["target"]
        ratios = best.get("ratios", {})
        cato, plus = caps.get(("cato", t)), caps.get(("cato-plus", t))
        cap = (lambda r: f"{r['slo_capacity_rps']:.3g}" if r else "—")
        out.append(
            f"| {best['scenario']} | {t:g} | {best['policy']} ({_config(best['config'])}) | "
            f"{best['slo_capacity_rps']:.3g} [{best['ci_low_rps']:.3g}, "
            f"{best['ci_high_rps']:.3g}] | {cap(cato)} | {cap(plus)} | "
            f"**{_ratio(ratios.get('cato'))}** | **{_ratio(ratios.get('cato-plus'))}** | "
            f"{_ratio(ratios.get(REFUSE))} | {_ratio(ratios.get('oracle'))} |")
    return out


def readme_rows(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    by_t = {b["target"]: b for b in data["best_tuned_baseline"]}
    b90, b95 = by_t.get(0.9), by_t.get(0.95)
    if b90 is None or b95 is None:
        return []
    r90, r95 = b90.get("ratios", {}), b95.get("ratios", {})
    return [f"| {b90['scenario']} | {b90['policy']} ({b90['slo_capacity_rps']:.3g} req/s) | "
            f"{_short(r90.get('cato'))} | {_short(r90.get('cato-plus'))} | "
            f"{_short(r90.get(REFUSE))} | {_short(r95.get('cato-plus'))} | "
            f"{_short(r95.get(REFUSE))} |"]


def main(args: list[str]) -> None:
    # a `cato capacity --policies gateway-sweep,...` supplement is no scenario table of its own
    args = [a for a in args if not a.endswith(".gateway-sweep.json")]
    if args and args[0] == "--readme":
        print("| scenario | best tuned baseline at 90 % (capacity) | CATO / best, 90 % | "
              "CATO+ / best, 90 % | CATO+ refusing / best, 90 % | CATO+ / best, 95 % | "
              "CATO+ refusing / best, 95 % |")
        print("|---|---|---|---|---|---|---|")
        for p in args[1:]:
            for line in readme_rows(Path(p)):
                print(line)
        return
    print("| scenario | target | best tuned baseline (config) | its capacity (req/s) [95 % CI] "
          "| CATO | CATO+ | CATO / best [95 % CI] | CATO+ / best | CATO+ refusing / best | "
          "oracle / best |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in args:
        for line in rows(Path(p)):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
