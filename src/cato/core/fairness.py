"""Fair shares between tenants: weights, guaranteed shares and the release choice.

A *tenant* is whoever a call is billed to (:attr:`~cato.core.calls.LlmCall.tenant`; the live
gateway uses the API key's name, the simulator a workload's tenant tag). Without fairness the
dispatcher releases a replica's most urgent queued call (smallest queue key: CATO's
``(priority, deadline_s, seq)``), so a tenant that floods the gateway with urgent calls takes
every slot and everyone misses. With a :class:`FairShare`, when a replica has a free slot the
dispatcher asks it *which tenant* goes next among those with calls queued for the model, and
releases that tenant's most urgent call: slack still orders calls within a tenant, weighted
fair share orders tenants, and a flooding tenant's own queue grows -- it misses its SLAs first.
The tenant's call is taken from the free replica's queue when it has one there, else from
another replica's queue (it moves: with early binding, a call routed to a replica that the
flood keeps busy would otherwise wait for a slot there while another replica's slot went to
the flood; the tenant's head elsewhere is its most urgent one queued at a replica that holds a
tenant the free replica does not).

The dispatcher asks its :class:`ReleaseOrder` which queued entry a free slot takes and tells it
when calls enter the gateway, leave it unreleased, are released and end. The base class,
:data:`QUEUE_ORDER`, takes the queue's head and keeps nothing: the dispatcher's order without
fairness. :class:`FairShare` keeps per-model tenant state and chooses (:meth:`FairShare.choose`):

1. a tenant below its *guaranteed share* -- fewer calls in flight on the model than
   ``guaranteed_share x`` the model's slots (the concurrency limits of its READY replicas) --
   goes first;
2. otherwise the tenant with the smallest *service counter*;
3. ties (a tenant just lifted to the others' counter): the tenant with the fewest calls in
   flight per unit of weight, then the one whose head call is the most urgent (smallest key).

Service counters follow the Virtual Token Counter (VTC) of Sheng et al., "Fairness in Serving
Large Language Models" (OSDI 2024): a tenant's counter grows by the weighted tokens of each call
released for it, ``(prompt + 2 x expected output) / weight`` (VTC's input and output weights
1 and 2; the output is the gateway's expectation, charged at release: the gateway charges
when it schedules, as start-time fair queueing does, Goyal et al., SIGCOMM 1996). A tenant
that becomes *backlogged* (its first call queued in the gateway for the model) has its counter
lifted to at least the smallest counter of the tenants backlogged there, or, if none is, the
counter of the tenant that left the backlog last: idle time is not banked as credit. Per-model
state, as in llm-d's and AIBrix's flow control, since each model's capacity is shared apart.

Invariants: every counter only grows; a backlogged tenant's counter is never below the smallest
counter of the tenants backlogged when it joined; with one tenant queued, :meth:`choose`
returns it (so with one tenant, or without a :class:`FairShare`, the release order is exactly
the queue order). Pure: no clock, no I/O.

Routing is unchanged: a router's wait estimate (:meth:`~cato.core.replica.GatewayQueue.rank`,
the calls queued ahead in key order) becomes approximate under fair shares -- a call of a
tenant under its share waits less than the calls ranked ahead of it suggest, one over its share
more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from cato.core.calls import LlmCall
from cato.core.pool import ReplicaPool
from cato.core.replica import QueueEntry, ReplicaState

#: VTC's weights of a prompt token and of an output token in a service counter.
PROMPT_WEIGHT = 1.0
OUTPUT_WEIGHT = 2.0


@dataclass(frozen=True, slots=True)
class TenantShare:
    """A tenant's ``weight`` (> 0: its share of contended capacity relative to the others')
    and ``guaranteed_share`` (in [0, 1]: the fraction of each model's slots it may fill ahead
    of the weighted order)."""

    weight: float = 1.0
    guaranteed_share: float = 0.0

    def __post_init__(self) -> None:
        if not self.weight > 0 or self.weight == float("inf"):
            raise ValueError(f"weight must be a finite number > 0, got {self.weight!r}")
        if not 0.0 <= self.guaranteed_share <= 1.0:
            raise ValueError(f"guaranteed_share must be in [0, 1], got "
                             f"{self.guaranteed_share!r}")


DEFAULT_SHARE = TenantShare()


@dataclass(frozen=True)
class FairnessPolicy:
    """Tenants' weights and guaranteed shares; a tenant not named gets :data:`DEFAULT_SHARE`
    (weight 1, no guarantee). Raises ValueError naming the tenant when the guaranteed shares
    sum above 1."""

    tenants: Mapping[str, TenantShare] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = sum(s.guaranteed_share for s in self.tenants.values())
        if total > 1.0 + 1e-9:
            named = ", ".join(f"{t}={s.guaranteed_share:g}" for t, s in self.tenants.items()
                              if s.guaranteed_share)
            raise ValueError(f"guaranteed shares must sum to at most 1, got {total:g} ({named})")
        object.__setattr__(self, "tenants", MappingProxyType(dict(self.tenants)))

    def share(self, tenant: str) -> TenantShare:
        return self.tenants.get(tenant, DEFAULT_SHARE)

    @property
    def is_default(self) -> bool:
        """Every named tenant has weight 1 and no guarantee: fairness changes nothing a
        deployment asked for (the gateway's default for its ``fairness.enabled``)."""
        return all(s == DEFAULT_SHARE for s in self.tenants.values())


def call_cost(call: LlmCall) -> float:
    """The weighted tokens a call is charged when it is released (before the tenant's weight)."""
    return PROMPT_WEIGHT * call.num_prompt_tokens + OUTPUT_WEIGHT * call.expected_output_tokens


class ReleaseOrder:
    """Which queued call a free slot takes: the queue's head (its smallest key). The
    dispatcher reports every call's passage (:meth:`queued` when it enters the gateway,
    :meth:`unqueued` when it leaves unreleased -- shed, refused, lost --, :meth:`released` when
    it goes to an engine, :meth:`done` when its slot frees); this order ignores them."""

    def queued(self, call: LlmCall) -> None:
        """``call`` entered the gateway's queues."""

    def unqueued(self, call: LlmCall) -> None:
        """``call`` left the gateway's queues without being released."""

    def released(self, call: LlmCall) -> None:
        """``call`` went to an engine."""

    def done(self, call: LlmCall) -> None:
        """``call``'s slot freed (finished, failed, lost)."""

    def next_queued(self, r: ReplicaState, pool: ReplicaPool
                    ) -> tuple[ReplicaState, QueueEntry]:
        """The entry to release next on ``r`` (which has a free slot and a non-empty gateway
        queue), and the replica whose queue holds it: ``r``'s head."""
        return r, r.queue.peek()

    def next_held(self, heap: list[QueueEntry], model: str, pool: ReplicaPool) -> QueueEntry:
        """The entry of ``model``'s non-empty per-model queue (a heap) to route next."""
        return heap[0]


#: The release order without fairness.
QUEUE_ORDER = ReleaseOrder()


class _ModelState:
    __slots__ = ("counter", "backlog", "in_flight", "last_left")

    def __init__(self) -> None:
        self.counter: dict[str, float] = {}
        self.backlog: dict[str, int] = {}      # calls queued in the gateway, per tenant (> 0)
        self.in_flight: dict[str, int] = {}    # calls released and not done, per tenant (> 0)
        self.last_left = 0.0                   # counter of the tenant last to leave the backlog


def _dec(d: dict[str, int], tenant: str) -> None:
    n = d.get(tenant, 0) - 1
    if n < 0:
        raise ValueError(f"tenant {tenant!r} has no call to remove")
    if n:
        d[tenant] = n
    else:
        del d[tenant]


class FairShare(ReleaseOrder):
    """Weighted fair shares between tenants (module docstring): per-model service counters,
    backlogs and in-flight counts. Events O(1). A release: nothing more than the queue's head
    while one tenant is queued for the model; otherwise O(ready replicas x tenants) plus the
    scans for each tenant's head (:meth:`~cato.core.replica.GatewayQueue.heads`: up to the
    first entry of the last tenant found) and, for a per-model heap, O(n)."""

    def __init__(self, policy: FairnessPolicy | None = None) -> None:
        self.policy = policy or FairnessPolicy()
        self._models: dict[str, _ModelState] = {}

    def _m(self, model: str) -> _ModelState:
        st = self._models.get(model)
        if st is None:
            st = self._models[model] = _ModelState()
        return st

    # ---- events ----------------------------------------------------------------------------
    def queued(self, call: LlmCall) -> None:
        """Lifts an idle tenant's counter as it becomes backlogged (module docstring)."""
        st, t = self._m(call.model), call.tenant
        if t not in st.backlog:
            floor = min(st.counter[u] for u in st.backlog) if st.backlog else st.last_left
            st.counter[t] = max(st.counter.get(t, 0.0), floor)
        st.backlog[t] = st.backlog.get(t, 0) + 1

    def unqueued(self, call: LlmCall) -> None:
        st, t = self._m(call.model), call.tenant
        _dec(st.backlog, t)
        if t not in st.backlog:
            st.last_left = st.counter.get(t, 0.0)

    def released(self, call: LlmCall) -> None:
        """Charges the tenant :func:`call_cost` / its weight."""
        st, t = self._m(call.model), call.tenant
        st.counter[t] = st.counter.get(t, 0.0) + call_cost(call) / self.policy.share(t).weight
        st.in_flight[t] = st.in_flight.get(t, 0) + 1
        self.unqueued(call)

    def done(self, call: LlmCall) -> None:
        _dec(self._m(call.model).in_flight, call.tenant)

    # ---- the choice ------------------------------------------------------------------------
    def choose(self, model: str, heads: Mapping[str, tuple[float, ...]], slots: int) -> str:
        """The tenant to release next on ``model``, among ``heads`` (tenant -> queue key of its
        most urgent call queued where a slot is free; non-empty). ``slots``: the model's
        concurrency limits summed over its READY replicas (for guaranteed shares)."""
        if len(heads) == 1:
            return next(iter(heads))
        st = self._m(model)

        def order(t: str) -> tuple[bool, float, float, tuple[float, ...]]:
            share, running = self.policy.share(t), st.in_flight.get(t, 0)
            below = running < share.guaranteed_share * slots
            return (not below, st.counter.get(t, 0.0), running / share.weight, heads[t])

        return min(heads, key=order)

    def _pick(self, model: str, heads: Mapping[str, QueueEntry], pool: ReplicaPool) -> QueueEntry:
        slots = sum(r.concurrency_limit for r in pool.ready(model))
        return heads[self.choose(model, {t: e.key for t, e in heads.items()}, slots)]

    def next_queued(self, r: ReplicaState, pool: ReplicaPool
                    ) -> tuple[ReplicaState, QueueEntry]:
        """The tenant is chosen among those queued at any READY replica of the model; its
        most urgent call at ``r``, or if it has none there, its most urgent call queued at
        another replica (moved to ``r``: a free slot is not left to a tenant over its share
        while one under it waits at a busier replica)."""
        if len(self._m(r.model).backlog) < 2:
            return r, r.queue.peek()
        where: dict[str, tuple[ReplicaState, QueueEntry]] = {
            t: (r, e) for t, e in r.queue.heads().items()}
        for q in pool.ready(r.model):
            if q is r or not q.queue or q.queue.tenants.keys() <= r.queue.tenants.keys():
                continue   # (a tenant queued at r is served from r's queue)
            for t, e in q.queue.heads().items():
                if t not in where or (where[t][0] is not r and e.key < where[t][1].key):
                    where[t] = (q, e)
        slots = sum(x.concurrency_limit for x in pool.ready(r.model))
        t = self.choose(r.model, {t: e.key for t, (_, e) in where.items()}, slots)
        return where[t]

    def next_held(self, heap: list[QueueEntry], model: str, pool: ReplicaPool) -> QueueEntry:
        if len(self._m(model).backlog) < 2:
            return heap[0]
        heads: dict[str, QueueEntry] = {}
        for e in heap:
            t = e.call.tenant
            if t not in heads or e.key < heads[t].key:
                heads[t] = e
        return self._pick(model, heads, pool)

    # ---- read side -------------------------------------------------------------------------
    def counter(self, model: str, tenant: str) -> float:
        """``tenant``'s service counter on ``model`` (weighted tokens; 0 before any)."""
        return self._m(model).counter.get(tenant, 0.0)

    def backlogged(self, model: str) -> Mapping[str, int]:
        """Calls queued in the gateway for ``model``, per tenant with any."""
        return MappingProxyType(self._m(model).backlog)

    def in_flight(self, model: str, tenant: str) -> int:
        return self._m(model).in_flight.get(tenant, 0)
