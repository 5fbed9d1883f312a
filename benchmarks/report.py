"""Summarise docs/results/*.json into markdown tables with ratios (mean +- std over seeds)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def fmt(vals: list[float], spec: str = ".3f") -> str:
    a = np.array([v for v in vals if v is not None], dtype=float)
    if a.size == 0:
        return "-"
    sd = a.std(ddof=1) if a.size > 1 else 0.0
    return f"{a.mean():{spec}} ± {sd:{spec}}"


def main(folder: str) -> None:
    for path in sorted(Path(folder).glob("*.json")):
        rows = json.loads(path.read_text())["results"]
        if not rows or "scenario" not in rows[0]:
            continue
        by: dict[tuple[float, str], list[dict]] = defaultdict(list)
        for r in rows:
            by[(r["rate_rps"], r["policy"])].append(r)
        rates = sorted({k[0] for k in by})
        pols = sorted({k[1] for k in by})
        seeds = sorted({r["seed"] for r in rows})
        print(f"\n### {path.stem}\n")
        print(f"seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); goodput ratio = per-seed ratio of "
              f"request goodput to the named baseline, mean ± std.\n")
        base_names = [b for b in ("ray", "ray-tuned", "round_robin", "least_outstanding") if b in pols]
        head = ["rate (req/s)", "load/knee", "policy", "attainment", "goodput (req/s)",
                "utilization", "replica-s/met", "P95 TTFT ms", "P95 E2E ms"]
        head += [f"goodput / {b}" for b in base_names]
        if "oracle" in pols or "oracle+cato" in pols:
            head.append("goodput / oracle")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for rate in rates:
            for p in pols:
                rs = sorted(by[(rate, p)], key=lambda r: r["seed"])
                if not rs:
                    continue
                lf = rs[0].get("load_fraction_of_knee")
                cells = [f"{rate:g}", f"{lf:.2f}" if lf else "-", p,
                         fmt([r["attainment"] for r in rs]),
                         fmt([r["request_goodput"] for r in rs], ".2f"),
                         fmt([r["utilization"] for r in rs]),
                         fmt([r.get("replica_seconds_per_met") for r in rs], ".3f"),
                         fmt([r["p95_ttft_ms"] for r in rs], ".0f"),
                         fmt([r["p95_e2e_ms"] for r in rs], ".0f")]
                for b in base_names + (["oracle" if "oracle" in pols else "oracle+cato"]
                                       if ("oracle" in pols or "oracle+cato" in pols) else []):
                    bs = {r["seed"]: r for r in by[(rate, b)]}
                    ratios = [r["request_goodput"] / bs[r["seed"]]["request_goodput"]
                              for r in rs if r["seed"] in bs and bs[r["seed"]]["request_goodput"]]
                    cells.append(fmt(ratios, ".2f"))
                print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
