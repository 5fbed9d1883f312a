"""The `cato` command as a user runs it: a real subprocess."""

import json
import subprocess
import sys
from pathlib import Path

CONTRACT = {"policy", "scenario", "rate_rps", "seed", "attainment", "request_goodput",
            "utilization", "p95_ttft_ms", "p95_e2e_ms", "tasks"}


def cato(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cato", *args], capture_output=True, text=True,
                          timeout=300)


def test_simulate_writes_the_json_contract_records_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = cato("simulate", "--scenario", "paper", "--policies", "cato,ray", "--rates", "1,3.33",
             "--seeds", "2", "--duration", "60", "--json", str(out), "--records",
             str(tmp_path / "rec"), "--plots", str(tmp_path / "img"))
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 * 2 * 2
    for r in rows:
        assert CONTRACT <= set(r)
        assert 0.0 <= r["attainment"] <= 1.0
        for t in r["tasks"].values():
            assert CONTRACT - {"policy", "scenario", "rate_rps", "seed", "tasks"} <= set(t)
    recs = sorted((tmp_path / "rec").glob("*.jsonl"))
    assert len(recs) == 8
    first = json.loads(recs[0].read_text().splitlines()[0])
    assert {"id", "task", "policy", "arrival_s", "first_token_s", "last_token_s", "n_in",
            "n_out", "sla_kind", "sla_s", "status", "met", "replica"} <= set(first)
    pngs = list((tmp_path / "img").glob("*.png"))
    assert len(pngs) >= 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert "Goodput / ray" in p.stdout


def test_records_recompute_the_summary(tmp_path: Path) -> None:
    from cato.core.metrics import summarize
    from cato.core.records import RequestRecord
    out = tmp_path / "r.json"
    p = cato("simulate", "--scenario", "paper", "--policies", "cato", "--rates", "3",
             "--duration", "60", "--json", str(out), "--records", str(tmp_path))
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["results"][0]
    recs = [RequestRecord.from_json(json.loads(line))
            for line in next(tmp_path.glob("*.jsonl")).read_text().splitlines()]
    s = summarize(recs, duration_s=row["duration_s"] + row["warmup_cut_s"])
    assert s.overall.attainment == row["attainment"]
    assert s.overall.num_met == row["num_met"]


def test_bad_input_names_the_bad_value() -> None:
    p = cato("simulate", "--scenario", "nope")
    assert p.returncode == 2 and "unknown scenario 'nope'" in p.stderr
    p = cato("simulate", "--rates", "fast")
    assert p.returncode == 2 and "--rates" in p.stderr
    p = cato("simulate", "--policies", "magic")
    assert p.returncode == 2 and "unknown policy 'magic'" in p.stderr
    p = cato("simulate", "--sweep", "max_exceeded_times")
    assert p.returncode == 2 and "--sweep" in p.stderr


def test_scenarios_and_policies_list() -> None:
    p = cato("scenarios")
    assert p.returncode == 0 and "paper" in p.stdout and "mixA-poisson" in p.stdout
    p = cato("policies")
    assert "cato-plus" in p.stdout and "ray" in p.stdout


def test_bench_routing_reports_latency(tmp_path: Path) -> None:
    out = tmp_path / "routing.json"
    p = cato("bench", "routing", "--policies", "cato,round_robin", "--replicas", "10,200",
             "--decisions", "50", "--json", str(out))
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())["results"]
    assert {(r["policy"], r["num_replicas"]) for r in rows} == {
        ("cato", 10), ("cato", 200), ("round_robin", 10), ("round_robin", 200)}
    for r in rows:
        assert 0 < r["p50_us"] <= r["p99_us"] and r["decisions_per_s"] > 0
    p = cato("bench", "routing", "--replicas", "ten")
    assert p.returncode == 2 and "--replicas" in p.stderr


def test_serve_with_bad_config_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models:\n  - name: m\n    replicas: [{url: 'ftp://x'}]\n")
    p = cato("serve", "--config", str(cfg))
    assert p.returncode == 2
    assert "models.0.replicas.0.url" in p.stderr


def test_engine_with_unknown_preset_is_refused() -> None:
    p = cato("engine", "--preset", "tpu-v9", "--port", "0")
    assert p.returncode == 2 and "tpu-v9" in p.stderr


def test_demo_rejects_bad_values() -> None:
    p = cato("demo", "--rate", "-3")
    assert p.returncode == 2 and "-3" in p.stderr
    p = cato("demo", "--mix", "completion=abc")
    assert p.returncode == 2 and "abc" in p.stderr


def test_demo_runs_the_product_end_to_end(tmp_path: Path) -> None:
    """The README's main job: gateway + emulated engines + a mixed load, per-task goodput."""
    out = tmp_path / "demo.json"
    p = cato("demo", "--rate", "10", "--duration", "6", "--json", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["tasks"]) <= {"completion", "generation", "summarization", "translation"}
    assert sum(t["requests"] for t in res["tasks"].values()) > 30
    assert all(t["ok"] == t["requests"] for t in res["tasks"].values())
    assert res["goodput"] > 0.8   # 10 req/s is light load for two emulated A100s
    assert "overall goodput" in p.stdout


def test_bench_drift_plots_and_writes_json(tmp_path: Path) -> None:
    png, js = tmp_path / "drift.png", tmp_path / "drift.json"
    p = cato("bench", "drift", "--seeds", "1", "--rate", "2", "--bin", "50", "--out", str(png),
             "--json", str(js))
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(js.read_text())
    assert set(doc["modes"]) == {"fixed", "adaptive", "oracle"}
    assert "| adaptive |" in p.stdout
    bad = cato("bench", "per-class", "--scaling", "nope")
    assert bad.returncode != 0 and "--scaling must be cato or proactive" in bad.stderr + bad.stdout
