"""Routing policy interface and name registry.

A policy answers one question, Ray-router style: *where does this call go, and with what
priority?* It never mutates state; the :class:`~cato.core.dispatcher.Dispatcher` acts on its
decision. Two binding modes:

* early binding (``late_binding = False``): the call is routed when it becomes ready and waits in
  the chosen replica's gateway queue (ordered by :meth:`RoutingPolicy.queue_key`);
* late binding (``late_binding = True``): the call waits in one per-model gateway queue ordered by
  :meth:`RoutingPolicy.queue_key` and is routed only when some replica has a free slot; ``route``
  is then called with replicas that have one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from cato.core.calls import LlmCall
from cato.core.estimator import Estimate, LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.prefix_index import PrefixIndex
from cato.core.replica import ReplicaState


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Where a call goes. ``estimate`` is the policy's prediction on that replica, if it made one;
    ``predicted_violation`` is True when the policy expects the call to miss its deadline."""

    replica_id: str
    priority: int
    estimate: Estimate | None = None
    predicted_violation: bool = False


class RoutingPolicy(ABC):
    """Base class of routing policies; subclasses register with :func:`register`."""

    name: ClassVar[str] = ""
    late_binding: ClassVar[bool] = False
    clairvoyant: ClassVar[bool] = False

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator) -> None:
        self.estimator = estimator
        self.rng = rng
        #: the dispatcher's approximate prefix index (:mod:`cato.core.prefix_index`), set when
        #: a dispatcher takes the policy; prefix-aware policies read it, never write it
        self.prefix_index: PrefixIndex | None = None

    @abstractmethod
    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        """Choose a replica for ``call`` among routable replicas of its model (early binding) or
        among ``candidates`` (late binding: replicas with a free slot). ``None``: no replica."""

    def queue_key(self, call: LlmCall, priority: int, now_s: float) -> tuple[float, ...]:
        """Order in a gateway queue (smaller first). Default: FIFO by readiness."""
        return (call.ready_s, float(call.seq))

    def concurrency_limit(self, default: int) -> int:
        """Calls a replica may run at once under this policy (default: the deployment's)."""
        return default

    def prefill_budget_tokens(self, max_num_batched_tokens: int) -> int | None:
        """Prompt tokens a replica may have awaiting their first token before the gateway holds
        further calls back (None: no such limit)."""
        return None

    def admits(self, call: LlmCall, replica: ReplicaState, now_s: float) -> bool:
        """Whether ``replica`` may take ``call``, the head of its gateway queue, now (asked only
        while the replica has calls in flight and a free slot under its concurrency limit and
        prefill budget: an idle replica always takes its head). False holds the call, and the
        queue behind it, in the gateway until the next release attempt (a first token, an end,
        a new call). Default: always."""
        return True

    def engine_priority(self, call: LlmCall, priority: int, now_s: float) -> int:
        """The ``priority`` an engine that orders its own waiting queue by it receives with
        ``call`` (vLLM's ``priority`` field: smaller runs first, ties by arrival). Default: the
        routing class itself."""
        return priority

    def demote(self, call: LlmCall, priority: int, now_s: float) -> int | None:
        """Called when a queued call is about to be released: a new (larger) priority to queue it
        behind others instead, or None to release it."""
        return None

    def refuse(self, call: LlmCall, decision: RoutingDecision, now_s: float) -> str | None:
        """Early rejection: called by :meth:`Dispatcher.submit
        <cato.core.dispatcher.Dispatcher.submit>` right after ``route`` chose ``decision`` for
        the *first* LLM call of a task (its arrival; never for a later node of a task already
        accepted, nor for a retry). A string refuses the whole task, so that its client can go
        elsewhere at once: the call is queued nowhere and the string is the reason the driver
        reports (the gateway: 429 ``sla_unattainable``; the simulator: a record with status
        ``rejected``). ``None`` (the default) accepts it."""
        return None


_REGISTRY: dict[str, Callable[..., RoutingPolicy]] = {}


def register(cls: type[RoutingPolicy]) -> type[RoutingPolicy]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def count_ahead(replica: ReplicaState, key: tuple[float, ...]) -> tuple[int, int]:
    """Number of queued calls (and their prompt tokens) that would be served before ``key``.

    O(log queue length): a binary search in the replica's sorted queue and two prefix sums."""
    return replica.queue.rank(key)
