"""``cato bench run``: an open-loop live load generator for any OpenAI-compatible endpoint.

The measuring instrument for comparing CATO with Ray Serve and round robin on the same stream
(BENCHMARK_PROTOCOL.md sections 2 and 3):

* **Stream** (:func:`build_live_stream`): the simulator's own workload code
  (:func:`cato.sim.scenarios.build_stream_for`) draws arrival times, tasks and token lengths for
  (scenario, rate, seed) -- the identical stream the simulator and every system get -- with the
  scenario's arrival process, duration and mix optionally overridden; each arrival gets a real
  coding prompt of about its input length (:class:`cato.workloads.prompts.PromptSource`, seeded).
  Only single-step tasks (one LLM node) are sent; ``sla_scale`` multiplies every SLA (engines
  slowed D times -> SLAs x D). A replayed trace gives each seed its own window of the trace
  (:func:`cato.sim.scenarios.build_stream_for`), so seeds are independent live too;
  a given ``trace_start_s`` (0 included) pins one window for every seed.
* **Feasibility**: each request is marked feasible in isolation (:mod:`cato.core.feasibility`)
  by the scenario's latency model for its model, slowed ``sla_scale`` times like the SLAs, at
  the prompt's counted tokens and ``max_tokens``; with ``model`` (another endpoint's model) the
  latency model is unknown and the flag stays ``None``.
* **Sending** (:func:`run_live_load`): open loop, each request at its arrival time whatever
  the completions, ``POST {url}/v1/completions`` streamed with ``ignore_eos`` and the header
  ``x-cato-task``; TTFT is measured at the client from the stream (the first event carrying
  text, :mod:`cato.loadgen`), never from server headers.
* **Records and summary** (:func:`live_summary`): one :class:`~cato.core.records.RequestRecord`
  per request (``ok``; ``rejected`` for 429/503; ``timeout``; ``failed`` for any other error, a
  cut stream or one without ``[DONE]``), ``met`` judged at the client by the task's SLA kind;
  the summary is :func:`cato.core.metrics.summary_row` (the ``cato simulate --json`` contract)
  plus ``vllm bench serve``-style names, overall and per task. Rates are over the stream's
  arrival span as scheduled (:attr:`LiveRun.arrival_span_s`), the same for every system run on
  the stream, never up to a system's last completion. With a late tolerance (``cato bench
  compare``: 50 ms), requests the load generator sent later than that after their scheduled
  time are left out of the figures and counted (``late_discarded``, ``late_share``).
* **Outputs** (:func:`write_outputs`): records as JSON lines, the summary JSON, and plots (TTFT
  and E2E CDFs per task, attainment over time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import aiohttp
import numpy as np

from cato.core.coefficients import ReplicaCoefficients, slowed
from cato.core.feasibility import feasible_in_isolation
from cato.core.metrics import discard_warmup, percentile_ms, summarize, summary_row
from cato.core.records import RequestRecord, Status
from cato.core.sla import bound_met, sla_met
from cato.loadgen import Timing, session, stream_request
from cato.sim import arrivals as arr
from cato.sim.scenarios import Scenario, build_stream_for, scenario as get_scenario, with_sla_scale
from cato.sim.workload import TASK_NAMES, TaskArrival, parse_mix
from cato.text import count_tokens
from cato.workloads.prompts import PromptSource

__all__ = [
    "ARRIVAL_OVERRIDES",
    "LiveRequest",
    "LiveRun",
    "VLLM_KEYS",
    "attainment_over_time",
    "build_live_stream",
    "check_reachable",
    "late_sends",
    "live_scenario",
    "live_summary",
    "parse_headers",
    "plot_live",
    "run_live_load",
    "scenario_stream",
    "summary_table",
    "write_outputs",
]

#: Arrival processes that can replace a scenario's own (``None`` keeps the scenario's).
ARRIVAL_OVERRIDES: tuple[str, ...] = ("poisson", "gamma", "onoff", "azure")
#: HTTP statuses that mean "shed by the server" (Ray Serve's back-pressure answers 503).
REJECT_STATUSES: frozenset[int] = frozenset({429, 503})
#: ``vllm bench serve``-style names added to the summary, overall and per task.
VLLM_KEYS: tuple[str, ...] = (
    "request_goodput", "request_throughput", "mean_ttft_ms", "median_ttft_ms", "p95_ttft_ms",
    "p99_ttft_ms", "mean_e2el_ms", "median_e2el_ms", "p95_e2el_ms", "p99_e2el_ms",
    "mean_tpot_ms", "completed", "failed", "duration",
)
TASK_HEADER = "x-cato-task"
_LEAD_S = 0.2          # from the start of the run to t = 0 of the stream
_SPIN_S = 0.001        # the last millisecond before a send is waited by yielding, not sleeping


# ---- the stream ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LiveRequest:
    """One request of a live stream: when to send it, to which model, what, and its SLA.

    ``prompt_tokens`` is the prompt's length under the 4-characters rule
    (:func:`cato.text.count_tokens`, how ``cato engine`` and the gateway count), which is close
    to, not equal to, the drawn input length; ``max_tokens`` is the drawn output length.
    ``feasible``: whether the request meets its SLA alone on an idle replica by the scenario's
    latency model (``None``: unknown), copied into its record.
    """

    id: int
    arrival_s: float
    task: str
    model: str
    prompt: str
    max_tokens: int
    prompt_tokens: int
    sla_kind: Literal["ttft", "e2e"]
    sla_s: float
    feasible: bool | None = None
    e2e_bound_s: float | None = None
    """The task's secondary E2E bound (TTFT tasks), judged at the client like the SLA."""

    def body(self) -> dict[str, Any]:
        return {"model": self.model, "prompt": self.prompt, "max_tokens": self.max_tokens,
                "stream": True, "ignore_eos": True}


@dataclass(frozen=True)
class _GammaScenario(Scenario):
    """A scenario whose arrivals are a gamma renewal process of any CV (the scenarios module
    names only CV 2 and 4); ``build_stream_for`` seeds it exactly as any other."""

    cv: float = 4.0

    def arrivals(self, rate_rps: float, rng: np.random.Generator) -> np.ndarray:
        return arr.gamma_renewal(rate_rps, self.cv, self.duration_s, rng)


def _with_arrival(sc: Scenario, arrival: str, cv: float) -> Scenario:
    if arrival not in ARRIVAL_OVERRIDES:
        raise ValueError(f"unknown arrival process {arrival!r}; known: "
                         f"{', '.join(ARRIVAL_OVERRIDES)}")
    if arrival != "gamma":
        return replace(sc, arrival=arrival)
    if not (math.isfinite(cv) and cv > 0):
        raise ValueError(f"gamma CV must be a positive number, got {cv!r}")
    base = {f.name: getattr(sc, f.name) for f in fields(Scenario)}
    base["arrival"] = f"gamma-cv{cv:g}"
    return _GammaScenario(**base, cv=cv)


def _check_single_step(sc: Scenario) -> None:
    names = TASK_NAMES if sc.arrival == "azure" else [k for k, w in sc.mix.items() if w > 0]
    for name in names:
        task = sc.tasks.get(name)
        if task is None:
            continue
        if len(task.nodes) != 1 or not task.nodes[0].is_llm:
            steps = " -> ".join(n.name for n in task.nodes)
            raise ValueError(
                f"scenario {sc.name!r}: task {name!r} is multi-step ({steps}); a live run sends "
                f"single-step tasks only (one LLM call each) -- choose a single-step scenario or "
                f"a --mix without {name!r}")


def live_scenario(scenario: str, *, duration_s: float | None = None, arrival: str | None = None,
                  cv: float = 4.0, mix: str | Mapping[str, float] | None = None,
                  sla_scale: float = 1.0, trace_start_s: float | None = None) -> Scenario:
    """The named scenario with the overrides applied; ValueError naming a bad value.
    ``trace_start_s`` (0 included) starts a replayed trace's window that many (scaled) seconds
    in, for every seed; ``None`` (the CLI's default) keeps one window per seed (seed 0's starts
    at the trace's beginning)."""
    sc = get_scenario(scenario)
    if trace_start_s is not None:
        if not (math.isfinite(trace_start_s) and trace_start_s >= 0):
            raise ValueError(f"trace start must be >= 0 s, got {trace_start_s!r}")
        sc = replace(sc, trace_start_s=float(trace_start_s))
    if duration_s is not None:
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration must be > 0 s, got {duration_s!r}")
        sc = replace(sc, duration_s=float(duration_s))
    if mix is not None:
        sc = replace(sc, mix=parse_mix(mix, known=sc.tasks) if isinstance(mix, str)
                     else dict(mix))
    if arrival is not None:
        sc = _with_arrival(sc, arrival, cv)
    if sla_scale != 1.0:
        sc = with_sla_scale(sc, sla_scale)
    _check_single_step(sc)
    return sc


def scenario_stream(scenario: str, rate: float, seed: int, *, duration_s: float | None = None,
                    arrival: str | None = None, cv: float = 4.0,
                    mix: str | Mapping[str, float] | None = None,
                    sla_scale: float = 1.0, trace_start_s: float | None = None
                    ) -> tuple[Scenario, list[TaskArrival]]:
    """The scenario (overrides applied) and its simulator stream for (rate, seed)."""
    sc = live_scenario(scenario, duration_s=duration_s, arrival=arrival, cv=cv, mix=mix,
                       sla_scale=sla_scale, trace_start_s=trace_start_s)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be > 0 req/s, got {rate!r}")
    return sc, build_stream_for(sc, rate, seed)


def build_live_stream(scenario: str, rate: float, seed: int, *, duration_s: float | None = None,
                      arrival: str | None = None, mix: str | Mapping[str, float] | None = None,
                      sla_scale: float = 1.0, model: str | None = None,
                      cv: float = 4.0, trace_start_s: float | None = None
                      ) -> list[LiveRequest]:
    """The live stream of (scenario, rate, seed): the simulator's arrivals, tasks and lengths
    with a real prompt each; identical for every system under comparison.

    ``arrival``: one of :data:`ARRIVAL_OVERRIDES` (``gamma`` with coefficient of variation
    ``cv``) or ``None`` for the scenario's own; ``mix``: ``"A"``, ``"B"``,
    ``"task=weight,..."`` or a mapping; ``model`` replaces every task's model name.
    """
    sc, stream = scenario_stream(scenario, rate, seed, duration_s=duration_s, arrival=arrival,
                                 cv=cv, mix=mix, sla_scale=sla_scale,
                                 trace_start_s=trace_start_s)
    prompts = PromptSource(seed)
    coeffs = None if model is not None else {
        d.model: d.coeffs if sla_scale == 1.0 else slowed(d.coeffs, sla_scale)
        for d in sc.deployments}
    return [_live_request(sc, a, prompts, model, coeffs) for a in stream]


def _live_request(sc: Scenario, a: TaskArrival, prompts: PromptSource, model: str | None,
                  coeffs: Mapping[str, ReplicaCoefficients] | None) -> LiveRequest:
    task = sc.tasks[a.task]
    node = task.nodes[0]
    n_in, n_out = a.lengths[node.name]
    text = prompts.prompt_near_tokens(a.task, n_in).text
    n_prompt = count_tokens(text)
    kind: Literal["ttft", "e2e"] = "ttft" if task.sla_kind.value == "ttft" else "e2e"
    feasible = None
    if coeffs is not None and node.model in coeffs:
        feasible = feasible_in_isolation(task, {node.name: (n_prompt, n_out)}, coeffs)
    return LiveRequest(id=a.id, arrival_s=a.arrival_s, task=a.task,
                       model=model or node.model or a.task, prompt=text, max_tokens=n_out,
                       prompt_tokens=n_prompt, sla_kind=kind, sla_s=task.sla_s,
                       feasible=feasible, e2e_bound_s=task.e2e_bound_s)


# ---- sending -------------------------------------------------------------------------------------
@dataclass
class LiveRun:
    """One live run: the stream, per-request timings and records (same order as the stream).

    Record times are seconds after the run's t = 0 (``started_at``, Unix time); a record's
    ``arrival_s`` is when the request was actually sent (``send_lag_s`` later than scheduled).
    ``duration_s`` = first send to the last response's end (the wall-clock run, which differs
    per system; not a rate's denominator: see :attr:`arrival_span_s`).
    """

    url: str
    requests: list[LiveRequest]
    timings: list[Timing]
    records: list[RequestRecord]
    send_lag_s: list[float]
    duration_s: float
    started_at: float

    @property
    def arrival_span_s(self) -> float:
        """The stream's arrival span as scheduled (first to last arrival): the denominator of
        every rate, identical for every system given the stream."""
        times = [r.arrival_s for r in self.requests]
        return max(times) - min(times) if times else 0.0


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    """``["K: V", ...]`` -> ``{"k": "V"}``; ValueError naming a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key.strip() or any(c.isspace() for c in key.strip()):
            raise ValueError(f"bad header {item!r}; expected 'Name: value'")
        out[key.strip().lower()] = value.strip()
    return out


async def check_reachable(url: str, timeout_s: float = 5.0) -> None:
    """Raise ValueError naming ``url`` unless an HTTP server answers there (any status)."""
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"bad URL {url!r}; expected http://host:port")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            async with s.get(url.rstrip("/") + "/v1/models") as r:
                await r.read()
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        raise ValueError(f"cannot reach {url!r}: {type(e).__name__}: {e}") from None


async def _sleep_until(target: float) -> None:
    delay = target - _SPIN_S - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    while time.perf_counter() < target:
        await asyncio.sleep(0)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as prog:
        tid = prog.add_task("requests done", total=total)
        yield lambda: prog.advance(tid)


async def _send_all(s: aiohttp.ClientSession, endpoint: str, stream: Sequence[LiveRequest],
                    headers: Mapping[str, str], t0: float,
                    on_done: Callable[[], None]) -> list[Timing]:
    """Send every request at ``t0 + arrival_s`` (open loop); timings in stream order."""
    order = sorted(range(len(stream)), key=lambda i: (stream[i].arrival_s, stream[i].id))
    jobs: dict[int, asyncio.Task[Timing]] = {}
    for i in order:
        req = stream[i]
        await _sleep_until(t0 + req.arrival_s)
        h = {TASK_HEADER: req.task, **headers}
        job = asyncio.create_task(stream_request(s, endpoint, req.body(), h))
        job.add_done_callback(lambda _: on_done())
        jobs[i] = job
    await asyncio.gather(*jobs.values())
    return [jobs[i].result() for i in range(len(stream))]


def _status(t: Timing) -> Status:
    if t.timed_out:
        return "timeout"
    if t.status in REJECT_STATUSES:
        return "rejected"
    if t.status == 200 and t.done and t.error is None and t.first_at is not None:
        return "ok"
    return "failed"


def _record(req: LiveRequest, t: Timing, t0: float, system: str) -> RequestRecord:
    status = _status(t)
    sent = (t.sent_at if t.sent_at is not None else t0 + req.arrival_s) - t0
    first = None if t.first_at is None else t.first_at - t0
    last = t.last_at - t0 if status == "ok" and t.last_at is not None else None
    ttft = None if first is None else first - sent
    e2e = None if last is None else last - sent      # last is None unless status is "ok"
    met = status == "ok" and sla_met(req.sla_kind, req.sla_s, ttft_s=ttft, e2e_s=e2e)
    met2 = bound_met(req.e2e_bound_s, e2e)
    return RequestRecord(id=req.id, task=req.task, policy=system, arrival_s=sent,
                         first_token_s=first, last_token_s=last, n_in=req.prompt_tokens,
                         n_out=t.output_tokens or req.max_tokens, sla_kind=req.sla_kind,
                         sla_s=req.sla_s, status=status, met=met, replica=t.replica,
                         feasible=req.feasible, e2e_bound_s=req.e2e_bound_s,
                         met_secondary=met2)


async def run_live_load(url: str, stream: list[LiveRequest], *,
                        headers: Mapping[str, str] | None = None, progress: bool = True,
                        timeout_s: float = 600.0, system: str = "live") -> LiveRun:
    """Replay ``stream`` open loop against ``POST {url}/v1/completions``.

    Every request is sent at its arrival time after the start, whatever the completions;
    ``headers`` are added to each (after ``x-cato-task``, so they may override it); a request
    still running after ``timeout_s`` counts as ``timeout``. Never raises for a server's fault.
    """
    if not stream:
        raise ValueError("the stream is empty: nothing to send")
    endpoint = url.rstrip("/") + "/v1/completions"
    extra = {k.lower(): v for k, v in (headers or {}).items()}
    with _progress_bar(progress, len(stream)) as advance:
        async with session(timeout_s=timeout_s) as s:
            t0 = time.perf_counter() + _LEAD_S
            started_at = time.time() + _LEAD_S
            timings = await _send_all(s, endpoint, stream, extra, t0, advance)
    records = [_record(r, t, t0, system) for r, t in zip(stream, timings)]
    lag = [max(0.0, rec.arrival_s - r.arrival_s) for r, rec in zip(stream, records)]
    start = min(rec.arrival_s for rec in records)
    end = max((t.end_at or t0) - t0 for t in timings)
    return LiveRun(url=url, requests=list(stream), timings=timings, records=records,
                   send_lag_s=lag, duration_s=max(end - start, 1e-6), started_at=started_at)


# ---- the summary ---------------------------------------------------------------------------------
def _vllm_fields(f: Mapping[str, Any], duration: float) -> dict[str, Any]:
    return {
        "median_ttft_ms": f["p50_ttft_ms"],
        "mean_e2el_ms": f["mean_e2e_ms"],
        "median_e2el_ms": f["p50_e2e_ms"],
        "p95_e2el_ms": f["p95_e2e_ms"],
        "p99_e2el_ms": f["p99_e2e_ms"],
        "completed": f["num_completed"],
        "failed": f["num_arrived"] - f["num_completed"],
        "duration": duration,
    }


def _offered_rate(run: LiveRun) -> float:
    times = sorted(r.arrival_s for r in run.requests)
    span = times[-1] - times[0]
    return (len(times) - 1) / span if len(times) > 1 and span > 0 else len(times) / run.duration_s


def late_sends(run: LiveRun, tolerance_s: float | None) -> set[int]:
    """Ids of the requests the load generator sent more than ``tolerance_s`` after their
    scheduled time (none for ``None``)."""
    if tolerance_s is None:
        return set()
    if not (math.isfinite(tolerance_s) and tolerance_s >= 0):
        raise ValueError(f"late tolerance must be >= 0 s, got {tolerance_s!r}")
    return {req.id for req, lag in zip(run.requests, run.send_lag_s) if lag > tolerance_s}


def live_summary(run: LiveRun, *, system: str, utilization: float | None = None,
                 scenario: str = "", rate_rps: float | None = None, seed: int | None = None,
                 warmup_fraction: float = 0.05, warmup_s: float = 60.0,
                 late_tolerance_s: float | None = None) -> dict[str, Any]:
    """The run's JSON summary: :func:`cato.core.metrics.summary_row` (the ``cato simulate
    --json`` contract; warm-up discarded per the protocol) plus, overall and per task, the
    ``vllm bench serve`` names of :data:`VLLM_KEYS`.

    Late sends (BENCHMARK_PROTOCOL.md section 4): with ``late_tolerance_s``, a request the load
    generator sent more than that after its scheduled time is left out of every figure (it
    measured the load generator, not the system), after the warm-up cut, which is the same
    whether or not anything was late. ``late_discarded`` counts them (warm-up excluded),
    ``late_share`` is their share of the requests past the warm-up, ``late_tolerance_ms`` the
    rule's tolerance (``None``: no rule, nothing discarded), ``late_ids`` their ids (the
    records and these ids recompute every figure). Goodput still divides by the
    stream's arrival span, so a discarded request is one not met: a run with late sends is
    reported with their count, never silently.

    ``duration`` is the window the rates are over (= ``duration_s``: the stream's arrival span
    as scheduled, :attr:`LiveRun.arrival_span_s`, less the discarded warm-up -- the same for
    every system on the stream); ``run_duration_s`` is the whole run, first send to last end.
    ``failed`` counts every request not ``ok`` (rejected, timed out, failed). Utilisation is
    unknown to a client: ``utilization`` (0..1) is taken as given, else ``None``.
    ``rate_rps`` defaults to the stream's offered rate.
    """
    if utilization is not None and not 0.0 <= utilization <= 1.0:
        raise ValueError(f"utilization must be in [0, 1], got {utilization!r}")
    records = [replace(r, policy=system) for r in run.records]
    kept, cut = discard_warmup(records, warmup_fraction=warmup_fraction, warmup_s=warmup_s)
    late = late_sends(run, late_tolerance_s)
    on_time = [r for r in kept if r.id not in late]
    n_late = len(kept) - len(on_time)
    # the warm-up is cut once, over every request: the window and the cut are the system's
    # whatever was late
    s = summarize(on_time, duration_s=max(0.0, run.arrival_span_s - cut), warmup_fraction=0.0)
    rate = rate_rps if rate_rps is not None else _offered_rate(run)
    row = summary_row(s, policy=system, scenario=scenario, rate_rps=rate, seed=seed)
    row["num_warmup_discarded"] = len(records) - len(kept)
    row["warmup_cut_s"] = cut
    row["utilization"] = utilization
    row.update(_vllm_fields(row, s.duration_s))
    for t in row["tasks"].values():
        t["utilization"] = utilization
        t.update(_vllm_fields(t, s.duration_s))
    errors = Counter(f"{t.status}: {t.error}" for t in run.timings if t.error is not None)
    row.update({
        "system": system, "url": run.url, "started_at": run.started_at,
        "run_duration_s": run.duration_s, "num_requests": len(run.records),
        "num_timeout": sum(r.status == "timeout" for r in run.records),
        "send_lag_p50_ms": percentile_ms(run.send_lag_s, 50.0),
        "send_lag_p99_ms": percentile_ms(run.send_lag_s, 99.0),
        "send_lag_max_ms": percentile_ms(run.send_lag_s, 100.0), "errors": dict(errors.most_common(10)),
        "late_tolerance_ms": None if late_tolerance_s is None else late_tolerance_s * 1000.0,
        "late_discarded": n_late, "late_share": n_late / len(kept) if kept else 0.0,
        "late_ids": sorted(r.id for r in kept if r.id in late),
    })
    return row


def summary_table(summary: Mapping[str, Any], title: str | None = None) -> Any:
    """A rich table of the summary: one row per task and one for all tasks."""
    from rich.table import Table

    t = Table(title=title or f"{summary['policy']}: {summary['num_requests']} requests, "
                             f"{summary['rate_rps']:.3g} req/s")
    cols = ("task", "arrived", "ok", "rejected", "failed", "attainment", "feasible",
            "attainment (feasible)", "goodput (req/s)", "P50 TTFT ms", "P95 TTFT ms",
            "P95 E2E ms", "mean TPOT ms")
    for c in cols:
        t.add_column(c, justify="left" if c == "task" else "right")

    def cell(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for name, f in [*summary["tasks"].items(), ("all", summary)]:
        t.add_row(name, str(f["num_arrived"]), str(f["num_completed"]), str(f["num_rejected"]),
                  str(f["num_failed"]), cell(f["attainment"], ".3f"),
                  cell(f.get("num_feasible"), "d"), cell(f.get("attainment_feasible"), ".3f"),
                  cell(f["request_goodput"], ".3f"), cell(f["p50_ttft_ms"], ".1f"),
                  cell(f["p95_ttft_ms"], ".1f"), cell(f["p95_e2e_ms"], ".1f"),
                  cell(f["mean_tpot_ms"], ".2f"))
    return t


# ---- outputs -------------------------------------------------------------------------------------
def attainment_over_time(records: Sequence[RequestRecord], window_s: float
                         ) -> dict[str, list[tuple[float, float]]]:
    """Attainment (met / arrived) per window of ``window_s`` by arrival time, overall
    (``"all"``) and per task: ``{name: [(window start s, attainment), ...]}``; windows where a
    task had no arrival are left out."""
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window must be > 0 s, got {window_s!r}")
    if not records:
        return {}
    t0 = min(r.arrival_s for r in records)
    cells: dict[str, dict[int, list[int]]] = {}
    for r in records:
        k = int((r.arrival_s - t0) // window_s)
        for name in ("all", r.task):
            c = cells.setdefault(name, {}).setdefault(k, [0, 0])
            c[0] += int(r.met)
            c[1] += 1
    return {name: [(k * window_s, met / n) for k, (met, n) in sorted(ws.items())]
            for name, ws in sorted(cells.items())}


def _cdf(ax: Any, records: Sequence[RequestRecord], kind: Literal["ttft", "e2e"]) -> None:
    from matplotlib import ticker

    for i, task in enumerate(sorted({r.task for r in records})):
        rs = [r for r in records if r.task == task]
        vals = sorted(v * 1000.0 for r in rs
                      if (v := (r.ttft_s if kind == "ttft" else r.e2e_s)) is not None)
        color = f"C{i}"
        if vals:
            ys = np.arange(1, len(vals) + 1) / len(rs)
            ax.step(vals, ys, where="post", color=color, label=f"{task} ({len(vals)}/{len(rs)})")
        if rs[0].sla_kind == kind:
            ax.axvline(rs[0].sla_s * 1000.0, color=color, linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(f"{kind.upper()} (ms); dashed: SLA")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def plot_live(records: Sequence[RequestRecord], out_dir: Path, *, prefix: str = "",
              window_s: float = 10.0, title: str = "") -> list[Path]:
    """Two PNGs: TTFT and E2E CDFs per task (over all requests, so a curve tops out at the
    share that produced the value) and attainment per window of ``window_s`` over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _cdf(axes[0], records, "ttft")
    _cdf(axes[1], records, "e2e")
    fig.suptitle(f"{title}: latency CDFs per task" if title else "latency CDFs per task")
    cdf_path = out_dir / f"{prefix}cdf.png"
    fig.tight_layout()
    fig.savefig(cdf_path, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, pts in attainment_over_time(records, window_s).items():
        xs = [x + window_s / 2 for x, _ in pts]
        ax.plot(xs, [y for _, y in pts], marker=".", label=name,
                linewidth=2.0 if name == "all" else 1.0,
                color="black" if name == "all" else None)
    if records:
        span = max(r.arrival_s for r in records) - min(r.arrival_s for r in records)
        ax.set_xlim(0.0, max(span, window_s))
    ax.set_xlabel(f"arrival time (s), windows of {window_s:g} s (at their middle)")
    ax.set_ylabel("SLA attainment")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: attainment over time" if title else "attainment over time")
    att_path = out_dir / f"{prefix}attainment.png"
    fig.tight_layout()
    fig.savefig(att_path, dpi=120)
    plt.close(fig)
    return [cdf_path, att_path]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "run"


def write_outputs(run: LiveRun, summary: Mapping[str, Any], out_dir: Path, *,
                  window_s: float = 10.0) -> list[Path]:
    """Write ``{system}.records.jsonl`` (one :class:`RequestRecord` a line), ``{system}.summary
    .json`` and the plots of :func:`plot_live` into ``out_dir``; return the paths."""
    system = str(summary.get("policy") or "live")
    prefix = _safe(system) + "."
    out_dir.mkdir(parents=True, exist_ok=True)
    rec_path = out_dir / f"{prefix}records.jsonl"
    records = [replace(r, policy=system) for r in run.records]
    rec_path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    sum_path = out_dir / f"{prefix}summary.json"
    sum_path.write_text(json.dumps(summary, indent=1))
    title = f"{system} @ {summary.get('rate_rps', 0):.3g} req/s"
    return [rec_path, sum_path, *plot_live(records, out_dir, prefix=prefix, window_s=window_s,
                                           title=title)]
