"""`cato bench compare`: the scenario's engines as emulated presets, the gateway config, the
cost arithmetic, and the report (unit), plus one live comparison of two gateway policies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cato.benchmarks.compare import CompareSettings, run_compare
from cato.benchmarks.compare_cost import busy_seconds, cost_fields
from cato.benchmarks.compare_report import ratio_table, report_markdown, write_report
from cato.benchmarks.compare_systems import (gateway_config, live_models, match_preset,
                                             scenario_sla_scale)
from cato.core.coefficients import preset, slowed
from cato.core.metrics import discard_warmup
from cato.core.records import RequestRecord
from cato.gateway.config import parse_config
from cato.gateway.profile import ModelProfile
from cato.sim.scenarios import scenario


def test_paper_engines_are_slowed_presets_with_a_batch_cap() -> None:
    models = {m.name: m for m in live_models(scenario("paper"))}
    assert models["codellama-7b"].preset == "a100-llama7b"
    assert models["starcoder2-7b"].preset == "a100-starcoder2-7b"
    assert all(m.slowdown == pytest.approx(2.5) and m.max_num_seqs == 1 and m.replicas == 6
               for m in models.values())
    assert scenario_sla_scale(scenario("paper")) == pytest.approx(2.5)
    assert scenario_sla_scale(scenario("mixA-poisson")) == pytest.approx(1.0)
    auto = live_models(scenario("mixA-autoscaled"))[0]
    assert (auto.replicas, auto.min_replicas, auto.max_replicas) == (2, 1, 16)
    c = slowed(preset("h100-llama7b"), 3.0, name="x").with_overrides(max_num_seqs=4)
    assert match_preset(c) == ("h100-llama7b", pytest.approx(3.0), 4)
    with pytest.raises(ValueError, match="no preset"):
        match_preset(preset("a100-llama7b").with_overrides(a_ms=99.0))


def test_gateway_config_reproduces_the_scenario_engines() -> None:
    sc = scenario("paper")
    raw = gateway_config(sc, live_models(sc), "round_robin", dilation=4.0, seed=7,
                         autoscale=False)
    cfg = parse_config(raw)
    assert cfg.routing.policy == "round_robin" and cfg.sla_scale == pytest.approx(10.0)
    for m in cfg.models:
        assert m.emulated is not None and m.emulated.replicas == 6
        assert m.emulated.time_dilation == pytest.approx(10.0) and m.emulated.max_num_seqs == 1
        assert m.concurrency == 1
        assert m.accepts_priority and m.emulated.scheduling_policy == "priority"
    assert cfg.task_models["completion"] == "starcoder2-7b"
    # the gateway's latency model is the emulated engines' (same batch cap, same slowdown)
    mp = ModelProfile(coefficients="a100-llama7b", time_scale=10.0, max_num_seqs=1)
    assert mp.coeffs().max_num_seqs == 1
    assert mp.coeffs().t_floor_ms == pytest.approx(preset("a100-llama7b").t_floor_ms * 10)
    auto = parse_config(gateway_config(scenario("mixA-autoscaled"),
                                       live_models(scenario("mixA-autoscaled")), "cato",
                                       dilation=1.0, seed=0, autoscale=True,
                                       scaling={"interval_s": 2.0}))
    a = auto.models[0].autoscale
    assert a is not None and (a.min_replicas, a.max_replicas) == (1, 16)


def _rec(i: int, replica: str | None, sent: float, end: float, met: bool = True
         ) -> RequestRecord:
    return RequestRecord(id=i, task="generation", policy="x", arrival_s=sent,
                         first_token_s=sent + 0.1, last_token_s=end, n_in=10, n_out=5,
                         sla_kind="ttft", sla_s=1.0, status="ok", met=met, replica=replica)


def test_busy_seconds_is_the_union_of_request_spans_per_replica() -> None:
    recs = [_rec(0, "a", 0.0, 2.0), _rec(1, "a", 1.0, 3.0), _rec(2, "a", 5.0, 6.0),
            _rec(3, "b", 0.0, 1.0), _rec(4, None, 0.0, 9.0)]
    assert busy_seconds(recs) == pytest.approx(3.0 + 1.0 + 1.0)
    c = cost_fields(recs, [(100.0, 2), (101.0, 4), (150.0, 9)], 100.0, 10.0, 1)
    assert c["mean_replicas"] == pytest.approx(3.0)       # samples in the run's window only
    assert c["replica_s_per_met"] == pytest.approx(30.0 / 5)
    assert c["utilization"] is None                       # a fifth of the records lack a replica
    c = cost_fields(recs[:4], [], 0.0, 10.0, 2)
    assert c["utilization"] == pytest.approx(5.0 / 20.0)


def test_report_has_ratios_of_means_with_bootstrap_intervals() -> None:
    def run(system: str, seed: int, att: float, p95: float) -> dict[str, object]:
        return {"system": system, "seed": seed, "attainment": att, "request_goodput": att * 2,
                "tasks": {"generation": {"p95_ttft_ms": p95}}, "utilization": None}
    result = {"settings": {"scenario": "paper", "rate_rps": 3.33, "arrival": "poisson",
                           "duration_s": 60.0, "seeds": [0, 1], "systems": ["cato", "ray-serve"],
                           "time_dilation": 1.0, "autoscale": False},
              "runs": [run("cato", 0, 0.9, 100.0), run("ray-serve", 0, 0.6, 400.0),
                       run("cato", 1, 0.8, 200.0), run("ray-serve", 1, 0.8, 200.0)]}
    rt = ratio_table(result, "ray-serve")
    att = rt["cato"]["attainment"]
    assert att is not None
    assert att["ratio"] == pytest.approx(1.7 / 1.4)           # not the mean of ratios, 1.25
    assert att["per_seed"] == pytest.approx([1.5, 1.0]) and att["seeds"] == [0, 1]
    assert att["lo"] <= att["ratio"] <= att["hi"] and att["n"] == 2
    # two seeds: resamples are {0,0}, {1,1}, {0,1}: the interval spans 1.0 .. 1.5
    assert (att["lo"], att["hi"]) == (pytest.approx(1.0), pytest.approx(1.5))
    p95 = rt["cato"]["tasks.generation.p95_ttft_ms"]
    assert p95 is not None and p95["ratio"] == pytest.approx(300.0 / 600.0)
    assert rt["cato"]["utilization"] is None                  # no value anywhere
    assert rt["ray-serve"]["attainment"] is not None
    assert rt["ray-serve"]["attainment"]["ratio"] == 1.0
    md = report_markdown(result, ["ray-serve"])
    assert "| cato | 1.214 [1.000, 1.500]" in md and "utilisation" not in md
    assert "ratio of the means" in md


@pytest.mark.timeout(240)
def test_live_compare_of_two_gateway_policies(tmp_path: Path) -> None:
    """Both systems serve the same stream, request for request; each summary is computed from
    that system's own records (warm-up cut as the protocol says); and the report's per-seed
    ratios are the ratios of those values (attainment, goodput, P95 TTFT)."""
    settings = CompareSettings(scenario="paper", rate=2.0, seeds=[0], duration_s=12.0,
                               systems=["cato", "round-robin"], time_dilation=2.0,
                               out_dir=tmp_path, progress=False)
    result = run_compare(settings, log=lambda s: None)
    runs = {r["system"]: r for r in result["runs"]}
    assert set(runs) == {"cato", "round-robin"}
    assert all(r["seed"] == 0 for r in runs.values())
    # the identical stream: same requests, each system answered all of them
    assert runs["cato"]["num_requests"] == runs["round-robin"]["num_requests"] > 10
    for r in runs.values():
        assert r["num_completed"] == r["num_arrived"]
        assert r["mean_replicas"] == pytest.approx(12.0)
        assert 0.0 < r["utilization"] <= 1.0
        # measured as the protocol's section 4 asks: the gateway's CPU apart from the 12
        # engines', per completed request; the same calls per engine; late sends counted
        assert r["engine_processes"] == 12 and r["gateway_processes"] >= 1
        assert r["gateway_cpu_s"] > 0 and r["engine_cpu_s"] > 0
        assert r["cpu_s_per_request"] == pytest.approx(
            r["gateway_cpu_s"] / r["num_requests"])            # every request completed
        assert r["per_engine_concurrency"] == {"codellama-7b": 1, "starcoder2-7b": 1}
        assert r["late_tolerance_ms"] == 50.0 and len(r["late_ids"]) == r["late_discarded"]
    assert result["settings"]["pinning"]["mode"] in ("separate", "shared", "none")
    records = {name: [RequestRecord.from_json(json.loads(line)) for line in
                      (tmp_path / "runs" / "seed0" / f"{name}.records.jsonl").read_text()
                      .splitlines()]
               for name in runs}
    asked = {name: sorted((r.id, r.task, r.n_in, r.n_out, r.sla_kind, r.sla_s) for r in recs)
             for name, recs in records.items()}
    assert asked["cato"] == asked["round-robin"]              # request for request
    assert len(asked["cato"]) == runs["cato"]["num_requests"]
    # each summary from its own records: attainment, goodput, P95 TTFT of generation
    mine: dict[str, dict[str, float]] = {}
    for name, recs in records.items():
        assert all(r.status == "ok" and r.replica is not None for r in recs)
        kept, cut = discard_warmup(recs)                      # live_summary's defaults
        run = runs[name]
        kept = [r for r in kept if r.id not in set(run["late_ids"])]   # sent late: discarded
        met = sum(r.met for r in kept)
        assert (run["num_arrived"], run["num_met"]) == (len(kept), met)
        assert run["warmup_cut_s"] == pytest.approx(cut)
        ttft_ms = [1000 * r.ttft_s for r in kept if r.task == "generation" and r.ttft_s is not None]
        mine[name] = {"attainment": met / len(kept),
                      "request_goodput": met / run["duration_s"],
                      "tasks.generation.p95_ttft_ms": float(np.percentile(ttft_ms, 95))}
        assert run["attainment"] == pytest.approx(mine[name]["attainment"])
        assert run["request_goodput"] == pytest.approx(mine[name]["request_goodput"])
        assert run["tasks"]["generation"]["p95_ttft_ms"] == pytest.approx(
            mine[name]["tasks.generation.p95_ttft_ms"])
    # the report's ratios: cato's value over round-robin's, metric by metric (one seed: the
    # ratio of means is the seed's ratio, the interval degenerate)
    table = ratio_table(result, "round-robin")
    for path, ours in mine["cato"].items():
        base = mine["round-robin"][path]
        entry = table["cato"][path]
        if not base:
            assert entry is None, path
            continue
        assert entry is not None
        assert entry["ratio"] == entry["lo"] == entry["hi"] == pytest.approx(ours / base), path
        assert entry["per_seed"] == [pytest.approx(ours / base)]
    paths = write_report(result, tmp_path, baselines=["round-robin"])
    doc = json.loads(paths[0].read_text())
    assert doc["settings"]["systems"] == ["cato", "round-robin"]
    assert doc["ratios"]["round-robin"]["cato"]["attainment"]["ratio"] == \
        pytest.approx(table["cato"]["attainment"]["ratio"])
    md = paths[1].read_text()
    ratio_rows = md.split("Ratios to **round-robin**")[1]
    x = table["cato"]["attainment"]["ratio"]
    cell = f"{x:.3f} [{x:.3f}, {x:.3f}]" if abs(x) < 10 else f"{x:.0f} [{x:.0f}, {x:.0f}]"
    assert f"| cato | {cell} |" in ratio_rows, ratio_rows
    assert paths[2].stat().st_size > 10_000


def test_cli_names_a_bad_system() -> None:
    r = subprocess.run([sys.executable, "-m", "cato", "bench", "compare", "--systems",
                        "cato,nginx"], capture_output=True, text=True)
    assert r.returncode == 2 and "nginx" in r.stderr + r.stdout
