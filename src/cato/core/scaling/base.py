"""Scaling policy interface (one per model), the guard-rail wrapper, and the name registry.

A policy is called every ``interval_s`` with a :class:`ScalingContext` (the gateway's signals
since its last call) and returns a :class:`ScalingDecision`. :func:`apply_bounds` clamps any
decision to ``[min_replicas, max_replicas]`` and to the cluster's free capacity: policies need
not repeat those checks (Ray Serve's wrapper idea). Additions count every provisioned replica
(ready + starting) against ``max_replicas``; removals never leave fewer than ``min_replicas``
READY ones (a starting replica does not stand in for a ready one it would replace).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Mapping


@dataclass(frozen=True, slots=True)
class ScalingContext:
    """What a scaling policy sees for one model at ``now_s``.

    ``idle_replicas`` are READY replicas with nothing queued or in flight, with the time they
    became idle; ``ready_by_load`` lists READY replicas in ascending outstanding calls.
    ``window_*`` count calls routed and SLA violations (predicted at routing or
    observed) since the previous decision. ``ongoing_requests`` = queued + in flight now.
    """

    model: str
    now_s: float
    num_ready: int
    num_starting: int
    num_draining: int
    idle_replicas: tuple[tuple[str, float], ...]
    window_requests: int
    window_violations: int
    ongoing_requests: int
    min_replicas: int
    max_replicas: int
    cluster_free: int | None = None
    ready_by_load: tuple[str, ...] = ()
    window_by_class: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """The window's ``(requests, violations)`` per SLA class (``"ttft"``/``"e2e"``) and per task
    (``"task:NAME"``), :class:`~cato.core.actions.WindowStats`; read by ``per_class`` scalers."""

    def class_counts(self, by: str) -> dict[str, tuple[int, int]]:
        """The window's counts of ``by``'s classes: ``"sla"`` (ttft/e2e) or ``"task"``."""
        if by == "task":
            return {k: c for k, c in self.window_by_class.items() if k.startswith("task:")}
        return {k: c for k, c in self.window_by_class.items() if not k.startswith("task:")}

    @property
    def num_provisioned(self) -> int:
        """Replicas that count toward the target (ready + starting; draining ones are leaving)."""
        return self.num_ready + self.num_starting


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """``add`` new replicas (cold start) and/or drain the replicas in ``remove``."""

    add: int = 0
    remove: tuple[str, ...] = ()
    reason: str = ""

    @property
    def is_noop(self) -> bool:
        return self.add == 0 and not self.remove


NOOP = ScalingDecision()


class ScalingPolicy(ABC):
    name: ClassVar[str] = ""

    def __init__(self, interval_s: float = 10.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s

    @abstractmethod
    def decide(self, ctx: ScalingContext) -> ScalingDecision:
        """Return what to change; called every ``interval_s``."""


def apply_bounds(ctx: ScalingContext, d: ScalingDecision) -> ScalingDecision:
    """Clamp to [min, max] replicas and to the cluster's free capacity; never both add and
    remove. Additions are bounded by ready + starting replicas, removals by ready ones."""
    current = ctx.num_provisioned
    add = max(0, min(d.add, ctx.max_replicas - current))
    if ctx.cluster_free is not None:
        add = min(add, max(0, ctx.cluster_free))
    if add > 0:
        return replace(d, add=add, remove=())
    removable = max(0, ctx.num_ready - ctx.min_replicas)
    remove = d.remove[:removable]
    if not remove and d.add > 0 and add == 0:
        return replace(d, add=0, remove=(), reason=d.reason + " (at max replicas)")
    return replace(d, add=0, remove=remove)


_REGISTRY: dict[str, Callable[..., ScalingPolicy]] = {}


def register(cls: type[ScalingPolicy]) -> type[ScalingPolicy]:
    _REGISTRY[cls.name] = cls
    return cls
