"""``cato bench run``: an open-loop live load generator for any OpenAI-compatible endpoint.

The measuring instrument for comparing CATO with Ray Serve and round robin on the same stream
(BENCHMARK_PROTOCOL.md sections 2 and 3):

* **Stream** (:func:`~cato.benchmarks.live_stream.build_live_stream`): the simulator's own
  workload code (:func:`cato.sim.scenarios.build_stream_for`) draws arrival times, tasks and
  token lengths for (scenario, rate, seed) -- the identical stream the simulator and every
  system get -- with the scenario's arrival process, duration and mix optionally overridden;
  each arrival gets a real coding prompt of about its input length
  (:class:`cato.workloads.prompts.PromptSource`, seeded).
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
* **Records and summary** (:func:`~cato.benchmarks.live_summary.live_summary`): one
  :class:`~cato.core.records.RequestRecord` per request (``ok``; ``rejected`` for 429/503;
  ``timeout``; ``failed`` for any other error, a cut stream or one without ``[DONE]``),
  ``met`` judged at the client by the task's SLA kind;
  the summary is :func:`cato.core.metrics.summary_row` (the ``cato simulate --json`` contract)
  plus ``vllm bench serve``-style names, overall and per task. Rates are over the stream's
  arrival span as scheduled (:attr:`LiveRun.arrival_span_s`), the same for every system run on
  the stream, never up to a system's last completion. With a late tolerance (``cato bench
  compare``: 50 ms), requests the load generator sent later than that after their scheduled
  time are left out of the figures and counted (``late_discarded``, ``late_share``).
* **Outputs** (:func:`~cato.benchmarks.live_outputs.write_outputs`): records as JSON lines, the
  summary JSON, and plots (TTFT and E2E CDFs per task, attainment over time).

This module sends the stream (:func:`run_live_load`); the stream is built in
:mod:`cato.benchmarks.live_stream`, summarised in :mod:`cato.benchmarks.live_summary` and
written out in :mod:`cato.benchmarks.live_outputs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from cato.benchmarks.live_stream import LiveRequest
from cato.core.records import RequestRecord, Status
from cato.core.sla import bound_met, sla_met
from cato.loadgen import Timing, session, stream_request

__all__ = [
    "LiveRun",
    "check_reachable",
    "parse_headers",
    "run_live_load",
]

#: HTTP statuses that mean "shed by the server" (Ray Serve's back-pressure answers 503).
REJECT_STATUSES: frozenset[int] = frozenset({429, 503})
TASK_HEADER = "x-cato-task"
_LEAD_S = 0.2          # from the start of the run to t = 0 of the stream
_SPIN_S = 0.001        # the last millisecond before a send is waited by yielding, not sleeping


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
