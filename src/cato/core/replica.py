"""Gateway-side state of one replica: its priority queue, its in-flight calls, its lifecycle.

The dispatcher owns these objects; policies and the estimator read them. Queue order is the
``key`` each entry was queued with (policy-defined; CATO uses ``(priority, deadline_s, seq)``).
An optional prefill budget holds calls in the gateway queue while the engine still has that many
prompt tokens waiting for their first token, so the queue (and its order) stays in the gateway.

The queue is a :class:`GatewayQueue`: a sorted array with prefix sums of prompt tokens, so a
router asks "how many calls, holding how many prompt tokens, would be served before key k"
in O(log n) (:meth:`GatewayQueue.rank`) instead of scanning the queue for every candidate.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterator

from cato.core.calls import InFlight, LlmCall
from cato.core.coefficients import ReplicaCoefficients


class ReplicaPhase(str, Enum):
    STARTING = "starting"   # cold start: provisioned, not routable
    READY = "ready"         # routable
    DRAINING = "draining"   # finishing in-flight work, not routable
    EJECTED = "ejected"     # failed health checks: not routable until re-admitted
    STOPPED = "stopped"


@dataclass(order=True, slots=True)
class QueueEntry:
    key: tuple[float, ...]
    call: LlmCall
    priority: int
    predicted_violation: bool
    queued_s: float = field(default=0.0, compare=False)


def heap_remove(q: list[QueueEntry], e: QueueEntry) -> None:
    """Remove ``e`` from the heap ``q`` (a per-model queue): O(log n) for the head, O(n)
    otherwise."""
    if q[0] is e:
        heapq.heappop(q)
        return
    for i, x in enumerate(q):
        if x is e:
            q[i] = q[-1]
            q.pop()
            heapq.heapify(q)
            return
    raise ValueError(f"call {e.call.call_id} is not in this queue")


class GatewayQueue:
    """A replica's gateway queue: entries in ascending ``key`` (keys are unique: policies end
    them with the call's ``seq``), with prefix sums of their prompt tokens.

    Layout: ``_entries[_head:]`` is the queue in order, ``_keys`` the same keys (for
    :func:`bisect.bisect_left`), ``_cum[i]`` the prompt tokens of ``_entries[:i]`` (popped ones
    included; ``len(_cum) == len(_entries) + 1``).

    Bounds, n = entries queued: :meth:`rank` O(log n) (one binary search, two prefix-sum
    reads); :meth:`pop` (the head) O(1) amortised (the popped prefix is compacted once it is
    half the array); :meth:`push` O(log n) to find the place plus O(entries after it) to
    shift the arrays and their prefix sums: O(1) for the usual case of a call whose key is
    behind the queue (later deadline), O(n) at worst. ``len``, ``tokens`` and ``bool`` are O(1).

    Tenants (fair shares, :mod:`cato.core.fairness`): :attr:`tenants` counts queued entries per
    tenant (O(1) to keep); :meth:`heads` (each tenant's first entry) scans from the head until
    every tenant is found, O(n) at worst; :meth:`remove` takes out any entry, O(n).
    """

    __slots__ = ("_entries", "_keys", "_cum", "_head", "tenants")

    def __init__(self) -> None:
        self._entries: list[QueueEntry] = []
        self._keys: list[tuple[float, ...]] = []
        self._cum: list[int] = [0]
        self._head = 0
        #: queued entries per tenant (tenants with none are absent)
        self.tenants: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._entries) - self._head

    def __bool__(self) -> bool:
        return len(self._entries) > self._head

    def __iter__(self) -> Iterator[QueueEntry]:
        """Entries in queue order (the first to be served first)."""
        return iter(self._entries[self._head:])

    @property
    def tokens(self) -> int:
        """Prompt tokens of every queued entry."""
        return self._cum[-1] - self._cum[self._head]

    def rank(self, key: tuple[float, ...]) -> tuple[int, int]:
        """Entries with a key below ``key`` (served before it) and their prompt tokens.
        Exact in key order; under fair shares, where a replica releases by tenant first
        (:mod:`cato.core.fairness`), an approximation of the wait ahead: calls of a tenant
        over its share may in fact wait longer, and others less."""
        i = bisect_left(self._keys, key, self._head)
        return i - self._head, self._cum[i] - self._cum[self._head]

    def push(self, entry: QueueEntry) -> None:
        i = bisect_left(self._keys, entry.key, self._head)
        t = entry.call.num_prompt_tokens
        self._entries.insert(i, entry)
        self._keys.insert(i, entry.key)
        cum = self._cum
        cum.insert(i + 1, cum[i] + t)
        for j in range(i + 2, len(cum)):
            cum[j] += t
        tn = entry.call.tenant
        self.tenants[tn] = self.tenants.get(tn, 0) + 1

    def _untenant(self, entry: QueueEntry) -> None:
        tn = entry.call.tenant
        n = self.tenants[tn] - 1
        if n:
            self.tenants[tn] = n
        else:
            del self.tenants[tn]

    def heads(self) -> dict[str, QueueEntry]:
        """Each queued tenant's first entry (its smallest key)."""
        out: dict[str, QueueEntry] = {}
        want = len(self.tenants)
        for j in range(self._head, len(self._entries)):
            e = self._entries[j]
            if e.call.tenant not in out:
                out[e.call.tenant] = e
                if len(out) == want:
                    break
        return out

    def remove(self, entry: QueueEntry) -> None:
        """Take ``entry`` (queued here) out of the queue, wherever it is."""
        i = bisect_left(self._keys, entry.key, self._head)
        while i < len(self._entries) and self._entries[i] is not entry \
                and self._keys[i] == entry.key:
            i += 1   # (equal keys: policies end keys with a unique seq, but be exact)
        if i >= len(self._entries) or self._entries[i] is not entry:
            raise ValueError(f"call {entry.call.call_id} is not queued here")
        if i == self._head:
            self.pop()
            return
        t = entry.call.num_prompt_tokens
        del self._entries[i], self._keys[i], self._cum[i + 1]
        cum = self._cum
        for j in range(i + 1, len(cum)):
            cum[j] -= t
        self._untenant(entry)

    def peek(self) -> QueueEntry:
        if not self:
            raise IndexError("peek at an empty queue")
        return self._entries[self._head]

    def pop(self) -> QueueEntry:
        """Remove and return the entry with the smallest key."""
        if not self:
            raise IndexError("pop from an empty queue")
        e = self._entries[self._head]
        self._head += 1
        self._untenant(e)
        if self._head >= 32 and 2 * self._head >= len(self._entries):
            h = self._head
            del self._entries[:h], self._keys[:h], self._cum[:h]
            self._head = 0
        return e

    def clear(self) -> list[QueueEntry]:
        """Remove every entry; return them in queue order."""
        out = self._entries[self._head:]
        self._entries, self._keys, self._cum, self._head = [], [], [0], 0
        self.tenants = {}
        return out


class ReplicaState:
    """Mutable gateway view of a replica. ``concurrency_limit`` bounds calls released to the
    engine at once; the rest wait in :attr:`queue` (a :class:`GatewayQueue`, sorted on ``key``).

    ``coeffs``: the replica's own latency model (a pool mixing accelerators, or engines of
    different ``max_num_seqs``, for one model); ``None``, the default, means the model's
    profile in the :class:`~cato.core.estimator.LatencyEstimator`
    (:meth:`~cato.core.estimator.LatencyEstimator.coeffs_for`)."""

    __slots__ = (
        "replica_id", "model", "concurrency_limit", "phase", "queue", "in_flight",
        "idle_since_s", "started_s", "ready_s", "coeffs",
        "prefill_budget_tokens", "pending_prefill_tokens", "ctx_expected_sum", "ctx_true_sum",
    )

    def __init__(self, replica_id: str, model: str, concurrency_limit: int, now_s: float,
                 phase: ReplicaPhase = ReplicaPhase.READY, *,
                 coeffs: ReplicaCoefficients | None = None) -> None:
        if concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be >= 1, got {concurrency_limit}")
        self.replica_id = replica_id
        self.model = model
        self.coeffs = coeffs
        self.concurrency_limit = concurrency_limit
        self.phase = phase
        self.queue = GatewayQueue()
        self.in_flight: dict[int, InFlight] = {}
        self.idle_since_s: float | None = now_s
        self.started_s = now_s
        self.ready_s: float | None = now_s if phase is ReplicaPhase.READY else None
        self.prefill_budget_tokens: int | None = None
        self.pending_prefill_tokens = 0
        # sum over in-flight calls of prompt + output/2 tokens (expected and true lengths):
        # the estimator's mean context, kept incrementally so an estimate is O(1) with a free slot
        self.ctx_expected_sum = 0.0
        self.ctx_true_sum = 0.0

    # ---- read side ---------------------------------------------------------------------------
    @property
    def routable(self) -> bool:
        return self.phase is ReplicaPhase.READY

    @property
    def num_queued(self) -> int:
        return len(self.queue)

    @property
    def queued_prompt_tokens(self) -> int:
        """Prompt tokens of the calls in the gateway queue."""
        return self.queue.tokens

    @property
    def num_in_flight(self) -> int:
        return len(self.in_flight)

    @property
    def outstanding(self) -> int:
        """Queued plus in flight: the replica's queue length as routers see it."""
        return len(self.queue) + len(self.in_flight)

    @property
    def has_free_slot(self) -> bool:
        """Below the concurrency limit and, when a prefill budget is set, with fewer prompt
        tokens awaiting their first token than the budget."""
        if len(self.in_flight) >= self.concurrency_limit:
            return False
        b = self.prefill_budget_tokens
        return b is None or self.pending_prefill_tokens < b

    @property
    def is_idle(self) -> bool:
        return not self.queue and not self.in_flight

    # ---- write side (dispatcher only) ----------------------------------------------------------
    def push(self, entry: QueueEntry) -> None:
        self.queue.push(entry)
        self.idle_since_s = None

    def pop(self) -> QueueEntry:
        return self.queue.pop()

    def drain_queue(self) -> list[QueueEntry]:
        """Empty the queue; its entries in queue order."""
        return self.queue.clear()
