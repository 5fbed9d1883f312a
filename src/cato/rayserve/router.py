"""CATO's slack-aware routing (Algorithm 1) as a Ray Serve custom request router.

Use it on any deployment whose replicas report their load the way
:class:`~cato.rayserve.app.CatoEngineDeployment` does (``record_routing_stats`` returning
:meth:`cato.rayserve.ranking.ReplicaLoad.to_stats`)::

    from ray.serve.config import RequestRouterConfig
    from cato.rayserve.router import CatoRequestRouter

    @serve.deployment(request_router_config=RequestRouterConfig(
        request_router_class=CatoRequestRouter,
        request_router_kwargs={"coefficients": "a100-llama7b", "time_scale": 1.0},
        request_routing_stats_period_s=1.0))

How the request's task reaches the router. Ray Serve's HTTP proxy hands every request to the
router as a :class:`~ray.serve.request_router.PendingRequest` whose first argument is the
pickled ``StreamingHTTPRequest`` carrying the request's ASGI scope, so the router reads the
headers: ``x-cato-task`` (the task, hence its SLA kind and seconds), ``x-slo-ttft-ms`` /
``x-slo-e2e-ms`` (a per-request SLA) and the optional hints ``x-cato-prompt-tokens`` /
``x-cato-max-tokens``. The body is not there yet (the replica pulls it from the proxy later),
so a ``model`` naming a task is seen by the replica but not by the router. Behind CATO's
ingress (several models, :class:`cato.rayserve.app.OpenAIIngress`) the call arrives through a
deployment handle with a payload the ingress built from the parsed body: task, exact prompt
tokens and ``max_tokens``. Other handle calls fall back to Ray's ``multiplexed_model_id`` (the
``serve_multiplexed_model_id`` header) when it names a task, else ``default_task``.

What it approximates, compared with CATO's own gateway (which holds the queues itself):

* no gateway priority queues: Ray routes each request when it arrives (or, when every replica
  is at ``max_ongoing_requests``, keeps it in the proxy's FIFO and retries), so the priority of
  Algorithm 1 decides the replica but orders nothing; behind a full replica the wait is the
  engine's own (FCFS) queue;
* load is known exactly for the calls this router sent (it sees them routed and completed) and
  as of the last routing-stats report for everything else (calls of other routers, first-token
  times, true prompt lengths): ``request_routing_stats_period_s`` old at most;
* the prompt length is a hint or the task's typical length (the body is not visible), the
  arrival time is the proxy's ``PendingRequest.created_at``, and estimates use the preset's
  latency model without the gateway's online correction (no observed latencies reach the
  router).
"""

from __future__ import annotations

import pickle
import time
from collections import OrderedDict
from typing import Any, Sequence

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from cato.rayserve.ranking import (PAYLOAD_KEY, CallLoad, ReplicaLoad, RequestInfo, SlackRanker,
                                   asgi_headers, merge_view, payload_info, request_info)

#: how many finished request ids a router remembers (to discount stale routing stats)
_DONE_MEMORY = 4096


def pending_request_headers(pr: PendingRequest) -> dict[str, str] | None:
    """The HTTP headers of a request as the proxy hands it to the router, or None when it is
    not an HTTP request (a handle call)."""
    for arg in list(pr.args) + list(pr.kwargs.values()):
        obj: Any = arg
        if isinstance(arg, (bytes, bytearray)):
            try:
                obj = pickle.loads(arg)
            except Exception:   # noqa: BLE001  (not ours to parse)
                continue
        scope = getattr(obj, "asgi_scope", None)
        if isinstance(scope, dict):
            return asgi_headers(scope)
        if isinstance(obj, dict) and isinstance(obj.get("headers"), (list, tuple)):
            return asgi_headers(obj)
    return None


def pending_request_info(pr: PendingRequest) -> RequestInfo:
    """What the router knows of a request: from the payload of CATO's ingress (exact lengths),
    else from the HTTP headers, else the multiplexed model id as the task."""
    for arg in list(pr.args) + list(pr.kwargs.values()):
        if isinstance(arg, dict) and arg.get(PAYLOAD_KEY):
            return payload_info(arg)
    headers = pending_request_headers(pr) or {}
    return request_info(headers, pr.metadata.multiplexed_model_id or None)


class CatoRequestRouter(RequestRouter):
    """Slack-aware routing (Algorithm 1) over replicas' reported load; see the module
    docstring. ``request_router_kwargs``: ``model``, ``coefficients`` (preset name),
    ``time_scale``, ``max_num_seqs``, ``sla_scale``, ``default_task``, ``policy`` (``cato`` or
    ``cato-plus``), ``max_candidates``, ``stats_max_age_s``."""

    def initialize_state(self, **kwargs: Any) -> None:
        stats_max_age_s = float(kwargs.pop("stats_max_age_s", 30.0))
        self._ranker = SlackRanker(**kwargs)
        self._stats_max_age_s = stats_max_age_s
        self._local: dict[str, dict[str, CallLoad]] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._calls: OrderedDict[str, tuple[CallLoad, float, bool]] = OrderedDict()
        self._info: OrderedDict[str, RequestInfo] = OrderedDict()
        self.decisions = 0
        self.predicted_violations = 0

    def _ensure_state(self) -> None:
        if not hasattr(self, "_ranker"):   # initialize_state not called (no kwargs given)
            self.initialize_state()

    # ---- the request -----------------------------------------------------------------------
    def _request_info(self, pr: PendingRequest) -> RequestInfo:
        key = pr.metadata.internal_request_id
        info = self._info.get(key)
        if info is None:
            info = pending_request_info(pr)
            self._info[key] = info
            while len(self._info) > _DONE_MEMORY:
                self._info.popitem(last=False)
        return info

    def _view(self, r: RunningReplica, now: float) -> ReplicaLoad:
        rid = r.replica_id.unique_id
        reported = ReplicaLoad.from_stats(rid, r.routing_stats)
        return merge_view(rid, reported, self._local.get(rid, {}), self._done,
                          r.max_ongoing_requests, now_s=now, max_age_s=self._stats_max_age_s)

    # ---- RequestRouter -----------------------------------------------------------------------
    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[RunningReplica]]:
        self._ensure_state()
        if not candidate_replicas:
            return []
        if pending_request is None:
            return [candidate_replicas]
        # back off between rounds when every replica is full (as Ray's own routers do)
        pending_request.routing_context.should_backoff = True
        now = time.time()
        info = self._request_info(pending_request)
        call = self._ranker.make_call(info, arrival_s=min(pending_request.created_at, now),
                                      now_s=now)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        ranking = self._ranker.rank(call, [self._view(r, now) for r in candidate_replicas], now)
        d = ranking.decision
        ttft = (d.estimate.ttft_s if d is not None and d.estimate is not None
                else self._ranker.estimator.isolated(call).ttft_s)
        load = CallLoad(pending_request.metadata.internal_request_id, call.task,
                        call.num_prompt_tokens, call.expected_output_tokens, now)
        self._calls[load.rid] = (load, ttft, d is not None and d.predicted_violation)
        while len(self._calls) > _DONE_MEMORY:
            self._calls.popitem(last=False)
        ordered = [by_id[x] for x in ranking.order if x in by_id]
        if not ordered:
            return [candidate_replicas]
        return [[ordered[0]], ordered[1:]] if len(ordered) > 1 else [ordered]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: Any) -> None:
        self._ensure_state()
        rid = pending_request.metadata.internal_request_id
        entry = self._calls.pop(rid, None)
        if entry is None:
            return
        load, ttft_s, predicted = entry
        now = time.time()
        self._local.setdefault(replica_id.unique_id, {})[rid] = CallLoad(
            rid, load.task, load.prompt_tokens, load.expected_output_tokens, now,
            eta_first_s=now + ttft_s)
        self.decisions += 1
        self.predicted_violations += int(predicted)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._ensure_state()
        calls = self._local.get(replica_id.unique_id)
        if calls is not None and calls.pop(internal_request_id, None) is not None:
            self._done[internal_request_id] = None
            while len(self._done) > _DONE_MEMORY:
                self._done.popitem(last=False)
        self._info.pop(internal_request_id, None)

    def update_replicas(self, replicas: Sequence[RunningReplica]) -> None:
        super().update_replicas(list(replicas))
        self._ensure_state()
        alive = {r.replica_id.unique_id for r in replicas}
        for rid in list(self._local):
            if rid not in alive:
                del self._local[rid]
