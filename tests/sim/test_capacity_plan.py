"""The capacity planner (issue 16, part 4): the replica search on a tiny two-model config (short
runs), monotone plans in the rate, a trace scaled in time, the bound, the JSON document of
``cato plan`` and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cato.cli import app
from cato.cli.simulate_config import _deployments
from cato.gateway.config import load_config
from cato.sim.capacity_plan import PlanWorkload, _Evaluator, plan, plan_policy
from cato.sim.user_trace import load_user_trace

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEDS = (0, 1, 2)
runner = CliRunner()

# two tasks, each on its own model: 'chat' on 'big' (the heavy share of the mix), 'tag' on 'small'
TINY = """
models:
  - {name: big, coefficients: a100-llama7b, emulated: {replicas: 1}}
  - {name: small, coefficients: a100-llama7b, emulated: {replicas: 1}}
task_models: {chat: big, tag: small}
tasks:
  - name: chat
    description: a chat turn
    sla: {kind: ttft, seconds: 0.3, e2e_bound_s: 6.0}
    nodes:
      - name: answer
        kind: llm
        model: big
        prompt: "{input}"
        max_tokens: 128
        input_tokens: {median: 600, sigma: 0.4, min: 32, max: 2048}
        output_tokens: {median: 80, sigma: 0.4, min: 8, max: 128}
  - name: tag
    description: a label for a file
    sla: {kind: e2e, seconds: 2.0}
    nodes:
      - name: label
        kind: llm
        model: small
        prompt: "{input}"
        max_tokens: 16
        input_tokens: {median: 300, sigma: 0.4, min: 32, max: 1024}
        output_tokens: {median: 8, sigma: 0.3, min: 1, max: 16}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("plan") / "tiny.yaml"
    p.write_text(TINY)
    return p


def _workload(cfg_path: Path, rate: float, *, duration: float = 15.0) -> PlanWorkload:
    cfg = load_config(cfg_path)
    tasks = {k: s.task.scaled(cfg.sla_scale) for k, s in cfg.task_specs().items()}
    return PlanWorkload("tiny", tasks, _deployments(cfg), {"chat": 0.85, "tag": 0.15},
                        rate_rps=rate, duration_s=duration)


def test_the_search_finds_a_plan_that_no_single_removal_keeps(tiny: Path) -> None:
    wl = _workload(tiny, 30.0)
    ev = _Evaluator(wl, None)
    p = plan_policy(wl, "cato", target=0.95, seeds=SEEDS, max_replicas=8, factors=(1.0,),
                    _ev=ev)
    [r] = p.rates
    assert r.feasible and r.attainment >= 0.95 and r.rate_rps == 30.0
    assert r.replicas["big"] > r.replicas["small"] >= 1     # the model that misses grew first
    assert r.attainment == pytest.approx(ev.mean("cato", 1.0, r.replicas, SEEDS)[0])
    for m, n in r.replicas.items():                     # minimal along each model
        if n > 1:
            assert ev.mean("cato", 1.0, {**r.replicas, m: n - 1}, SEEDS)[0] < 0.95


def test_a_higher_rate_never_needs_fewer_replicas(tiny: Path) -> None:
    p = plan_policy(_workload(tiny, 10.0), "least_outstanding", target=0.95, seeds=SEEDS,
                    max_replicas=8, factors=(1.0, 2.0, 4.0))
    assert [r.factor for r in p.rates] == [1.0, 2.0, 4.0]
    for lo, hi in zip(p.rates, p.rates[1:]):
        assert all(hi.replicas[m] >= n for m, n in lo.replicas.items())
    assert p.rates[-1].total > p.rates[0].total
    # searched apart (no warm start), a rate 4x higher still needs more
    alone = plan_policy(_workload(tiny, 40.0), "least_outstanding", target=0.95, seeds=SEEDS,
                        max_replicas=8, factors=(1.0,))
    assert alone.rates[0].total > p.rates[0].total


def test_the_bound_makes_a_plan_infeasible() -> None:
    cfg = EXAMPLES / "tasks-rag.yaml"
    c = load_config(cfg)
    tasks = {k: s.task for k, s in c.task_specs().items()}
    wl = PlanWorkload("rag", tasks, _deployments(c), {k: 1.0 for k in tasks}, rate_rps=60.0,
                      duration_s=5.0)
    res = plan(wl, target=0.99, seeds=SEEDS, max_replicas=1, policies=("cato",),
               factors=(1.0,))
    [r] = res.policies[0].rates
    assert not r.feasible and r.replicas == {"code-llm": 1} and res.winner is None


def test_a_trace_is_scaled_in_time(tmp_path: Path) -> None:
    rows = "".join(f"{i * 0.25:.2f},lint-fix,200,60\n" for i in range(40))
    trace = tmp_path / "t.csv"
    trace.write_text("timestamp,task,input_tokens,output_tokens\n" + rows)
    c = load_config(EXAMPLES / "tasks-lint-fix.yaml")
    tasks = {k: s.task for k, s in c.task_specs().items()}
    wl = PlanWorkload("lf", tasks, _deployments(c), {"lint-fix": 1.0},
                      trace=load_user_trace(trace, tasks))
    assert wl.base_rate_rps == pytest.approx(4.0)
    p = plan_policy(wl, "cato", target=0.9, seeds=SEEDS, max_replicas=4, factors=(1.0, 2.0))
    assert [r.rate_rps for r in p.rates] == pytest.approx([4.0, 8.0])
    ev = _Evaluator(wl, None)
    fast = ev.stream(2.0, 0)
    assert fast is not None and fast[-1].arrival_s == pytest.approx(39 * 0.25 / 2.0)


def test_cato_plan_writes_the_json_document(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = runner.invoke(app, ["plan", "--config", str(tiny), "--rate", "10", "--mix",
                              "chat=0.85,tag=0.15", "--duration", "10", "--policies",
                              "cato,least_outstanding", "--factors", "1,2", "--max-replicas",
                              "6", "--json", str(out)])
    assert res.exit_code == 0, res.stderr
    assert "Capacity plan" in res.stdout
    doc = json.loads(out.read_text())
    assert set(doc) == {"target", "seeds", "max_replicas", "base_rate_rps", "source", "winner",
                        "policies", "config", "trace"}
    assert doc["seeds"] == [0, 1, 2] and doc["source"] == "poisson" and doc["target"] == 0.95
    assert [p["policy"] for p in doc["policies"]] == ["cato", "least_outstanding"]
    assert doc["winner"] in ("cato", "least_outstanding")
    for p in doc["policies"]:
        assert [r["factor"] for r in p["rates"]] == [1.0, 2.0]
        for r in p["rates"]:
            assert set(r) == {"factor", "rate_rps", "replicas", "total_replicas", "attainment",
                              "per_seed", "feasible", "evaluations"}
            assert set(r["replicas"]) == {"big", "small"}
            assert r["total_replicas"] == sum(r["replicas"].values())
            assert len(r["per_seed"]) == 3 and r["feasible"] and r["attainment"] >= 0.95


@pytest.mark.parametrize("args, message", [
    (["--rate", "5", "--target", "1.5"], "--target must be in (0, 1], got 1.5"),
    (["--rate", "5", "--seeds", "2"], "--seeds must be >= 3, got 2"),
    (["--rate", "5", "--max-replicas", "0"], "--max-replicas must be >= 1, got 0"),
    ([], "give exactly one of --trace and --rate"),
    (["--rate", "-2"], "--rate must be > 0 req/s, got -2"),
    (["--rate", "5", "--policies", "cato,magic"], "unknown policy 'magic'"),
    (["--rate", "5", "--factors", "1,0"], "--factors must be positive numbers, got '1,0'"),
    (["--rate", "5", "--mix", "chat=1,nope=2"], "nope"),
    (["--trace", "/nonexistent/t.csv"], "cannot read trace '/nonexistent/t.csv'"),
])
def test_bad_input_is_named(tiny: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, ["plan", "--config", str(tiny), *args])
    assert res.exit_code == 2
    assert message in " ".join(res.stderr.split())


def test_a_bad_config_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: []\n")
    res = runner.invoke(app, ["plan", "--config", str(bad), "--rate", "5"])
    assert res.exit_code == 2 and "models" in res.stderr
