"""Gateway-side state of one replica: its priority queue, its in-flight calls, its lifecycle.

The dispatcher owns these objects; policies and the estimator read them. Queue order is the
``key`` each entry was queued with (policy-defined; CATO uses ``(priority, deadline_s, seq)``).
An optional prefill budget holds calls in the gateway queue while the engine still has that many
prompt tokens waiting for their first token, so the queue (and its order) stays in the gateway.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import Enum

from cato.core.calls import InFlight, LlmCall


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


class ReplicaState:
    """Mutable gateway view of a replica. ``concurrency_limit`` bounds calls released to the
    engine at once; the rest wait in :attr:`queue` (a binary heap on ``key``)."""

    __slots__ = (
        "replica_id", "model", "concurrency_limit", "phase", "queue", "in_flight",
        "idle_since_s", "queued_prompt_tokens", "started_s", "ready_s",
        "prefill_budget_tokens", "pending_prefill_tokens", "ctx_expected_sum", "ctx_true_sum",
    )

    def __init__(self, replica_id: str, model: str, concurrency_limit: int, now_s: float,
                 phase: ReplicaPhase = ReplicaPhase.READY) -> None:
        if concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be >= 1, got {concurrency_limit}")
        self.replica_id = replica_id
        self.model = model
        self.concurrency_limit = concurrency_limit
        self.phase = phase
        self.queue: list[QueueEntry] = []
        self.in_flight: dict[int, InFlight] = {}
        self.idle_since_s: float | None = now_s
        self.queued_prompt_tokens = 0
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
        heapq.heappush(self.queue, entry)
        self.queued_prompt_tokens += entry.call.num_prompt_tokens
        self.idle_since_s = None

    def pop(self) -> QueueEntry:
        entry = heapq.heappop(self.queue)
        self.queued_prompt_tokens -= entry.call.num_prompt_tokens
        return entry

    def drain_queue(self) -> list[QueueEntry]:
        entries = sorted(self.queue)
        self.queue.clear()
        self.queued_prompt_tokens = 0
        return entries
