"""Per-request state of the replica model: the request states, the mutable :class:`_Req`, the
waiting-queue key and the scheduling policies that decide it."""

from __future__ import annotations

import operator

SCHEDULING_POLICIES: tuple[str, ...] = ("fcfs", "priority")
"""The ``scheduling_policy`` values (vLLM's ``--scheduling-policy`` choices this model has)."""

# request states
_PENDING = 0  # submitted while a step was in flight; visible from the next step boundary
_WAITING = 1
_PREFILL = 2
_DECODE = 3
_GONE = 4

_ARRIVAL = 0
_CANCEL = 1

_NO_KEY = (0, 0)  # the queue key of every request under FCFS (never read there)


class _Req:
    """Mutable per-request state. ``gen``/``blocks`` are exact except while decoding, where they
    follow from ``base`` and the engine's step counter S: ``gen = base + S - prompt`` and
    ``blocks = ceil((base + S - 1) / block)``.

    Prefix caching: ``hashes`` are the chained hashes of the prompt's full blocks (None: a
    unique prompt); ``held`` the cached blocks the request references while running (its other
    blocks are private); ``cached`` the prompt tokens its latest admission took from the cache."""

    __slots__ = (
        "cid",
        "prompt",
        "out",
        "gen",
        "target",
        "done",
        "blocks",
        "first_sent",
        "state",
        "base",
        "admit_no",
        "cancel_at",
        "key",
        "hashes",
        "held",
        "cached",
    )

    def __init__(self, cid: int, prompt: int, out: int) -> None:
        self.cid = cid
        self.prompt = prompt
        self.out = out
        self.gen = 0
        self.target = 0
        self.done = 0
        self.blocks = 0
        self.first_sent = False
        self.state = _WAITING
        self.base = 0
        self.admit_no = -1
        self.cancel_at: float | None = None
        self.key: tuple[int, int] = _NO_KEY  # (priority, arrival number) under "priority"
        self.hashes: tuple[int, ...] | None = None
        self.held: list[int] = []
        self.cached = 0

    def copy(self) -> _Req:
        r = _Req(self.cid, self.prompt, self.out)
        r.gen = self.gen
        r.target = self.target
        r.done = self.done
        r.blocks = self.blocks
        r.first_sent = self.first_sent
        r.state = self.state
        r.base = self.base
        r.admit_no = self.admit_no
        r.cancel_at = self.cancel_at
        r.key = self.key
        r.hashes = self.hashes
        r.held = list(self.held)
        r.cached = self.cached
        return r


_key_of = operator.attrgetter("key")
