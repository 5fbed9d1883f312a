"""What one simulation run takes and gives: the deployments (:class:`ModelDeployment`), the
run's configuration (:class:`SimConfig`), and its result (:class:`SimResult`, with the
:class:`ScaleEvent` log); :class:`~cato.sim.simulator.Simulator` runs one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from cato.core.coefficients import ReplicaCoefficients
from cato.core.fairness import FairnessPolicy
from cato.core.records import RequestRecord
from cato.core.reprofile import PlanChange, ReprofileSettings
from cato.core.task import TaskType
from cato.sim.drift import Drift


@dataclass(frozen=True, slots=True)
class ModelDeployment:
    """Replicas of one model: their latency model and replica bounds.

    Several deployments may name the same model with different coefficient sets: a
    heterogeneous pool (e.g. 2 A100 + 2 H100 replicas of one model, or engines of different
    ``max_num_seqs``). Each replica's engine then runs its own deployment's set, and the
    gateway registers the replica with it (:meth:`Dispatcher.add_replica
    <cato.core.dispatcher.Dispatcher.add_replica>`), so estimates, prefill budgets and load
    scores use it. Such a pool is fixed-replica only (no scaling policy: which kind a scale-up
    would add is not defined). The model's profile -- the slack plan's baselines and the
    estimator's default set -- is its first deployment's; the estimator's isolated and floor
    estimates, and a record's ``feasible``, take the fastest of its sets."""

    model: str
    coeffs: ReplicaCoefficients
    initial_replicas: int
    min_replicas: int = 1
    max_replicas: int = 1_000_000

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(
                f"model {self.model!r}: need 0 <= min_replicas ({self.min_replicas}) <= "
                f"initial_replicas ({self.initial_replicas}) <= max_replicas "
                f"({self.max_replicas})")


@dataclass(frozen=True)
class SimConfig:
    """One simulated deployment under one policy pair."""

    deployments: tuple[ModelDeployment, ...]
    tasks: Mapping[str, TaskType]
    routing: str = "cato"
    routing_params: Mapping[str, Any] = field(default_factory=dict)
    scaling: str = "fixed"
    scaling_params: Mapping[str, Any] = field(default_factory=dict)
    engine_concurrency: int | None = None
    engine_scheduling: str = "fcfs"
    """The engines' ``--scheduling-policy``: ``"fcfs"`` or ``"priority"`` (each dispatch's
    ``engine_priority`` then orders the engine's queue; :mod:`cato.replica_model.scheduling`)."""
    cold_start_median_s: float = 45.0
    cold_start_p90_s: float = 90.0
    jitter_sigma: float = 0.0
    learn: bool = True
    max_drain_s: float = 600.0
    cluster_capacity: int | None = None
    label: str = ""
    prefix_caching: bool = True
    """The engines' automatic prefix caching (vLLM's ``--enable-prefix-caching``); it acts only
    on calls whose arrival carries a prefix identity (``TaskArrival.prefixes``)."""
    fairness: FairnessPolicy | None = None
    """Fair shares between the stream's tenants (:mod:`cato.core.fairness`); None: none (the
    release order is the queue's)."""
    drift: Drift | None = None
    """A scheduled slow-down of engines and drift of output lengths (:mod:`cato.sim.drift`);
    None: none."""
    replan: str = "fixed"
    """Slack plans under drift (:mod:`cato.sim.drift`): ``"fixed"`` (start-up plans, the
    default), ``"adaptive"`` (re-profiled online, :mod:`cato.core.reprofile`; it observes the
    calls the dispatcher learns from, so it needs ``learn``) or ``"oracle"``."""
    reprofile: ReprofileSettings | None = None
    """The re-profiler's knobs for ``replan="adaptive"`` (None: the defaults)."""
    replan_check_s: float = 10.0
    """How often ``replan="adaptive"`` checks for drift (seconds)."""

    def policy_label(self) -> str:
        if self.label:
            return self.label
        return self.routing if self.scaling == "fixed" else f"{self.routing}+{self.scaling}"


@dataclass(frozen=True)
class ScaleEvent:
    at_s: float
    model: str
    add: int
    removed: tuple[str, ...]
    reason: str


@dataclass
class SimResult:
    records: list[RequestRecord]
    duration_s: float
    """The stream's arrival span (first to last arrival): the goodput denominator, the same for
    every policy run on the stream (:mod:`cato.core.metrics`), never the last completion."""
    busy_replica_s: float
    provisioned_replica_s: float
    replicas_over_time: list[tuple[float, int]]
    scale_events: list[ScaleEvent]
    cold_starts_s: list[float]
    num_engine_steps: int
    num_routing_decisions: int
    end_s: float
    prefix_cache_queries: int = 0
    """Prompt tokens the engines looked up in their prefix caches (every admission's prompt)."""
    prefix_cache_hits: int = 0
    """Of those, the tokens found cached (their prefill skipped)."""
    plan_changes: list[PlanChange] = field(default_factory=list)
    """Slack plans recomputed during the run (``replan`` adaptive or oracle), in order."""

    @property
    def prefix_cache_hit_rate(self) -> float:
        """``prefix_cache_hits / prefix_cache_queries`` (0 with no query)."""
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0
