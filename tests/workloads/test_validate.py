"""Validation of generated code: extraction from answers, parse + compile, never execution."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cato.workloads import validate
from cato.workloads.validate import MAX_ANSWER_CHARS, check_python, extract_code, validate_python

GOOD = "def add(a, b):\n    return a + b\n"


def test_raw_good_code_is_ok() -> None:
    result = validate_python(GOOD)
    assert result.ok and result.error is None
    assert result.code == GOOD


def test_python_fence_is_extracted_from_prose() -> None:
    answer = f"Sure! Here is the function:\n\n```python\n{GOOD}```\n\nIt adds `a` and `b`."
    result = validate_python(answer)
    assert result.ok, result.error
    assert result.code == GOOD


def test_python_block_is_preferred_over_other_languages() -> None:
    answer = "```js\nfunction add(a, b) { return a + b; }\n```\n\n```py\n" + GOOD + "```\n"
    assert extract_code(answer) == GOOD


def test_untagged_and_tilde_fences() -> None:
    assert extract_code("text\n```\n" + GOOD + "```") == GOOD
    assert extract_code("~~~python\n" + GOOD + "~~~\n") == GOOD


def test_unclosed_fence_runs_to_the_end() -> None:
    answer = "```python\n" + GOOD + "def mul(a, b):\n    return a * b"
    result = validate_python(answer)
    assert result.ok, result.error
    assert "def mul" in result.code and "```" not in result.code


def test_syntax_error_reports_the_line() -> None:
    result = validate_python("```python\ndef f(:\n    pass\n```")
    assert not result.ok
    assert result.error is not None and result.error.startswith("SyntaxError")
    assert "(line 1)" in result.error


def test_compile_stage_errors_are_caught() -> None:
    # ast.parse accepts these; only compiling finds the error
    for code in ("return 1\n", "nonlocal x\n", "def f():\n    x = 1\n    global x\n"):
        result = check_python(code)
        assert not result.ok, code
        assert result.error is not None and "SyntaxError" in result.error


def test_other_languages_fail() -> None:
    result = validate_python("```javascript\nfunction add(a, b) { return a + b; }\n```")
    assert not result.ok


@pytest.mark.parametrize("answer", ["", "   \n\n", "```python\n```"])
def test_empty_answers_have_no_code(answer: str) -> None:
    result = validate_python(answer)
    assert not result.ok and result.error == "no code found"


def test_huge_answer_is_rejected_without_being_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer (or code) over the cap is refused before any work on it: it is neither scanned
    for code blocks nor parsed. At the cap it is both, once. (Timings: benchmarks/unit_timings.py.)"""
    calls: Counter[str] = Counter()
    real_extract, real_parse = validate.extract_code, validate.ast.parse

    def extract(answer: str) -> str:
        calls["extract"] += 1
        return real_extract(answer)

    def parse(source: str, *args: Any, **kwargs: Any) -> ast.Module:
        calls["parse"] += 1
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(validate, "extract_code", extract)
    monkeypatch.setattr(validate.ast, "parse", parse)
    answer = "x = 1\n" * (MAX_ANSWER_CHARS // 3)
    for huge in (answer, answer * 10):
        result = validate_python(huge)
        assert not result.ok and result.error is not None and "cap" in result.error
        assert result.code == ""
        assert not check_python(huge).ok
    assert calls == {}, calls                       # nothing was scanned or parsed
    assert validate_python(answer, max_chars=len(answer)).ok
    assert calls == {"extract": 1, "parse": 1}, calls


@pytest.mark.parametrize(
    "code",
    [
        "(" * 5000 + ")" * 5000,
        "x = " + "-" * 90_000 + "1\n",
        "x = " + "[" * 3000 + "]" * 3000 + "\n",
        "a\x00b = 1\n",
        "\udcff = 1\n",
        "def f():\n" + "".join("    " * i + "if x:\n" for i in range(1, 200)) + "    " * 200 + "pass\n",
        "\x1b[31m garbage \x07\x08 \ufffd",
    ],
)
def test_garbage_never_raises(code: str) -> None:
    result = validate_python(code)
    assert not result.ok
    assert result.error


def test_code_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit(3)\n"
    result = validate_python(f"```python\n{code}```")
    assert result.ok, result.error
    assert not marker.exists()
