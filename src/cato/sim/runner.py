"""Runs (scenario, policy, rate, seed) cells and turns them into summary rows."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from cato.core.metrics import summarize, summary_row
from cato.sim.config import SimResult
from cato.sim.policies import PolicySpec
from cato.sim.scenarios import Scenario, build_config, build_stream_for
from cato.sim.simulator import Simulator
from cato.sim.workload import TaskArrival


@dataclass(frozen=True)
class Cell:
    scenario: Scenario
    policy: str
    rate_rps: float
    seed: int
    overrides: Mapping[str, Any] | None = None

    @property
    def label(self) -> str:
        if not self.overrides:
            return self.policy
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        return f"{self.policy}[{extra}]"


def run_cell(cell: Cell, *, stream: Sequence[TaskArrival] | None = None,
             on_progress: Callable[[int, int], None] | None = None
             ) -> tuple[dict[str, Any], SimResult]:
    sc = cell.scenario
    try:
        spec = sc.policies[cell.policy]
    except KeyError:
        raise ValueError(f"scenario {sc.name!r} has no policy {cell.policy!r}; known: "
                         f"{', '.join(sorted(sc.policies))}") from None
    return run_spec(sc, spec, cell.rate_rps, cell.seed, overrides=cell.overrides,
                    label=cell.label, stream=stream, on_progress=on_progress)


def run_spec(sc: Scenario, spec: PolicySpec, rate_rps: float, seed: int, *,
             overrides: Mapping[str, Any] | None = None, label: str | None = None,
             stream: Sequence[TaskArrival] | None = None,
             on_progress: Callable[[int, int], None] | None = None
             ) -> tuple[dict[str, Any], SimResult]:
    """Run one (scenario, policy spec, rate, seed) cell: the spec need not be one of the
    scenario's named policies (a point of a parameter sweep). ``label`` names the row's policy
    (default: the spec's label)."""
    if stream is None:
        stream = build_stream_for(sc, rate_rps, seed)
    cfg = build_config(sc, spec, overrides=overrides)
    t0 = time.perf_counter()
    result = Simulator(cfg, stream, seed=seed, on_progress=on_progress).run()
    wall = time.perf_counter() - t0
    summary = summarize(result.records, duration_s=result.duration_s,
                        busy_replica_s=result.busy_replica_s,
                        provisioned_replica_s=result.provisioned_replica_s)
    row = summary_row(summary, policy=label or spec.label, scenario=sc.name, rate_rps=rate_rps,
                      seed=seed)
    row["load_fraction_of_knee"] = (rate_rps / sc.knee_rps) if sc.knee_rps else None
    row["num_scale_events"] = len(result.scale_events)
    row["mean_replicas"] = result.provisioned_replica_s / max(1e-9, result.end_s - (
        result.records[0].arrival_s if result.records else 0.0))
    row["num_engine_steps"] = result.num_engine_steps
    row["num_routing_decisions"] = result.num_routing_decisions
    row["sim_wall_s"] = wall
    return row, result


def write_records(path: Path, result: SimResult) -> None:
    """Per-request records as JSON lines (BENCHMARK_PROTOCOL.md section 3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for r in result.records:
            fh.write(json.dumps(r.to_json()) + "\n")


def find_knee(sc: Scenario, policies: Iterable[str], seeds: Sequence[int], *, lo: float,
              hi: float, target: float = 0.9, iters: int = 8) -> float:
    """Largest rate at which the best of ``policies`` holds ``target`` attainment on average
    over ``seeds`` (bisection on [lo, hi])."""
    pols = list(policies)

    def ok(rate: float) -> bool:
        best = 0.0
        for p in pols:
            att = [run_cell(Cell(sc, p, rate, s))[0]["attainment"] for s in seeds]
            best = max(best, sum(att) / len(att))
        return best >= target

    if not ok(lo):
        return lo
    for _ in range(iters):
        mid = (lo + hi) / 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo
