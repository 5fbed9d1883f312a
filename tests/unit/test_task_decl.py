"""Task types declared in config (issue 16, part 1): the default declarations equal the built-in
catalogue exactly; bad declarations fail naming their field; the examples load; the ``when``
rule and the template language."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from cato.core.catalog import TASK_NAMES, multi_step_tasks, single_step_tasks
from cato.core.coefficients import preset
from cato.core.conditions import Condition, ConditionError, parse_condition
from cato.core.lifecycle import TaskProgress
from cato.core.task import NodeKind
from cato.core.templates import TemplateError, check_template, render
from cato.gateway.config import ConfigError, load_config, parse_config
from cato.serving.planner import Planner
from cato.workloads.task_decl import default_declarations, direct_task

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODELS = {"completion": "a", "generation": "b", "summarization": "a", "translation": "b"}
COEFFS = {"a": preset("a100-llama7b"), "b": preset("h100-llama7b")}


@pytest.mark.parametrize("scale", [1.0, 0.8, 2.5])
def test_default_declarations_are_the_builtin_catalogue_exactly(scale: float) -> None:
    decls = {d.name: d.spec(lambda t: MODELS[t]) for d in default_declarations()}
    assert list(decls) == list(TASK_NAMES)
    multi = multi_step_tasks(MODELS, sla_scale=scale)
    single = single_step_tasks(MODELS, sla_scale=scale)
    for name, spec in decls.items():
        task = spec.task.scaled(scale)
        assert task == multi[name]
        assert direct_task(task) == single[name]


def test_planner_from_declarations_plans_exactly_as_from_the_catalogue() -> None:
    specs = {d.name: d.spec(lambda t: MODELS[t]) for d in default_declarations()}
    old = Planner(MODELS, COEFFS, sla_scale=1.3)
    new = Planner(MODELS, COEFFS, sla_scale=1.3, tasks=specs)
    for cat in ("direct", "pipelines"):
        a, b = getattr(old, cat), getattr(new, cat)
        assert sorted(a) == sorted(b)
        for name in a:
            assert a[name].task == b[name].task
            assert a[name].plan == b[name].plan
            assert a[name].offsets == b[name].offsets
    assert old.task_names() == new.task_names()


def _base() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / "tasks-lint-fix.yaml").read_text())


def _error(mut: Callable[[dict[str, Any]], None]) -> str:
    raw = _base()
    mut(raw)
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    return str(e.value)


def _node(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in raw["tasks"][0]["nodes"] if n["name"] == name)


def test_a_cycle_is_named() -> None:
    msg = _error(lambda r: _node(r, "lint").update(after=["test"]))
    assert "tasks.0" in msg and "cycle" in msg and "'lint'" in msg and "'test'" in msg


def test_an_unknown_model_names_its_field() -> None:
    msg = _error(lambda r: _node(r, "generate").update(model="gpt-9"))
    assert "tasks.0.nodes.0.model" in msg and "'gpt-9'" in msg and "code-llm" in msg


def test_an_unknown_after_node_names_its_field() -> None:
    msg = _error(lambda r: _node(r, "test").update(after=["lnt"]))
    assert "nodes.2 (test).after" in msg and "'lnt'" in msg


def test_an_unknown_template_field_names_the_field() -> None:
    msg = _error(lambda r: _node(r, "fix").update(prompt="{input} {lint.json.errors} {tests.text}"))
    assert "nodes.3 (fix).prompt" in msg and "{tests.text}" in msg


def test_a_template_field_from_a_downstream_node_is_refused() -> None:
    msg = _error(lambda r: _node(r, "lint").update(body={"code": "{fix.text}"}))
    assert "nodes.1 (lint).body.code" in msg and "{fix.text}" in msg


def test_an_output_the_kind_does_not_produce_is_named() -> None:
    msg = _error(lambda r: _node(r, "fix").update(prompt="{generate.json}"))
    assert "{generate.json}" in msg and "llm step produces text" in msg


def test_an_infeasible_sla_names_the_field_and_the_shortfall() -> None:
    msg = _error(lambda r: r["tasks"][0]["sla"].update(seconds=0.005))
    assert "tasks.0.sla.seconds" in msg and "exceeding the SLA of 0.005 s by" in msg


def test_a_bad_condition_and_a_field_of_another_kind_are_named() -> None:
    assert "nodes.3: Value error, when:" in _error(
        lambda r: _node(r, "fix").update(when="test.json.passed = no"))
    assert "url:" in _error(lambda r: _node(r, "lint").pop("url"))
    assert "prompt: not a field of a http node" in _error(
        lambda r: _node(r, "lint").update(prompt="x"))
    assert "not upstream" in _error(lambda r: _node(r, "test").update(when="test.ok == false"))


def test_a_conditional_user_facing_node_is_refused() -> None:
    msg = _error(lambda r: _node(r, "generate").pop("user_facing"))   # fix is the last LLM
    assert "nodes.3 (fix): the user-facing node" in msg and "user_facing: true" in msg


def test_declared_names_work_for_keys_task_models_and_the_default_task() -> None:
    raw = _base()
    raw["auth"] = {"api_keys": [{"name": "ci", "key": "k" * 32, "tasks": ["lint-fix"]}]}
    raw["task_models"] = {"lint-fix": "code-llm"}
    cfg = parse_config(raw)
    assert cfg.task_names() == ["lint-fix"] and cfg.default_task == "lint-fix"
    raw["auth"]["api_keys"][0]["tasks"] = ["generation"]   # not served by this config
    with pytest.raises(ConfigError, match=r"auth.api_keys.0.tasks: unknown task 'generation'"):
        parse_config(raw)


def test_without_tasks_the_builtins_apply() -> None:
    cfg = parse_config({"models": [{"name": "m", "emulated": {"replicas": 1}}]})
    assert cfg.task_names() == list(TASK_NAMES) and cfg.default_task == "generation"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("tasks-*.yaml")), ids=lambda p: p.name)
def test_the_examples_load(path: Path) -> None:
    cfg = load_config(path)
    specs = cfg.task_specs()
    assert specs and all(s.description for s in specs.values())
    kinds = {n.kind for s in specs.values() for n in s.task.nodes}
    assert NodeKind.HTTP in kinds and NodeKind.LLM in kinds


def test_http_costs_and_when_probabilities_come_from_the_declaration() -> None:
    spec = load_config(EXAMPLES / "tasks-lint-fix.yaml").task_specs()["lint-fix"]
    lint, fix = spec.task.node("lint"), spec.task.node("fix")
    assert lint.cost is not None and lint.cost.median_s == pytest.approx(0.040)
    assert fix.run_probability == 0.3 and fix.when == Condition("test", path=("passed",),
                                                                value=False)
    assert spec.nodes["lint"].body == {"code": "{generate.text}"}


# ---- conditions, templates, the when rule ----------------------------------------------------
@pytest.mark.parametrize("text,verdict,answer,holds", [
    ("lint.json.ok == false", None, {"ok": False}, True),
    ("lint.json.ok == false", None, {"ok": True}, False),
    ("lint.json.ok == false", None, None, None),
    ("lint.json.errors.0 != 'E1'", None, {"errors": ["E1"]}, False),
    ("lint.json.count == 2", None, {"count": 2.0}, True),
    ("lint.json.missing == null", None, {}, True),
    ("lint.failed == true", False, None, True),
    ("lint.ok == true", False, None, False),
])
def test_conditions(text: str, verdict: bool | None, answer: Any, holds: bool | None) -> None:
    assert parse_condition(text).holds(verdict, answer) is holds


@pytest.mark.parametrize("bad", ["lint.json.ok = false", "lint == 1", "os.system('x') == 1",
                                 "lint.json.ok == maybe", "lint.text == 'a'", {"node": "x"}])
def test_bad_conditions_are_refused(bad: Any) -> None:
    with pytest.raises(ConditionError):
        parse_condition(bad)


def test_templates_render_upstream_outputs_and_refuse_format_tricks() -> None:
    outs = {"lint": {"json": {"ok": False, "errors": ["E1", "E2"]}, "ok": True}}
    assert render("{input}|{lint.json.errors}|{lint.json.errors.1}|{lint.json.ok}|{{x}}|"
                  "{lint.json.none}", "IN", outs) == 'IN|["E1", "E2"]|E2|false|{x}|'
    for bad in ("{lint.json!r}", "{lint.json:>9}", "{lint.json[0]}", "{"):
        with pytest.raises(TemplateError):
            check_template(bad, {"lint": NodeKind.HTTP})


def test_when_rule_runs_the_fix_only_when_the_answer_says_so() -> None:
    spec = load_config(EXAMPLES / "tasks-lint-fix.yaml").task_specs()["lint-fix"]
    for passed, runs in ((True, False), (False, True)):
        p = TaskProgress(spec.task, 0.0)
        assert p.start(0.0).ready == ("generate",)
        assert p.node_done("generate", 1.0).ready == ("lint",)
        assert p.node_done("lint", 1.1, ok=True, answer={"ok": True}).ready == ("test",)
        step = p.node_done("test", 1.5, ok=True, answer={"passed": passed})
        assert (step.ready == ("fix",)) is runs and (step.skipped == ("fix",)) is not runs
    # no answer reported (a simulator): only the up-front decision
    p = TaskProgress(spec.task, 0.0)
    p.start(0.0)
    p.node_done("generate", 1.0)
    p.node_done("lint", 1.1)
    assert p.node_done("test", 1.2).ready == ("fix",)

