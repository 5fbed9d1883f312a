"""Validation of generated code: extraction from answers, parse + compile, never execution."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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


def test_huge_answer_is_rejected_quickly() -> None:
    answer = "x = 1\n" * (MAX_ANSWER_CHARS // 3)
    t0 = time.perf_counter()
    result = validate_python(answer)
    assert time.perf_counter() - t0 < 0.5
    assert not result.ok and result.error is not None and "cap" in result.error
    assert result.code == ""
    assert validate_python(answer, max_chars=len(answer)).ok


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
