"""A session-sticky router: consistent hashing of a prompt's first KV block(s).

Imitates the session-affinity routers platform teams run in front of prefix-caching engines:
the vLLM production stack's ``session`` routing logic (consistent hashing of a session key
over the engines, ``--routing-logic session``), Envoy/NGINX ``hash`` upstreams and Ray Serve
deployments keyed by a session id. Here the key is the first ``key_blocks`` block hashes of the
call's prompt (:attr:`LlmCall.prefix_hashes <cato.core.calls.LlmCall.prefix_hashes>`): an IDE
session's open file, a repository's shared context; so requests that share a prefix land on one
replica whatever the load. Calls with no prefix (or fewer blocks than the key needs, keyed by
the blocks they have; none: least outstanding requests) are not sticky.

Algorithm: a hash ring of ``virtual_nodes`` points per routable replica of the model
(blake2b of ``"replica_id#i"``, deterministic across processes); the call goes to the first
point clockwise of its key's 64-bit hash. Adding or removing one replica moves only the keys of
its arcs (about 1/n of them). The ring is rebuilt when the set of routable replicas changes.

Invariant: names a routable replica of the call's model (or of ``candidates``); None when there
is none. Bounds: O(log(replicas x virtual_nodes)) per decision, O(replicas x virtual_nodes x
log) per ring rebuild. Failure mode: blind to load; a hot prefix (a popular repository) pins
its whole traffic on one replica.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Sequence

import numpy as np

from cato.core.calls import LlmCall
from cato.core.estimator import LatencyEstimator
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing.base import RoutingDecision, RoutingPolicy, register

_MASK = (1 << 64) - 1


def _point(label: str) -> int:
    return int.from_bytes(hashlib.blake2b(label.encode(), digest_size=8).digest(), "big")


@register
class SessionAffinity(RoutingPolicy):
    """Consistent hash of the first ``key_blocks`` prompt blocks (module docstring)."""

    name = "session_affinity"

    def __init__(self, estimator: LatencyEstimator, rng: np.random.Generator,
                 key_blocks: int = 1, virtual_nodes: int = 64) -> None:
        super().__init__(estimator, rng)
        if key_blocks < 1:
            raise ValueError(f"key_blocks must be >= 1, got {key_blocks}")
        if virtual_nodes < 1:
            raise ValueError(f"virtual_nodes must be >= 1, got {virtual_nodes}")
        self.key_blocks = key_blocks
        self.virtual_nodes = virtual_nodes
        self._rings: dict[tuple[str, ...], tuple[list[int], list[str]]] = {}

    def _ring(self, ids: tuple[str, ...]) -> tuple[list[int], list[str]]:
        ring = self._rings.get(ids)
        if ring is None:
            pts = sorted((_point(f"{rid}#{i}"), rid) for rid in ids
                         for i in range(self.virtual_nodes))
            ring = ([p for p, _ in pts], [rid for _, rid in pts])
            if len(self._rings) > 64:   # replica sets come and go under autoscaling
                self._rings.clear()
            self._rings[ids] = ring
        return ring

    def key(self, call: LlmCall) -> int | None:
        """The 64-bit ring position of ``call`` (None: no prefix to be sticky on)."""
        hashes = call.prefix_hashes
        if not hashes:
            return None
        return hash(tuple(hashes[:self.key_blocks])) & _MASK

    def route(self, call: LlmCall, pool: ReplicaPool, now_s: float,
              candidates: Sequence[ReplicaState] | None = None) -> RoutingDecision | None:
        cands = list(candidates) if candidates is not None else pool.ready(call.model)
        if not cands:
            return None
        k = self.key(call)
        if k is None:
            return RoutingDecision(min(cands, key=lambda r: r.outstanding).replica_id, 0)
        points, owners = self._ring(tuple(sorted(r.replica_id for r in cands)))
        i = bisect.bisect_left(points, k)
        return RoutingDecision(owners[i % len(points)], 0)
