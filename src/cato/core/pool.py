"""The set of replicas, indexed for routing.

Per model, routable (READY) replicas are kept in buckets by ``outstanding`` (queued + in flight),
so a router can visit them in ascending queue length without sorting: :meth:`ReplicaPool.by_outstanding`
is O(k + empty buckets skipped) for the first k replicas. The dispatcher calls :meth:`touch`
whenever a replica's outstanding count or phase changes; that is O(1).
"""

from __future__ import annotations

from typing import Iterator

from cato.core.replica import ReplicaPhase, ReplicaState


class ReplicaPool:
    def __init__(self) -> None:
        self._all: dict[str, ReplicaState] = {}
        self._buckets: dict[str, dict[int, dict[str, ReplicaState]]] = {}
        self._where: dict[str, int] = {}
        self._ready_list: dict[str, list[ReplicaState]] = {}
        self._ready_dirty: set[str] = set()

    # ---- membership ----------------------------------------------------------------------------
    def add(self, replica: ReplicaState) -> None:
        if replica.replica_id in self._all:
            raise ValueError(f"replica {replica.replica_id!r} already exists")
        self._all[replica.replica_id] = replica
        self._buckets.setdefault(replica.model, {})
        self.touch(replica)

    def remove(self, replica_id: str) -> ReplicaState:
        r = self._all.pop(replica_id)
        self._unindex(r)
        return r

    def get(self, replica_id: str) -> ReplicaState:
        return self._all[replica_id]

    def __contains__(self, replica_id: object) -> bool:
        return replica_id in self._all

    def __iter__(self) -> Iterator[ReplicaState]:
        return iter(list(self._all.values()))

    def __len__(self) -> int:
        return len(self._all)

    def models(self) -> list[str]:
        return list(self._buckets)

    def of_model(self, model: str) -> list[ReplicaState]:
        return [r for r in self._all.values() if r.model == model]

    # ---- index ---------------------------------------------------------------------------------
    def _unindex(self, r: ReplicaState) -> None:
        old = self._where.pop(r.replica_id, None)
        if old is not None:
            bucket = self._buckets[r.model][old]
            del bucket[r.replica_id]
            if not bucket:
                del self._buckets[r.model][old]
            self._ready_dirty.add(r.model)

    def touch(self, r: ReplicaState) -> None:
        """Re-index ``r`` after its outstanding count or phase changed."""
        old = self._where.get(r.replica_id)
        if r.phase is not ReplicaPhase.READY:
            if old is not None:
                self._unindex(r)
            return
        new = r.outstanding
        if old == new:
            return
        if old is not None:
            bucket = self._buckets[r.model][old]
            del bucket[r.replica_id]
            if not bucket:
                del self._buckets[r.model][old]
        else:
            self._ready_dirty.add(r.model)
        self._buckets[r.model].setdefault(new, {})[r.replica_id] = r
        self._where[r.replica_id] = new

    def ready(self, model: str) -> list[ReplicaState]:
        """Routable replicas of ``model`` in a stable order (creation order)."""
        if model in self._ready_dirty or model not in self._ready_list:
            self._ready_list[model] = [
                r for r in self._all.values() if r.model == model and r.phase is ReplicaPhase.READY
            ]
            self._ready_dirty.discard(model)
        return self._ready_list[model]

    def num_ready(self, model: str) -> int:
        return sum(len(b) for b in self._buckets.get(model, {}).values())

    def by_outstanding(self, model: str) -> Iterator[ReplicaState]:
        """Routable replicas of ``model`` in ascending outstanding count (ties: insertion)."""
        buckets = self._buckets.get(model)
        if not buckets:
            return
        for count in sorted(buckets):
            bucket = buckets.get(count)
            if bucket:
                # no copy: callers must not change the pool while they iterate (routers don't)
                yield from bucket.values()

    def min_outstanding(self, model: str) -> ReplicaState | None:
        buckets = self._buckets.get(model)
        if not buckets:
            return None
        b = buckets[min(buckets)]
        return next(iter(b.values()))
