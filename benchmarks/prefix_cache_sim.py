"""Prefix cache on vs off in the simulator: one shared-prefix workload
(:mod:`cato.sim.prefix_workloads`) on a few A100 Llama-7B replicas under round robin routing;
TTFT P50/P95 of the user-facing calls, SLA attainment and the engines' prefix-cache hit rate,
per seed and pooled.

    .venv/bin/python benchmarks/prefix_cache_sim.py --workload ide --replicas 4 --users 96 --seeds 0 1 2
    .venv/bin/python benchmarks/prefix_cache_sim.py --workload repo --replicas 4 --rate 20 --seeds 0 1 2
    .venv/bin/python benchmarks/prefix_cache_sim.py --workload multistep --replicas 4 --rate 20 --seeds 0 1 2

``ide``: IDE sessions (completion); ``repo``: repository-shared contexts (generation);
``multistep``: mix B with the multi-step tasks, generation's repair step re-sending its first
step's context (Poisson at ``--rate``). The same stream (per seed) runs with the engines'
prefix caching on and off; nothing else differs. Round robin spreads a session's requests over
every replica, so the hit rate is what prefix-blind routing gets (issue 17's baseline for
cache-affinity routing).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import numpy as np

from cato.core.catalog import multi_step_tasks, single_step_tasks
from cato.core.coefficients import preset
from cato.sim.config import ModelDeployment, SimConfig
from cato.sim.prefix_workloads import (IdeSessions, RepoShared, ide_session_stream, ideal_reuse,
                                       repo_shared_stream, with_repeated_context)
from cato.sim.scenarios import ONE_MODEL
from cato.sim.simulator import Simulator
from cato.sim.workload import MIX_B, TaskArrival, build_stream


def _stream(args: argparse.Namespace, seed: int) -> tuple[list[TaskArrival], object]:
    rng = np.random.default_rng(seed)
    if args.workload == "ide":
        p: object = IdeSessions(users=args.users, session_s=args.session_s, interval_s=args.interval_s,
                                context_tokens=args.context_tokens, edit_rate=args.edit_rate)
        assert isinstance(p, IdeSessions)
        return ide_session_stream(p, rng), p
    if args.workload == "repo":
        p = RepoShared(rate_rps=args.rate, duration_s=args.duration_s, repos=args.repos,
                       repo_context_tokens=args.context_tokens)
        assert isinstance(p, RepoShared)
        return repo_shared_stream(p, rng), p
    tasks = multi_step_tasks(ONE_MODEL)
    times = np.cumsum(rng.exponential(1.0 / args.rate, int(args.rate * args.duration_s)))
    return with_repeated_context(build_stream(times, tasks, MIX_B, rng), tasks), "mix B multi-step"


def run(args: argparse.Namespace) -> dict[str, object]:
    coeffs = preset(args.preset)
    tasks = multi_step_tasks(ONE_MODEL) if args.workload == "multistep" else single_step_tasks(ONE_MODEL)
    rows: list[dict[str, object]] = []
    pooled: dict[bool, list[float]] = {True: [], False: []}
    params: object = None
    for seed in args.seeds:
        stream, params = _stream(args, seed)
        base = SimConfig(deployments=(ModelDeployment("llama-7b", coeffs, args.replicas, args.replicas,
                                                      args.replicas),),
                         tasks=tasks, routing="round_robin")
        for on in (True, False):
            res = Simulator(replace(base, prefix_caching=on), stream, seed=seed).run()
            ttft = [r.first_token_s - r.arrival_s for r in res.records if r.first_token_s is not None]
            pooled[on] += ttft
            rows.append({
                "seed": seed, "prefix_caching": on, "requests": len(stream),
                "rate_rps": round(len(stream) / res.duration_s, 2),
                "ttft_p50_ms": round(float(np.percentile(ttft, 50)) * 1e3, 2),
                "ttft_p95_ms": round(float(np.percentile(ttft, 95)) * 1e3, 2),
                "sla_met": round(sum(r.met for r in res.records) / len(res.records), 4),
                "hit_rate": round(res.prefix_cache_hit_rate, 4),
                "ideal_reuse": round(ideal_reuse(stream), 4),
            })
            print(json.dumps(rows[-1]), flush=True)
    summary = {("on" if on else "off"): {
        "ttft_p50_ms": round(float(np.percentile(v, 50)) * 1e3, 2),
        "ttft_p95_ms": round(float(np.percentile(v, 95)) * 1e3, 2)} for on, v in pooled.items()}
    return {"params": {**vars(args), "workload": repr(params)}, "runs": rows, "pooled": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", choices=("ide", "repo", "multistep"), default="ide")
    ap.add_argument("--preset", default="a100-llama7b")
    ap.add_argument("--rate", type=float, default=20.0, help="repo, multistep: requests/s")
    ap.add_argument("--duration-s", type=float, default=120.0, help="repo, multistep")
    ap.add_argument("--repos", type=int, default=8, help="repo")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--users", type=int, default=96)
    ap.add_argument("--session-s", type=float, default=120.0)
    ap.add_argument("--interval-s", type=float, default=3.0)
    ap.add_argument("--context-tokens", type=int, default=1500, help="ide: open file; repo: repository")
    ap.add_argument("--edit-rate", type=float, default=0.2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    print(json.dumps(run(args)["pooled"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
