"""Fault injection for the emulated engine (``cato engine --fault KIND[:PROB]``).

An engine can be told to misbehave in controlled ways, for the gateway's reliability tests and
for chaos drills. A :class:`FaultPlan` gives each fault kind a probability; every valid
generation request (``/v1/completions``, ``/v1/chat/completions``, streamed or not) draws at
most one fault from the plan's own seeded RNG (``random.Random(seed)``), so a run is
reproducible request by request. The kinds (:data:`FAULT_KINDS`):

* ``error`` — HTTP 500 with an OpenAI-shaped error body, before any output.
* ``garbage`` — HTTP 200 whose body is not what the client expects: a streamed request gets an
  SSE stream whose first event is not JSON (``data: <<garbage>>``), a non-streamed one a body
  that is not JSON (``<<garbage>>``); then the response ends and the connection closes.
* ``close-before`` — the request is accepted, then the connection is aborted before any
  response byte.
* ``close-mid`` — the first ``mid_tokens`` tokens (default 3, at most ``max_tokens``) stream
  normally, then the connection is closed: no ``[DONE]``, no end of the chunked body.
* ``hang`` — nothing is ever sent; the connection stays open until the client leaves.
* ``hang-mid`` — the first ``mid_tokens`` tokens stream normally, then nothing more is sent;
  the connection stays open until the client leaves.
* ``crash`` — the response's headers are sent, then the whole engine process dies of SIGSEGV,
  as a natively built llama.cpp does on a CPU it was not built for: what the gateway must name
  as a crash (``engine ... exited with signal SIGSEGV``), not as a broken payload.

A non-streamed request has no partial body to send, so for it ``close-mid`` behaves like
``close-before`` and ``hang-mid`` like ``hang``. A request the engine rejects (400, 404) is
rejected before any draw. Besides the kinds, a plan can mark the engine ``down``: ``/health``
answers 503 and every generation request 503 with an OpenAI-shaped error (no draw).

A spec string is ``KIND:PROB`` (``hang:0.1``, ``close-mid:1``) or ``KIND`` alone (probability
1); the probabilities of a plan must sum to at most 1. Bad input raises :class:`FaultSpecError`
(a ``ValueError``) whose message names the bad value and the known kinds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

__all__ = ["DEFAULT_MID_TOKENS", "FAULT_KINDS", "FaultKind", "FaultPlan", "FaultSpecError",
           "parse_fault_spec", "parse_fault_specs"]

FaultKind = Literal["error", "garbage", "close-before", "close-mid", "hang", "hang-mid", "crash"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("error", "garbage", "close-before", "close-mid", "hang",
                                             "hang-mid", "crash")
"""Every fault kind, in the order a draw walks them."""

DEFAULT_MID_TOKENS: Final = 3
"""Tokens ``close-mid`` and ``hang-mid`` stream before they cut the stream."""

_SUM_SLACK = 1e-9
_JSON_FIELDS: Final = ("faults", "down", "mid_tokens", "seed")
_KNOWN = ", ".join(FAULT_KINDS)


class FaultSpecError(ValueError):
    """A bad fault spec or plan; ``param`` names the bad field (``faults.hang``, ``down``...)
    where there is one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _kind(name: str, what: str, param: str | None) -> FaultKind:
    for k in FAULT_KINDS:
        if k == name:
            return k
    raise FaultSpecError(f"{what}: unknown fault kind {name!r}; known kinds: {_KNOWN}", param)


def _probability(value: Any, what: str, param: str | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultSpecError(f"{what}: probability must be a number from 0 to 1, got {value!r}", param)
    p = float(value)
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise FaultSpecError(f"{what}: probability must be from 0 to 1, got {value!r}", param)
    return p


def parse_fault_spec(spec: str) -> tuple[FaultKind, float]:
    """``"KIND:PROB"`` or ``"KIND"`` (probability 1) -> ``(kind, probability)``."""
    what = f"bad fault spec {spec!r}"
    form = f" (a spec is KIND or KIND:PROB; known kinds: {_KNOWN}; PROB from 0 to 1)"
    name, sep, prob = spec.strip().partition(":")
    name = name.strip()
    kind = next((k for k in FAULT_KINDS if k == name), None)
    if kind is None:
        raise FaultSpecError(f"{what}: unknown fault kind {name!r}{form}")
    if not sep:
        return kind, 1.0
    try:
        value = float(prob)
    except ValueError:
        raise FaultSpecError(f"{what}: probability {prob.strip()!r} is not a number{form}") from None
    try:
        return kind, _probability(value, what, None)
    except FaultSpecError as exc:
        raise FaultSpecError(f"{exc}{form}") from None


def parse_fault_specs(specs: Iterable[str]) -> dict[FaultKind, float]:
    """Several specs (one per ``--fault``) -> probability per kind; a kind given twice or
    probabilities summing to more than 1 are errors."""
    out: dict[FaultKind, float] = {}
    for spec in specs:
        kind, p = parse_fault_spec(spec)
        if kind in out:
            raise FaultSpecError(f"bad fault spec {spec!r}: fault kind {kind!r} given twice")
        out[kind] = p
    total = sum(out.values())
    if total > 1.0 + _SUM_SLACK:
        listed = ", ".join(f"{k}:{p:g}" for k, p in out.items())
        raise FaultSpecError(f"bad fault specs {listed}: probabilities sum to {total:g}, more than 1")
    return out


class FaultPlan:
    """A probability per fault kind, the ``down`` flag, and the seeded RNG that draws at most
    one fault per request. Plans compare (and hash) by value; the RNG's position is not part of
    the value. :meth:`copy` is the same plan with its RNG back at the seed."""

    __slots__ = ("_probs", "_edges", "_down", "_seed", "_mid_tokens", "_rng")

    def __init__(self, probabilities: Mapping[str, float] | None = None, *, down: bool = False,
                 seed: int = 0, mid_tokens: int = DEFAULT_MID_TOKENS) -> None:
        probs: dict[FaultKind, float] = {}
        for name, value in (probabilities or {}).items():
            param = f"faults.{name}"
            kind = _kind(name, f"bad fault {name!r}", param)
            p = _probability(value, f"bad fault {name!r}", param)
            if p > 0.0:
                probs[kind] = p
        total = sum(probs.values())
        if total > 1.0 + _SUM_SLACK:
            listed = ", ".join(f"{k}:{p:g}" for k, p in probs.items())
            raise FaultSpecError(f"bad 'faults' {listed}: probabilities sum to {total:g}, more than 1",
                                 "faults")
        if not isinstance(down, bool):
            raise FaultSpecError(f"'down' must be a boolean, got {down!r}", "down")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FaultSpecError(f"'seed' must be an integer, got {seed!r}", "seed")
        if isinstance(mid_tokens, bool) or not isinstance(mid_tokens, int) or mid_tokens < 1:
            raise FaultSpecError(f"'mid_tokens' must be an integer >= 1, got {mid_tokens!r}", "mid_tokens")
        # canonical order, so that equal plans draw alike
        self._probs = {k: probs[k] for k in FAULT_KINDS if k in probs}
        edges: list[tuple[float, FaultKind]] = []
        acc = 0.0
        for k, p in self._probs.items():
            acc += p
            edges.append((acc, k))
        if edges and acc >= 1.0 - _SUM_SLACK:   # a plan summing to 1 faults every request
            edges[-1] = (math.inf, edges[-1][1])
        self._edges = tuple(edges)
        self._down = down
        self._seed = seed
        self._mid_tokens = mid_tokens
        self._rng = random.Random(seed)

    # ---------------------------------------------------------------------------- construction
    @classmethod
    def from_specs(cls, specs: Iterable[str], *, down: bool = False, seed: int = 0,
                   mid_tokens: int = DEFAULT_MID_TOKENS) -> FaultPlan:
        """A plan from ``--fault`` spec strings (see :func:`parse_fault_spec`)."""
        probs: dict[str, float] = {k: p for k, p in parse_fault_specs(specs).items()}
        return cls(probs, down=down, seed=seed, mid_tokens=mid_tokens)

    @classmethod
    def from_json(cls, obj: Any, *, seed: int = 0) -> FaultPlan:
        """A plan from the body of ``POST /fault``: ``{"faults": {KIND: PROB, ...}, "down": bool,
        "mid_tokens": int, "seed": int}``, every field optional (no faults, not down, 3 tokens,
        ``seed``). Unknown fields are errors."""
        if not isinstance(obj, dict):
            raise FaultSpecError("the fault plan must be a JSON object")
        for name in obj:
            if name not in _JSON_FIELDS:
                raise FaultSpecError(f"unknown field {name!r}; fields: {', '.join(_JSON_FIELDS)}", str(name))
        faults = obj.get("faults")
        if faults is None:
            faults = {}
        if not isinstance(faults, dict):
            raise FaultSpecError("'faults' must be an object of fault kind -> probability; known "
                                 f"kinds: {_KNOWN}", "faults")
        down = obj.get("down", False)
        mid_tokens = obj.get("mid_tokens", DEFAULT_MID_TOKENS)
        plan_seed = obj.get("seed", seed)
        return cls(faults, down=down, seed=plan_seed, mid_tokens=mid_tokens)

    def copy(self) -> FaultPlan:
        """The same plan, its RNG at the seed."""
        return FaultPlan({k: p for k, p in self._probs.items()}, down=self._down, seed=self._seed, mid_tokens=self._mid_tokens)

    # ---------------------------------------------------------------------------- reading
    @property
    def probabilities(self) -> dict[FaultKind, float]:
        """The kinds with a probability > 0 (a copy)."""
        return dict(self._probs)

    @property
    def down(self) -> bool:
        return self._down

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def mid_tokens(self) -> int:
        return self._mid_tokens

    @property
    def has_faults(self) -> bool:
        """Some kind has a probability > 0."""
        return bool(self._edges)

    @property
    def active(self) -> bool:
        """The plan changes anything at all (faults or down)."""
        return self._down or bool(self._edges)

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``GET /fault`` (the kinds with probability > 0); ``from_json``
        reads it back."""
        return {"faults": dict(self._probs), "down": self._down, "mid_tokens": self._mid_tokens,
                "seed": self._seed}

    def describe(self) -> str:
        """One line: ``close-mid:0.5, hang:0.1`` (plus ``, down``), or ``none``."""
        parts = [f"{k}:{p:g}" for k, p in self._probs.items()] + (["down"] if self._down else [])
        return ", ".join(parts) if parts else "none"

    # ---------------------------------------------------------------------------- drawing
    def draw(self) -> FaultKind | None:
        """The fault of the next request, or None: one uniform draw from the plan's RNG,
        matched against the cumulative probabilities in :data:`FAULT_KINDS` order."""
        if not self._edges:
            return None
        r = self._rng.random()
        for edge, kind in self._edges:
            if r < edge:
                return kind
        return None

    # ---------------------------------------------------------------------------- value
    def _key(self) -> tuple[tuple[tuple[str, float], ...], bool, int, int]:
        return tuple(self._probs.items()), self._down, self._seed, self._mid_tokens

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaultPlan):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"FaultPlan({self._probs!r}, down={self._down}, seed={self._seed}, "
                f"mid_tokens={self._mid_tokens})")
