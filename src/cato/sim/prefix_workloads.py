"""Request streams whose prompts share prefixes (issue 17, part 2): what a prefix cache is for.

A prompt here is a list of *segments* ``(stream_id, start, end)``: tokens ``start..end-1`` of an
abstract token stream. Two prompts that hold the same stream ranges at the same positions hold
the same tokens, so their KV blocks hash alike
(:func:`cato.replica_model.prefix_cache.segment_block_hashes`) and a replica's prefix cache can
serve one from the other. Each generator returns :class:`~cato.sim.workload.TaskArrival` s with
``prefixes`` set (the block hashes of every LLM node's prompt) and the prompt length of each node
equal to its segments' total, so they run in the simulator as any stream does.

* :func:`ide_session_stream` -- IDE sessions: many users, each with an open file whose context
  grows as the user types and changes when the user edits earlier in it; a completion every few
  seconds per user over the current context. Most blocks are shared with the session's previous
  request; the edited tail is not.
* :func:`repo_shared_stream` -- repository-shared context: every request about a repository
  sends that repository's context first (shared by all users), then its own question.
* :func:`with_repeated_context` -- the multi-step tasks' repeated contexts: a task's second LLM
  step (e.g. generation's ``repair``) re-sends the first step's prompt and output, then its own
  feedback.

All are seeded (``numpy.random.Generator``), pure functions of their parameters and the
generator. :func:`ideal_reuse` measures a stream's reusable share (the hit rate an unbounded
cache would reach on one replica), for the tests and for sizing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cato.core.task import TaskType
from cato.replica_model.prefix_cache import segment_block_hashes
from cato.sim.workload import TaskArrival

__all__ = ["IdeSessions", "RepoShared", "Segment", "ide_session_stream", "ideal_reuse",
           "repo_shared_stream", "with_repeated_context", "with_task_mix"]

Segment = tuple[int, int, int]
"""``(stream_id, start, end)``: tokens ``start..end-1`` of token stream ``stream_id``."""

BLOCK_TOKENS = 16
"""KV block size the hashes are made for (vLLM's default, every preset's ``kv_block_tokens``)."""


def _length(segments: Sequence[Segment]) -> int:
    return sum(e - s for _, s, e in segments)


def _cut(segments: Sequence[Segment], at: int) -> list[Segment]:
    """The first ``at`` tokens of a prompt."""
    out: list[Segment] = []
    left = at
    for sid, s, e in segments:
        if left <= 0:
            break
        take = min(e - s, left)
        out.append((sid, s, s + take))
        left -= take
    return out


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite value > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class IdeSessions:
    """Parameters of :func:`ide_session_stream`.

    ``users`` sessions start uniformly over the first ``session_s`` seconds of the run and each
    lasts ``session_s``; a user asks for a completion every ``interval_s`` seconds on average
    (gaps ``interval_s * U(0.5, 1.5)``). The open file starts at ``context_tokens`` tokens
    (lognormal, sigma ``context_sigma``, clipped to ``[64, max_context_tokens]``); between two
    completions the user types ``typed_tokens`` tokens at the end of the context, and with
    probability ``edit_rate`` edits instead at a uniform position of the context (everything
    after it changes: re-typed text, shifted). A context that would pass ``max_context_tokens``
    is cut back to its first ``context_tokens`` (a new file). Output tokens: lognormal, median
    ``output_tokens``, sigma 0.6, clipped to [1, 256]."""

    users: int = 32
    session_s: float = 120.0
    interval_s: float = 3.0
    context_tokens: int = 1500
    context_sigma: float = 0.3
    max_context_tokens: int = 4000
    typed_tokens: int = 12
    edit_rate: float = 0.2
    output_tokens: int = 24

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        _positive("session_s", self.session_s)
        _positive("interval_s", self.interval_s)
        if not 64 <= self.context_tokens <= self.max_context_tokens:
            raise ValueError(f"need 64 <= context_tokens ({self.context_tokens}) <= "
                             f"max_context_tokens ({self.max_context_tokens})")
        if self.typed_tokens < 1:
            raise ValueError(f"typed_tokens must be >= 1, got {self.typed_tokens}")
        if not 0.0 <= self.edit_rate <= 1.0:
            raise ValueError(f"edit_rate must be in [0, 1], got {self.edit_rate}")
        if self.context_sigma < 0 or self.output_tokens < 1:
            raise ValueError(f"bad context_sigma {self.context_sigma} or output_tokens "
                             f"{self.output_tokens}")

    def expected_reuse(self) -> float:
        """The reusable share of prompt tokens, roughly (block rounding ignored): a session's
        first request reuses nothing, each later one keeps its previous context whole when the
        user typed (1 - edit_rate), and a uniform part of it when the user edited."""
        n = max(1.0, self.session_s / self.interval_s)
        keep = 1.0 - self.edit_rate / 2.0
        ctx = float(self.context_tokens)
        return (n - 1.0) / n * keep * ctx / (ctx + self.typed_tokens)


def ide_session_stream(p: IdeSessions, rng: np.random.Generator, *, task: str = "completion",
                       node: str = "llm", stream_base: int = 1) -> list[TaskArrival]:
    """The IDE-session stream: one ``task`` request (LLM node ``node``) per completion, sorted
    by arrival, ids 0..n-1; token stream ids from ``stream_base`` on (distinct per user and
    per edit, so nothing is shared across users)."""
    next_stream = stream_base
    reqs: list[tuple[float, int, list[Segment], int]] = []
    for user in range(p.users):
        t = float(rng.uniform(0.0, p.session_s))
        end = t + p.session_s
        ctx_len = int(np.clip(round(p.context_tokens * math.exp(p.context_sigma * rng.standard_normal())),
                              64, p.max_context_tokens))
        segs: list[Segment] = [(next_stream, 0, ctx_len)]
        next_stream += 1
        while t < end:
            out = int(np.clip(round(p.output_tokens * math.exp(0.6 * rng.standard_normal())), 1, 256))
            reqs.append((t, user, list(segs), out))
            t += p.interval_s * float(rng.uniform(0.5, 1.5))
            length = _length(segs)
            if rng.random() < p.edit_rate:
                at = int(rng.integers(0, length + 1))
                segs = _cut(segs, at) + [(next_stream, 0, length - at + p.typed_tokens)]
            else:
                segs = segs + [(next_stream, 0, p.typed_tokens)]
            next_stream += 1
            if _length(segs) > p.max_context_tokens:
                segs = [(next_stream, 0, ctx_len)]
                next_stream += 1
    reqs.sort(key=lambda r: (r[0], r[1]))
    return [TaskArrival(id=i, task=task, arrival_s=t, lengths={node: (_length(segs), out)},
                        tool_costs_s={}, skipped=frozenset(),
                        prefixes={node: segment_block_hashes(segs, BLOCK_TOKENS)})
            for i, (t, _, segs, out) in enumerate(reqs)]


@dataclass(frozen=True, slots=True)
class RepoShared:
    """Parameters of :func:`repo_shared_stream`: Poisson arrivals at ``rate_rps`` for
    ``duration_s``; each request picks one of ``repos`` repositories with Zipf weights
    ``1 / rank ** zipf_s``, sends its ``repo_context_tokens`` of context (the same tokens for
    every request about it) and a unique question (lognormal, median ``question_tokens``,
    sigma 0.5, clipped to [8, 2048]); output lognormal, median ``output_tokens``, sigma 0.6,
    clipped to [1, 512]."""

    rate_rps: float = 20.0
    duration_s: float = 120.0
    repos: int = 8
    zipf_s: float = 1.0
    repo_context_tokens: int = 2000
    question_tokens: int = 100
    output_tokens: int = 64

    def __post_init__(self) -> None:
        _positive("rate_rps", self.rate_rps)
        _positive("duration_s", self.duration_s)
        if self.repos < 1 or self.repo_context_tokens < 1 or self.question_tokens < 1 \
                or self.output_tokens < 1 or self.zipf_s < 0:
            raise ValueError(f"bad repository workload parameters {self!r}")

    def weights(self) -> np.ndarray:
        """Each repository's share of the requests."""
        w = 1.0 / np.arange(1, self.repos + 1) ** self.zipf_s
        return np.asarray(w / w.sum())


def repo_shared_stream(p: RepoShared, rng: np.random.Generator, *, task: str = "generation",
                       node: str = "llm", stream_base: int = 1_000_000) -> list[TaskArrival]:
    """The repository-shared stream (a single-LLM-node ``task``), ids 0..n-1 in arrival order.
    Repository ``r``'s context is token stream ``stream_base + r``; questions use the streams
    after them."""
    gaps = rng.exponential(1.0 / p.rate_rps, int(p.rate_rps * p.duration_s * 1.5) + 16)
    times = np.cumsum(gaps)
    times = times[times < p.duration_s]
    repos = rng.choice(p.repos, size=times.size, p=p.weights())
    qs = np.clip(np.rint(p.question_tokens * np.exp(0.5 * rng.standard_normal(times.size))), 8, 2048)
    outs = np.clip(np.rint(p.output_tokens * np.exp(0.6 * rng.standard_normal(times.size))), 1, 512)
    out: list[TaskArrival] = []
    for i, (t, r, q, o) in enumerate(zip(times.tolist(), repos.tolist(), qs.tolist(), outs.tolist())):
        segs: list[Segment] = [(stream_base + int(r), 0, p.repo_context_tokens),
                               (stream_base + p.repos + i, 0, int(q))]
        out.append(TaskArrival(id=i, task=task, arrival_s=float(t),
                               lengths={node: (_length(segs), int(o))}, tool_costs_s={},
                               skipped=frozenset(),
                               prefixes={node: segment_block_hashes(segs, BLOCK_TOKENS)}))
    return out


def with_repeated_context(stream: Sequence[TaskArrival], tasks: Mapping[str, TaskType], *,
                          first: str = "llm", second: str = "repair", feedback_tokens: int = 64,
                          stream_base: int = 2_000_000) -> list[TaskArrival]:
    """The stream with the multi-step tasks' repeated contexts: for every request whose task
    has LLM nodes ``first`` and ``second`` (generation's ``llm`` then ``repair`` in
    :func:`cato.core.catalog.multi_step_tasks`), ``second``'s prompt becomes ``first``'s prompt,
    then ``first``'s output, then ``feedback_tokens`` of feedback (e.g. the validator's error),
    and both nodes get their block hashes (``first``'s prompt is unique to the request: an
    existing prefix of ``first`` is replaced). Other requests are returned unchanged. Raises
    ValueError for ``feedback_tokens < 1``."""
    if feedback_tokens < 1:
        raise ValueError(f"feedback_tokens must be >= 1, got {feedback_tokens}")
    out: list[TaskArrival] = []
    for a in stream:
        t = tasks[a.task]
        names = {n.name for n in t.llm_nodes}
        if first not in names or second not in names:
            out.append(a)
            continue
        n_in, n_out = a.lengths[first]
        base = stream_base + 3 * a.id
        prompt: list[Segment] = [(base, 0, n_in)]
        segs = prompt + [(base + 1, 0, n_out), (base + 2, 0, feedback_tokens)]
        prefixes = dict(a.prefixes or {})
        prefixes[first] = segment_block_hashes(prompt, BLOCK_TOKENS)
        prefixes[second] = segment_block_hashes(segs, BLOCK_TOKENS)
        lengths = dict(a.lengths)
        lengths[second] = (_length(segs), a.lengths[second][1])
        out.append(replace(a, lengths=lengths, prefixes=prefixes))
    return out


def with_task_mix(stream: Sequence[TaskArrival], mix: Mapping[str, float],
                  output_tokens: Mapping[str, int], rng: np.random.Generator, *,
                  node: str = "llm") -> list[TaskArrival]:
    """The single-node stream with each request's task drawn from ``mix`` (shares, normalised)
    and its output redrawn for that task: lognormal, median ``output_tokens[task]``, sigma 0.6,
    clipped to [1, 512]. Prompts and prefixes are kept, so e.g. summarisation and translation
    requests about one repository (:func:`repo_shared_stream`) share its context. Raises
    ValueError for an empty mix, a share < 0 or not finite, shares summing to 0, or a task
    without an ``output_tokens`` entry >= 1."""
    names = list(mix)
    shares = np.array([float(mix[n]) for n in names])
    if not names or not np.all(np.isfinite(shares)) or np.any(shares < 0) or shares.sum() <= 0:
        raise ValueError(f"bad task mix {dict(mix)!r}")
    for n in names:
        if output_tokens.get(n, 0) < 1:
            raise ValueError(f"output_tokens for task {n!r} must be >= 1, got "
                             f"{output_tokens.get(n)!r}")
    picks = rng.choice(len(names), size=len(stream), p=shares / shares.sum())
    noise = np.exp(0.6 * rng.standard_normal(len(stream)))
    out: list[TaskArrival] = []
    for a, k, z in zip(stream, picks.tolist(), noise.tolist()):
        task = names[k]
        n_out = int(np.clip(round(output_tokens[task] * z), 1, 512))
        out.append(replace(a, task=task, lengths={node: (a.lengths[node][0], n_out)}))
    return out


def ideal_reuse(stream: Sequence[TaskArrival]) -> float:
    """Share of the stream's prompt tokens an unbounded cache on one replica would serve, in
    arrival order: per LLM call with a prefix, its leading blocks already seen, capped at
    prompt - 1 tokens (vLLM's rule); calls without a prefix count as misses. All of a
    request's calls are counted at its arrival (fine for reuse across requests; for the repeated
    context of a multi-step task the second call follows the first)."""
    seen: set[int] = set()
    total = hit = 0
    for a in sorted(stream, key=lambda x: (x.arrival_s, x.id)):
        for name, (n_in, _) in a.lengths.items():
            if name in a.skipped:
                continue
            total += n_in
            hashes = (a.prefixes or {}).get(name, ())
            k = 0
            for h in hashes[: (n_in - 1) // BLOCK_TOKENS]:
                if h not in seen:
                    break
                k += 1
            hit += k * BLOCK_TOKENS
            seen.update(hashes)
    return hit / total if total else 0.0
