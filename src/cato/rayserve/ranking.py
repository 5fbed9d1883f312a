"""Slack-aware ranking of Ray Serve replicas: CATO's Algorithm 1 over replica load snapshots.

Ray-free (the :class:`~cato.rayserve.router.CatoRequestRouter` wraps it; unit tests drive it
directly). The ranking is not re-derived: it builds the core's own objects and asks the core's
policy.

* The request becomes the :class:`~cato.core.calls.LlmCall` the gateway and the simulator
  would build: the core's :func:`~cato.core.lifecycle.node_call` over the gateway's plans
  (:class:`~cato.serving.planner.Planner`): node deadline = arrival + the task's slack allotment,
  rescaled for an ``x-slo-*-ms`` override; expected output = ``max_tokens`` or the node's mean;
  ``ttft_critical`` for a TTFT-critical task. What the router cannot see is taken from hint
  headers or the task's typical lengths: Ray's proxy hands the router the request's ASGI scope
  (headers) but not its body, so the prompt length is ``x-cato-prompt-tokens`` when the client
  sends it, else the task's typical prompt length.
* Each candidate replica becomes a :class:`~cato.core.replica.ReplicaState` whose in-flight
  calls are the replica's reported calls (its routing stats: prompt tokens, expected output,
  when it started, when its first token came) merged with the calls this router sent since
  (:func:`merge_view`), exactly the fields the core's
  :class:`~cato.core.estimator.LatencyEstimator` reads (in-flight set, pending prefill, context
  sums; the gateway queue is empty: Ray Serve has none per replica); a reported call is a
  :func:`~cato.core.lifecycle.load_call` (no deadline: it is load, not a request to rank).
* :class:`~cato.core.routing.cato.CatoPolicy` (``cato``) or ``cato-plus`` decides: priority 0
  (already late) or 1 (no replica meets the slack) -> shortest expected wait; priority 2 -> the
  shortest queue among replicas that meet the slack. The chosen replica is ranked first, the
  others after it in ascending load (Ray falls back to them if the first rejects the request
  because it is at ``max_ongoing_requests``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cato.core.calls import InFlight, LlmCall
from cato.core.catalog import TASK_NAMES
from cato.core.coefficients import ReplicaCoefficients, preset, slowed
from cato.core.estimator import Estimate, LatencyEstimator
from cato.core.lifecycle import load_call, node_call
from cato.core.pool import ReplicaPool
from cato.core.replica import ReplicaState
from cato.core.routing import make_routing_policy
from cato.core.routing.base import RoutingDecision
from cato.core.task import SlaKind
from cato.serving.planner import Planner

TASK_HEADER = "x-cato-task"
PROMPT_TOKENS_HEADER = "x-cato-prompt-tokens"
MAX_TOKENS_HEADER = "x-cato-max-tokens"
SLO_TTFT_HEADER = "x-slo-ttft-ms"
SLO_E2E_HEADER = "x-slo-e2e-ms"
#: the version of the routing-stats payload (:meth:`ReplicaLoad.to_stats`)
STATS_VERSION = 1


@dataclass(frozen=True, slots=True)
class CallLoad:
    """One call in flight on a replica, as the replica reports it (wall-clock seconds).

    ``eta_first_s`` (router side only, never reported): when the router expects the call's
    first token (routing time + the estimated TTFT); once that time has passed and no report
    says otherwise, the call is taken to be decoding."""

    rid: str
    task: str
    prompt_tokens: int
    expected_output_tokens: int
    started_s: float
    first_token_s: float | None = None
    eta_first_s: float | None = None

    def to_json(self) -> list[Any]:
        return [self.rid, self.task, self.prompt_tokens, self.expected_output_tokens,
                round(self.started_s, 4),
                None if self.first_token_s is None else round(self.first_token_s, 4)]

    @staticmethod
    def from_json(raw: Sequence[Any]) -> CallLoad:
        rid, task, prompt, out, started, first = raw
        return CallLoad(str(rid), str(task), int(prompt), int(out), float(started),
                        None if first is None else float(first))


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """A replica's routing stats: its calls in flight at ``at_s`` and its concurrency limit."""

    replica_id: str
    at_s: float
    limit: int
    calls: tuple[CallLoad, ...] = ()
    model: str = ""
    coefficients: str = ""
    time_scale: float = 1.0

    def to_stats(self) -> dict[str, Any]:
        return {"v": STATS_VERSION, "replica": self.replica_id, "t": round(self.at_s, 4),
                "limit": self.limit, "model": self.model, "coefficients": self.coefficients,
                "time_scale": self.time_scale, "ongoing": len(self.calls),
                "calls": [c.to_json() for c in self.calls]}

    @staticmethod
    def from_stats(replica_id: str, stats: Mapping[str, Any] | None) -> ReplicaLoad | None:
        """Parse routing stats; None when absent or not ours (another version, malformed)."""
        if not stats or stats.get("v") != STATS_VERSION:
            return None
        try:
            return ReplicaLoad(
                replica_id, float(stats["t"]), max(1, int(stats["limit"])),
                tuple(CallLoad.from_json(c) for c in stats.get("calls", ())),
                str(stats.get("model", "")), str(stats.get("coefficients", "")),
                float(stats.get("time_scale", 1.0)))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the router knows of a request before its body reaches a replica."""

    task: str | None = None
    slo_ttft_ms: float | None = None
    slo_e2e_ms: float | None = None
    prompt_tokens: int | None = None
    max_tokens: int | None = None


def _pos_float(raw: str | None) -> float | None:
    try:
        v = float(raw) if raw is not None else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) and v > 0 else None


def _pos_int(raw: str | None) -> int | None:
    v = _pos_float(raw)
    return None if v is None else max(1, int(v))


def request_info(headers: Mapping[str, str], fallback_task: str | None = None) -> RequestInfo:
    """From lower-cased header names: ``x-cato-task`` (else ``fallback_task``, e.g. Ray's
    ``serve_multiplexed_model_id``), ``x-slo-ttft-ms`` / ``x-slo-e2e-ms``, and the hints
    ``x-cato-prompt-tokens`` / ``x-cato-max-tokens``. Malformed values are ignored here (the
    replica answers them with a 400)."""
    return RequestInfo(headers.get(TASK_HEADER) or fallback_task,
                       _pos_float(headers.get(SLO_TTFT_HEADER)),
                       _pos_float(headers.get(SLO_E2E_HEADER)),
                       _pos_int(headers.get(PROMPT_TOKENS_HEADER)),
                       _pos_int(headers.get(MAX_TOKENS_HEADER)))


#: marks the payload an ingress sends a model deployment (:func:`payload_info`)
PAYLOAD_KEY = "cato_payload"


def payload_info(payload: Mapping[str, Any]) -> RequestInfo:
    """What the router knows of a call that an ingress forwards through a deployment handle:
    the ingress has read the body, so the task, prompt length and ``max_tokens`` are exact;
    the SLA override comes from the forwarded headers."""
    h = {str(k).lower(): str(v) for k, v in dict(payload.get("headers") or {}).items()}
    info = request_info(h)
    prompt = payload.get("prompt_tokens")
    out = payload.get("max_tokens")
    return RequestInfo(str(payload.get("task") or info.task or "") or None,
                       info.slo_ttft_ms, info.slo_e2e_ms,
                       int(prompt) if isinstance(prompt, int) and prompt > 0 else info.prompt_tokens,
                       int(out) if isinstance(out, int) and out > 0 else info.max_tokens)


def asgi_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """An ASGI scope's headers as a dict with lower-case names."""
    out: dict[str, str] = {}
    for k, v in scope.get("headers") or ():
        try:
            out[bytes(k).decode("latin-1").lower()] = bytes(v).decode("latin-1")
        except (TypeError, ValueError):
            continue
    return out


def engine_coefficients(name: str, time_scale: float = 1.0,
                        max_num_seqs: int | None = None) -> ReplicaCoefficients:
    """The latency model of an engine: preset ``name``, its batch capped at ``max_num_seqs``,
    slowed ``time_scale`` times (the gateway's unprofiled model of an emulated engine)."""
    if not time_scale > 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    base = preset(name)
    if max_num_seqs is not None:
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        base = base.with_overrides(max_num_seqs=max_num_seqs)
    if abs(time_scale - 1.0) < 1e-9:
        return base
    return slowed(base, time_scale, name=f"{base.name}-x{time_scale:g}")


def replica_state(view: ReplicaLoad, model: str, now_s: float) -> ReplicaState:
    """The core's gateway view of a replica with ``view``'s calls in flight (and, as in Ray
    Serve, no gateway queue), kept exactly as the dispatcher keeps it (pending prefill and
    context sums)."""
    r = ReplicaState(view.replica_id, model, max(1, view.limit), now_s)
    for i, c in enumerate(view.calls):
        out = max(1, c.expected_output_tokens)
        call = load_call(i, task=c.task, model=model, prompt_tokens=max(1, c.prompt_tokens),
                         expected_output_tokens=out, started_s=c.started_s)
        r.in_flight[i] = InFlight(call, c.started_s, 2, first_token_s=c.first_token_s)
        if c.first_token_s is None:
            r.pending_prefill_tokens += call.num_prompt_tokens
        r.ctx_expected_sum += call.num_prompt_tokens + out / 2.0
        r.ctx_true_sum += call.num_prompt_tokens + out / 2.0
    if view.calls:
        r.idle_since_s = None
    return r


def merge_view(replica_id: str, reported: ReplicaLoad | None, local: Mapping[str, CallLoad],
               done: Iterable[str] | set[str], default_limit: int, *, now_s: float,
               max_age_s: float = 30.0) -> ReplicaLoad:
    """A replica's load as this router sees it: the calls the replica reported (unless the
    report is older than ``max_age_s`` or this router saw them finish: ``done``), and the calls
    this router sent it (``local``; a reported entry of the same id replaces it, since the
    replica knows the true prompt length and the first-token time; until a report comes, a
    local call is taken to have its first token from its ``eta_first_s`` on)."""
    calls: dict[str, CallLoad] = {}
    for rid, c in local.items():
        if c.first_token_s is None and c.eta_first_s is not None and c.eta_first_s <= now_s:
            c = CallLoad(c.rid, c.task, c.prompt_tokens, c.expected_output_tokens, c.started_s,
                         c.eta_first_s)
        calls[rid] = c
    limit = default_limit
    if reported is not None:
        limit = reported.limit
        if now_s - reported.at_s <= max_age_s:
            finished = done if isinstance(done, (set, frozenset, dict)) else set(done)
            for c in reported.calls:
                if c.rid in finished:
                    continue
                if c.rid in calls:
                    c = CallLoad(c.rid, c.task, c.prompt_tokens, c.expected_output_tokens,
                                 calls[c.rid].started_s, c.first_token_s)
                calls[c.rid] = c
    return ReplicaLoad(replica_id, now_s, limit, tuple(calls.values()))


@dataclass(frozen=True, slots=True)
class Ranking:
    """Replica ids, the policy's choice first; its decision (None: no candidate)."""

    order: list[str]
    decision: RoutingDecision | None
    call: LlmCall


@dataclass
class SlackRanker:
    """CATO's Algorithm 1 for one model (one Ray Serve deployment).

    ``coefficients`` (a preset name), ``time_scale`` and ``max_num_seqs`` give the latency model
    of the engines (an emulated engine with time dilation ``d`` is the preset slowed ``d`` times,
    exactly; ``max_num_seqs`` caps its batch if not the preset's); ``sla_scale`` scales every
    task's SLA, as the gateway's config does."""

    model: str = "cato-emulated"
    coefficients: str = "a100-llama7b"
    time_scale: float = 1.0
    max_num_seqs: int | None = None
    sla_scale: float = 1.0
    default_task: str = "generation"
    policy: str = "cato"
    max_candidates: int | None = 32
    estimator: LatencyEstimator = field(init=False)
    planner: Planner = field(init=False)

    def __post_init__(self) -> None:
        if self.default_task not in TASK_NAMES:
            raise ValueError(f"unknown default task {self.default_task!r}; known: "
                             f"{', '.join(TASK_NAMES)}")
        coeffs = engine_coefficients(self.coefficients, self.time_scale, self.max_num_seqs)
        self.estimator = LatencyEstimator({self.model: coeffs}, learning_rate=0.0)
        self.planner = Planner({t: self.model for t in TASK_NAMES}, {self.model: coeffs},
                               sla_scale=self.sla_scale)
        params: dict[str, Any] = {"max_candidates": self.max_candidates}
        self._policy = make_routing_policy(self.policy, self.estimator,
                                           np.random.default_rng(0), **params)
        self._ids = 0

    def task_of(self, info: RequestInfo) -> str:
        return info.task if info.task in self.planner.direct else self.default_task

    def make_call(self, info: RequestInfo, *, arrival_s: float, now_s: float,
                  prompt_tokens: int | None = None) -> LlmCall:
        """The :class:`LlmCall` for a request of ``info`` that arrived at ``arrival_s``, built
        as the gateway builds it (:func:`~cato.core.lifecycle.node_call`); prompt tokens:
        ``prompt_tokens``, else the hint, else the task's typical prompt."""
        planned = self.planner.direct[self.task_of(info)]
        t = planned.task
        node = t.node(t.user_facing_node)
        n_in = prompt_tokens or info.prompt_tokens
        if n_in is None:
            assert node.input_tokens is not None
            n_in = node.input_tokens.typical
        slo = info.slo_ttft_ms if t.sla_kind is SlaKind.TTFT else info.slo_e2e_ms
        self._ids += 1
        return node_call(planned, node.name, call_id=self._ids, task_id=self._ids,
                         arrival_s=arrival_s, now_s=now_s, prompt_tokens=n_in,
                         max_tokens=info.max_tokens, sla_s=None if slo is None else slo / 1000.0)

    def sla(self, info: RequestInfo) -> tuple[SlaKind, float]:
        """The request's SLA kind and seconds (the task's, or the matching override)."""
        t = self.planner.direct[self.task_of(info)].task
        slo = info.slo_ttft_ms if t.sla_kind is SlaKind.TTFT else info.slo_e2e_ms
        return t.sla_kind, (t.sla_s if slo is None else slo / 1000.0)

    def estimate(self, call: LlmCall, view: ReplicaLoad, now_s: float) -> Estimate:
        """Expected wait, TTFT and completion of ``call`` on a replica holding ``view``."""
        return self.estimator.estimate(call, replica_state(view, self.model, now_s), now_s)

    def rank(self, call: LlmCall, views: Sequence[ReplicaLoad],
             now_s: float | None = None) -> Ranking:
        """Algorithm 1 over ``views``: the policy's replica first, then the others by
        ascending calls in flight."""
        now = time.time() if now_s is None else now_s
        pool = ReplicaPool()
        for v in views:
            pool.add(replica_state(v, self.model, now))
        decision = self._policy.route(call, pool, now)
        rest = [r.replica_id for r in pool.by_outstanding(self.model)]
        if decision is None:
            return Ranking(rest, None, call)
        return Ranking([decision.replica_id] + [r for r in rest if r != decision.replica_id],
                       decision, call)
