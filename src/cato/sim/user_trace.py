"""A team's own request trace (CSV), replayed by the simulator (``cato simulate --trace``).

Format: a header row naming at least the columns ``timestamp``, ``task``, ``input_tokens`` and
``output_tokens`` (any order; other columns are ignored), then one row per request:

* ``timestamp``: when it arrived, in seconds (any origin: the first row is time 0), finite and
  non-decreasing down the file;
* ``task``: one of the deployment's task names (built-in or declared);
* ``input_tokens`` / ``output_tokens``: whole numbers >= 1, the user-facing LLM node's prompt and
  generated lengths; every other node of the task is drawn from its declaration, as in
  :func:`cato.sim.workload.build_stream`.

Every error names the file, the row (1-based, the header is row 1) and the column. At most
:data:`MAX_ROWS` rows.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping

import numpy as np

from cato.core.task import TaskType
from cato.sim.workload import TaskArrival, draw_request, spawn_streams

COLUMNS = ("timestamp", "task", "input_tokens", "output_tokens")
MAX_ROWS = 5_000_000


class TraceError(ValueError):
    """A trace file is unreadable or malformed; the message names the row and column."""


@dataclass(frozen=True, slots=True)
class TraceRow:
    arrival_s: float
    task: str
    input_tokens: int
    output_tokens: int


def load_user_trace(path: str | Path, tasks: Collection[str]) -> list[TraceRow]:
    """The rows of the CSV trace at ``path`` (module docstring), times from 0; ``tasks``: the
    known task names. Raises :class:`TraceError`."""
    p = Path(path)
    try:
        fh = p.open(newline="")
    except OSError as e:
        raise TraceError(f"cannot read trace {str(p)!r}: {e.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise TraceError(f"trace {str(p)!r} is empty: it needs a header row with "
                             f"{', '.join(COLUMNS)}")
        cols = [h.strip() for h in header]
        missing = [c for c in COLUMNS if c not in cols]
        if missing:
            raise TraceError(f"trace {str(p)!r}, row 1 (header): missing column(s) "
                             f"{', '.join(missing)}; found {cols}")
        idx = {c: cols.index(c) for c in COLUMNS}
        rows: list[TraceRow] = []
        known = set(tasks)
        prev = -math.inf
        t0 = 0.0
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not x.strip() for x in rec):
                continue
            if len(rows) >= MAX_ROWS:
                raise TraceError(f"trace {str(p)!r}: more than {MAX_ROWS} rows")
            where = f"trace {str(p)!r}, row {line}"

            def cell(col: str) -> str:
                i = idx[col]
                if i >= len(rec):
                    raise TraceError(f"{where}, column {col}: missing (the row has {len(rec)} "
                                     f"fields)")
                return rec[i].strip()

            try:
                ts = float(cell("timestamp"))
            except ValueError:
                raise TraceError(f"{where}, column timestamp: {cell('timestamp')!r} is not a "
                                 f"number of seconds") from None
            if not math.isfinite(ts):
                raise TraceError(f"{where}, column timestamp: {cell('timestamp')!r} is not "
                                 f"finite")
            if ts < prev:
                raise TraceError(f"{where}, column timestamp: {ts:g} is before the previous "
                                 f"row's {prev:g}; sort the trace by time")
            task = cell("task")
            if task not in known:
                raise TraceError(f"{where}, column task: unknown task {task!r}; known: "
                                 f"{', '.join(sorted(known))}")
            n_in, n_out = (_tokens(cell(c), where, c) for c in ("input_tokens", "output_tokens"))
            if not rows:
                t0 = ts
            prev = ts
            rows.append(TraceRow(ts - t0, task, n_in, n_out))
    if not rows:
        raise TraceError(f"trace {str(p)!r} has a header but no rows")
    return rows


def _tokens(raw: str, where: str, col: str) -> int:
    try:
        v = float(raw)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v >= 1 and v == int(v)):
        raise TraceError(f"{where}, column {col}: {raw!r} is not a whole number of tokens >= 1")
    return int(v)


def trace_rate_rps(rows: list[TraceRow]) -> float:
    """The trace's mean arrival rate (rows over its span; one row: 1 req/s)."""
    span = rows[-1].arrival_s - rows[0].arrival_s
    return (len(rows) - 1) / span if span > 0 and len(rows) > 1 else 1.0


def build_user_trace_stream(rows: list[TraceRow], tasks: Mapping[str, TaskType],
                            rng: np.random.Generator) -> list[TaskArrival]:
    """The stream replaying ``rows``: the user-facing LLM node of each row's task takes the
    row's lengths; every other node is drawn as :func:`cato.sim.workload.build_stream` does
    (the same child streams, the same per-node draw order)."""
    streams = spawn_streams(rng)
    out: list[TaskArrival] = []
    for i, r in enumerate(rows):
        task = tasks[r.task]
        out.append(draw_request(i, r.task, task, r.arrival_s, streams,
                                (task.user_facing_node, (r.input_tokens, r.output_tokens))))
    return out
