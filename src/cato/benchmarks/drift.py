"""Re-profiling under drift (issue 16, part 5; docs/BENCHMARKS.md section 13): the ``drift``
scenario under a fixed, an adaptive and an oracle slack plan, over seeds; attainment over time
(plotted), before and after the drift, and when the adaptive plan first changed.

``cato bench drift --seeds 5 --out docs/img/drift_attainment.png``
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from cato.sim.config import SimResult
from cato.sim.scenarios import build_config, build_stream_for, scenario
from cato.sim.simulator import Simulator
from cato.sim.tenants import mean_ci95

MODES = ("fixed", "adaptive", "oracle")


def binned_attainment(res: SimResult, bin_s: float, duration_s: float) -> list[float]:
    """Attainment of the requests arriving in each ``bin_s`` window from the first arrival
    (0 for an empty bin)."""
    t0 = min(r.arrival_s for r in res.records)
    n = int(round(duration_s / bin_s))
    met, tot = [0] * n, [0] * n
    for r in res.records:
        i = min(n - 1, int((r.arrival_s - t0) // bin_s))
        tot[i] += 1
        met[i] += int(r.met)
    return [m / t if t else 0.0 for m, t in zip(met, tot)]


def attainment_between(res: SimResult, a: float, b: float) -> float:
    t0 = min(r.arrival_s for r in res.records)
    rs = [r for r in res.records if a <= r.arrival_s - t0 < b]
    return sum(r.met for r in rs) / len(rs) if rs else 0.0


def run(seeds: Sequence[int], *, rate: float, policy: str, bin_s: float,
        name: str = "drift") -> dict[str, Any]:
    sc = scenario(name)
    assert sc.drift is not None
    at = sc.drift.at_s
    out: dict[str, Any] = {"scenario": name, "rate_rps": rate, "policy": policy,
                           "seeds": list(seeds), "drift_at_s": at, "bin_s": bin_s, "modes": {}}
    for mode in MODES:
        bins: list[list[float]] = []
        before, after, first, rejected, changes = [], [], [], [], []
        for seed in seeds:
            cfg = replace(build_config(sc, sc.policies[policy]), replan=mode)
            res = Simulator(cfg, build_stream_for(sc, rate, seed), seed=seed).run()
            t0 = min(r.arrival_s for r in res.records)
            bins.append(binned_attainment(res, bin_s, sc.duration_s))
            before.append(attainment_between(res, 0.0, at))
            after.append(attainment_between(res, at, sc.duration_s))
            rejected.append(sum(r.status == "rejected" for r in res.records) / len(res.records))
            changes.append(len(res.plan_changes))
            if res.plan_changes:
                first.append(res.plan_changes[0].at_s - t0 - at)
        per_bin = [mean_ci95([b[i] for b in bins]) for i in range(len(bins[0]))]
        out["modes"][mode] = {
            "t_s": [bin_s * (i + 0.5) for i in range(len(per_bin))],
            "mean": [m for m, _ in per_bin], "ci95": [h for _, h in per_bin],
            "before": mean_ci95(before), "after": mean_ci95(after),
            "rejected": mean_ci95(rejected), "plan_changes": mean_ci95([float(c) for c in changes]),
            "first_change_after_drift_s": mean_ci95(first) if first else None,
        }
    return out


def table(result: dict[str, Any]) -> str:
    def pct(mh: Sequence[float]) -> str:
        return f"{100 * mh[0]:.1f} ± {100 * mh[1]:.1f}"
    lines = ["| plan | attainment before drift (%) | after drift (%) | rejected (%) | "
             "replans | first replan after drift (s) |", "|---|---|---|---|---|---|"]
    for mode, m in result["modes"].items():
        f = m["first_change_after_drift_s"]
        lines.append(f"| {mode} | {pct(m['before'])} | {pct(m['after'])} | "
                     f"{pct(m['rejected'])} | {m['plan_changes'][0]:.1f} | "
                     f"{'-' if f is None else f'{f[0]:.0f} ± {f[1]:.0f}'} |")
    return "\n".join(lines)
