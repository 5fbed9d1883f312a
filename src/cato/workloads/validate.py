"""Validation of generated code: take the code out of a model's answer and check that it parses
and compiles as Python. The code is never executed.

Answers are capped at :data:`MAX_ANSWER_CHARS` characters before any work is done, so garbage
or enormous answers cost bounded time; parser and compiler failures of every kind (syntax
errors, null bytes, nesting too deep for the parser or the compiler) become a failed
:class:`ValidationResult`, never an exception.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

MAX_ANSWER_CHARS = 100_000
PYTHON_TAGS = frozenset({"python", "python3", "py", "py3"})
_FENCE_CHARS = ("`", "~")


@dataclass(frozen=True)
class ValidationResult:
    """Whether the code compiled, the first error (``"SyntaxError: ... (line 3)"``) if not,
    and the code that was checked."""

    ok: bool
    error: str | None
    code: str


@dataclass(frozen=True)
class _Block:
    tag: str
    code: str


def _fence_of(line: str) -> tuple[str, str] | None:
    """``(fence, info)`` if ``line`` opens a fenced block (three or more backticks or tildes)."""
    stripped = line.strip()
    for ch in _FENCE_CHARS:
        if stripped.startswith(ch * 3):
            fence = ch * (len(stripped) - len(stripped.lstrip(ch)))
            return fence, stripped[len(fence) :].strip()
    return None


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened with ``fence``."""
    stripped = line.strip()
    return len(stripped) >= len(fence) and stripped == fence[0] * len(stripped)


def _blocks(answer: str) -> list[_Block]:
    """Every fenced block of ``answer`` in order; an unclosed last block runs to the end (an
    answer cut off by ``max_tokens``)."""
    blocks: list[_Block] = []
    lines = answer.splitlines()
    i = 0
    while i < len(lines):
        opened = _fence_of(lines[i])
        i += 1
        if opened is None:
            continue
        fence, info = opened
        body: list[str] = []
        while i < len(lines) and not _closes(lines[i], fence):
            body.append(lines[i])
            i += 1
        i += 1
        tag = info.split()[0].lower() if info else ""
        blocks.append(_Block(tag, "\n".join(body)))
    return blocks


def extract_code(answer: str) -> str:
    """The code in a model's answer: the first ```python (or ``py``) fenced block, else the first
    untagged block, else the first block of any tag, else the whole answer."""
    blocks = _blocks(answer)
    for wanted in (lambda b: b.tag in PYTHON_TAGS, lambda b: b.tag == "", lambda b: True):
        for block in blocks:
            if wanted(block):
                return block.code.strip("\n") + "\n"
    return answer.strip("\n") + "\n" if answer.strip() else ""


def _describe(exc: BaseException) -> str:
    """A one-line description of a parser or compiler failure."""
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return f"{type(exc).__name__}: {exc.msg}{where}"
    if isinstance(exc, RecursionError):
        return "RecursionError: code nested too deeply to compile"
    if isinstance(exc, MemoryError):
        return "MemoryError: code too large to compile"
    return f"{type(exc).__name__}: {exc}"


def check_python(code: str, *, max_chars: int = MAX_ANSWER_CHARS) -> ValidationResult:
    """Parse and compile ``code`` (never run it); code longer than ``max_chars`` is rejected."""
    if not code.strip():
        return ValidationResult(False, "no code found", code)
    if len(code) > max_chars:
        return ValidationResult(
            False, f"code is {len(code)} characters, over the {max_chars} cap", ""
        )
    try:
        tree = ast.parse(code, filename="<generated>")
        compile(tree, "<generated>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError) as exc:
        return ValidationResult(False, _describe(exc), code)
    return ValidationResult(True, None, code)


def validate_python(answer: str, *, max_chars: int = MAX_ANSWER_CHARS) -> ValidationResult:
    """Extract the code from a model's ``answer`` and check that it compiles.

    Answers longer than ``max_chars`` are rejected without being scanned."""
    if len(answer) > max_chars:
        return ValidationResult(
            False, f"answer is {len(answer)} characters, over the {max_chars} cap", ""
        )
    return check_python(extract_code(answer), max_chars=max_chars)
