"""Real prompt text with shared prefixes, for live runs of the prefix-cache workloads (issue 17).

The same structures as the simulator's generators (:mod:`cato.sim.prefix_workloads`), with the
text of real Python files -- the standard-library modules the code index and the other prompts
come from (:data:`~cato.workloads.prompts.STDLIB_MODULES`, read with
:func:`~cato.workloads.prompts.module_text`) -- so an engine's prefix cache sees real blocks:

* :func:`ide_session_prompts` -- each user has a file open; a completion's prompt is the file up
  to the cursor. Between completions the user types on (the cursor moves forward through the
  file's own text: the prompt grows, every earlier block stays) or, with probability
  ``edit_rate``, edits at a uniform earlier position (a line inserted there: every block after
  it changes). A prompt that passes ``max_context_tokens`` starts over on a new file.
* :func:`repo_shared_prompts` -- a "repository" is a few modules concatenated to
  ``repo_context_tokens``; each request sends its repository's context, then a question about
  one of the repository's functions.
* :func:`block_prompt_text` -- the text of a simulator prompt given by its KV block hashes
  (:attr:`cato.sim.workload.TaskArrival.prefixes`): one 64-character piece of the modules' text
  per 16-token block, chosen by the block's chained hash, so two prompts share exactly the
  leading blocks (and characters) their simulated counterparts share -- the live streams of the
  shared-prefix scenarios (``cato bench compare --scenario ide-sessions``) are the simulator's
  streams, arrivals, lengths and sharing alike.

Seeded (``numpy.random.Generator``); tokens are counted as the engines count them
(:func:`cato.text.count_tokens`, 4 characters a token).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cato.text import CHARS_PER_TOKEN
from cato.workloads.prompts import STDLIB_MODULES, module_text, stdlib_functions

__all__ = ["LivePrompt", "block_prompt_text", "ide_session_prompts", "repo_shared_prompts"]

_CPT = int(CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class LivePrompt:
    """One request of a live prefix workload: when (seconds from the start), whose
    (``session``: user or repository), the prompt text and ``max_tokens``."""

    at_s: float
    session: int
    text: str
    max_tokens: int


def _files(modules: tuple[str, ...], min_chars: int) -> list[str]:
    texts = [module_text(m) for m in modules]
    long = [t for t in texts if len(t) >= min_chars]
    if not long:  # short modules: join them until each is long enough
        joined = "\n".join(texts)
        long = [joined] if len(joined) >= min_chars else [joined * (min_chars // max(1, len(joined)) + 1)]
    return long


def ide_session_prompts(rng: np.random.Generator, *, users: int = 8, session_s: float = 60.0,
                        interval_s: float = 3.0, context_tokens: int = 1500,
                        max_context_tokens: int = 4000, typed_tokens: int = 12,
                        edit_rate: float = 0.2, output_tokens: int = 24,
                        modules: tuple[str, ...] = STDLIB_MODULES) -> list[LivePrompt]:
    """IDE-session prompts, sorted by time; the parameters mean what
    :class:`cato.sim.prefix_workloads.IdeSessions`'s do (here the starting context is
    ``context_tokens`` exactly, or the whole file when shorter). Raises ValueError for
    parameters out of range, naming the parameter."""
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    for name, v in (("session_s", session_s), ("interval_s", interval_s)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite value > 0, got {v!r}")
    if not 16 <= context_tokens <= max_context_tokens:
        raise ValueError(f"need 16 <= context_tokens ({context_tokens}) <= max_context_tokens "
                         f"({max_context_tokens})")
    if typed_tokens < 1 or output_tokens < 1 or not 0.0 <= edit_rate <= 1.0:
        raise ValueError(f"bad typed_tokens {typed_tokens}, output_tokens {output_tokens} or "
                         f"edit_rate {edit_rate}")
    files = _files(modules, (max_context_tokens + 1) * _CPT)
    typed = typed_tokens * _CPT
    out: list[LivePrompt] = []
    for user in range(users):
        t = float(rng.uniform(0.0, session_s))
        end = t + session_s
        buf = files[int(rng.integers(len(files)))]
        cursor = min(len(buf), context_tokens * _CPT)
        edits = 0
        while t < end:
            o = int(np.clip(round(output_tokens * math.exp(0.6 * rng.standard_normal())), 1, 256))
            out.append(LivePrompt(t, user, buf[:cursor], o))
            t += interval_s * float(rng.uniform(0.5, 1.5))
            if rng.random() < edit_rate:
                at = int(rng.integers(0, cursor + 1))
                edits += 1
                line = f"# edit {user}.{edits}: "
                line = (line + "x" * typed)[: typed - 1] + "\n"
                buf = buf[:at] + line + buf[at:]
            cursor += typed
            if cursor > min(len(buf), max_context_tokens * _CPT):
                buf = files[int(rng.integers(len(files)))]
                cursor = min(len(buf), context_tokens * _CPT)
    out.sort(key=lambda p: (p.at_s, p.session))
    return out


def repo_shared_prompts(rng: np.random.Generator, *, rate_rps: float = 5.0, duration_s: float = 60.0,
                        repos: int = 4, zipf_s: float = 1.0, repo_context_tokens: int = 2000,
                        output_tokens: int = 64,
                        modules: tuple[str, ...] = STDLIB_MODULES) -> list[LivePrompt]:
    """Repository-shared prompts: Poisson arrivals at ``rate_rps`` for ``duration_s``;
    repository ``r`` (Zipf weight ``1 / (r+1) ** zipf_s``) is modules ``r, r + repos, ...``
    joined and cut to ``repo_context_tokens``; the question asks about one of the repository's
    functions (its source included)."""
    if repos < 1 or repos > len(modules):
        raise ValueError(f"repos must be in [1, {len(modules)}], got {repos}")
    if not (math.isfinite(rate_rps) and rate_rps > 0 and math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"bad rate_rps {rate_rps!r} or duration_s {duration_s!r}")
    contexts: list[str] = []
    funcs = []
    for r in range(repos):
        mods = modules[r::repos]
        text = "".join(f"# file: {m}\n{module_text(m)}\n" for m in mods)
        contexts.append(text[: repo_context_tokens * _CPT])
        funcs.append(stdlib_functions(mods))
    w = 1.0 / np.arange(1, repos + 1) ** zipf_s
    w = w / w.sum()
    out: list[LivePrompt] = []
    t = float(rng.exponential(1.0 / rate_rps))
    while t < duration_s:
        r = int(rng.choice(repos, p=w))
        fs = funcs[r]
        question = "\n\nQuestion: what does this function do, and how would you test it?\n"
        if fs:
            f = fs[int(rng.integers(len(fs)))]
            question = f"\n\nQuestion: what does `{f.qualname}` in {f.path} do?\n{f.source}"
        o = int(np.clip(round(output_tokens * math.exp(0.6 * rng.standard_normal())), 1, 512))
        out.append(LivePrompt(t, r, contexts[r] + question, o))
        t += float(rng.exponential(1.0 / rate_rps))
    return out


#: tokens per KV block of :func:`block_prompt_text` (vLLM's default; every preset's)
BLOCK_TOKENS = 16


@functools.lru_cache(maxsize=4)
def _corpus(modules: tuple[str, ...]) -> str:
    return "\n".join(module_text(m) for m in modules)


def block_prompt_text(block_hashes: Sequence[int], n_tokens: int, *, tail_key: int,
                      block_tokens: int = BLOCK_TOKENS,
                      modules: tuple[str, ...] = STDLIB_MODULES) -> str:
    """A prompt of exactly ``n_tokens`` tokens (4 characters each, as the engines count) whose
    ``block_tokens``-token blocks are pieces of the modules' real text chosen by
    ``block_hashes`` (chained: equal hashes up to block i mean an equal prompt up to there), then
    a tail of ``n_tokens - len(block_hashes) * block_tokens`` tokens chosen by ``tail_key`` (a
    prompt's partial last block, which no prefix cache keeps). Same hashes, same text; a
    different hash at block i makes the text differ from block i on (up to the rare chance
    that two hashes pick the same piece). ValueError when the blocks do not fit in
    ``n_tokens`` or a count is out of range, naming it."""
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    if n_tokens < 1 or len(block_hashes) * block_tokens > n_tokens:
        raise ValueError(f"n_tokens {n_tokens} must be >= 1 and hold the "
                         f"{len(block_hashes)} blocks of {block_tokens} tokens")
    corpus = _corpus(modules)
    piece = block_tokens * _CPT
    span = len(corpus) - piece
    if span < 1:
        raise ValueError(f"modules {modules!r} hold fewer than {piece + 1} characters")
    parts = [corpus[(h & 0xFFFF_FFFF_FFFF) % span:][:piece] for h in block_hashes]
    tail = (n_tokens - len(block_hashes) * block_tokens) * _CPT
    if tail:
        at = (hash((0x7A11_5EED, tail_key)) & 0xFFFF_FFFF_FFFF) % max(1, len(corpus) - tail)
        parts.append((corpus[at:at + tail] + " " * tail)[:tail])
    return "".join(parts)
