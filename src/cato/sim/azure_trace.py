"""Replay of the Azure LLM inference trace 2023, code service (BENCHMARK_PROTOCOL.md section 2):
loading the trace (:func:`load_azure_code_trace`, :func:`default_azure_trace_path`,
:class:`AzureTrace`), each seed's window of the looped trace (:func:`trace_window_start`) and the
trace-to-task mapping (:func:`azure_task_for`).

Trace attribution: the Azure LLM inference trace 2023 is published by Microsoft in the
repository Azure/AzurePublicDataset (Patel et al., "Splitwise: Efficient generative LLM
inference using phase splitting", ISCA 2024) under the Creative Commons Attribution 4.0
licence (CC-BY 4.0). Results derived from it must keep this attribution.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cato.sim.arrivals import FloatArray, _non_negative, _positive

IntArray = npt.NDArray[np.int64]

#: The Azure trace's folder inside the package (CC-BY 4.0; its LICENSE and README sit beside it).
AZURE_TRACE_DIR = Path(__file__).resolve().parent.parent / "data" / "azure-llm-inference-2023"
#: File name of the code-service trace.
AZURE_CODE_TRACE_FILE = "AzureLLMInferenceTrace_code.csv"
#: Environment variable naming the trace CSV (or the folder holding it); overrides the search.
AZURE_TRACE_ENV = "CATO_AZURE_TRACE"

#: Protocol thresholds of the trace-to-task mapping (BENCHMARK_PROTOCOL.md section 2, item 4).
COMPLETION_MAX_OUTPUT_TOKENS = 32
GENERATION_MAX_INPUT_TOKENS = 1000  # exclusive: input < 1000 -> generation


# ---- Azure trace replay -------------------------------------------------------------------------
_EPOCH = datetime(1970, 1, 1)
_TICKS_PER_S = 10_000_000  # the trace's 7 fractional digits are 100 ns ticks


def _parse_ticks(stamp: str, where: str) -> int:
    """``YYYY-MM-DD HH:MM:SS[.fffffff]`` -> integer 100 ns ticks since 1970 (naive, exact)."""
    s = stamp.strip()
    main, _, frac = s.partition(".")
    try:
        dt = datetime.strptime(main, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise ValueError(f"{where}: bad TIMESTAMP {stamp!r}") from None
    if frac and (not frac.isdigit() or len(frac) > 7):
        raise ValueError(f"{where}: bad fractional seconds in TIMESTAMP {stamp!r}")
    delta = dt - _EPOCH
    whole = delta.days * 86_400 + delta.seconds
    return whole * _TICKS_PER_S + (int(frac.ljust(7, "0")) if frac else 0)


@dataclass(frozen=True, slots=True, eq=False)
class AzureTrace:
    """Arrivals and token counts of an Azure LLM inference trace (read-only arrays).

    ``arrival_s`` is in seconds relative to the first request and sorted; ``context_tokens`` and
    ``generated_tokens`` are aligned with it. Data: Azure LLM inference trace 2023 (Microsoft,
    Azure/AzurePublicDataset; Patel et al., Splitwise, ISCA 2024), CC-BY 4.0.
    """

    arrival_s: FloatArray
    context_tokens: IntArray
    generated_tokens: IntArray

    def __post_init__(self) -> None:
        arrival = np.asarray(self.arrival_s, dtype=np.float64).view()
        ctx = np.asarray(self.context_tokens, dtype=np.int64).view()
        gen = np.asarray(self.generated_tokens, dtype=np.int64).view()
        n = arrival.shape[0] if arrival.ndim == 1 else -1
        if n < 0 or ctx.shape != (n,) or gen.shape != (n,):
            raise ValueError(
                f"trace arrays must be 1-D of equal length, got shapes {arrival.shape}, "
                f"{ctx.shape}, {gen.shape}"
            )
        if n and (not np.all(np.isfinite(arrival)) or np.any(np.diff(arrival) < 0)):
            raise ValueError("trace arrival_s must be finite and sorted")
        # Read-only views: the caller's arrays are not modified, the trace cannot be.
        for name, arr in (("arrival_s", arrival), ("context_tokens", ctx), ("generated_tokens", gen)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def span_s(self) -> float:
        """Time from the first to the last arrival (seconds)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    @property
    def mean_rate_rps(self) -> float:
        """Mean arrival rate: ``(n - 1) / span`` (the inverse of the mean inter-arrival time)."""
        if len(self) < 2 or self.span_s <= 0.0:
            raise ValueError(f"mean rate needs at least two distinct arrivals, trace has {len(self)}")
        return (len(self) - 1) / self.span_s

    def time_scaled(
        self,
        target_rate_rps: float | None = None,
        speedup: float | None = None,
        duration_s: float | None = None,
        start_s: float = 0.0,
    ) -> AzureTrace:
        """The trace with its time axis compressed or stretched, optionally truncated.

        Exactly one of ``target_rate_rps`` (the scaled trace's :attr:`mean_rate_rps`) or
        ``speedup`` (arrival times divided by it; 2 = twice as fast) must be given. Then, if
        ``duration_s`` is given, only arrivals with scaled time < ``duration_s`` are kept.
        ``start_s`` (scaled seconds) skips the trace's beginning: arrivals before it are dropped
        and the rest shifted to start at 0 (before ``duration_s`` applies). Token counts are
        unchanged.
        """
        if (target_rate_rps is None) == (speedup is None):
            raise ValueError(
                f"give exactly one of target_rate_rps={target_rate_rps!r} and speedup={speedup!r}"
            )
        if target_rate_rps is not None:
            factor = _positive("target_rate_rps", target_rate_rps) / self.mean_rate_rps
        else:
            assert speedup is not None
            factor = _positive("speedup", speedup)
        arrivals = self.arrival_s / factor
        lo = int(np.searchsorted(arrivals, _non_negative("start_s", start_s), side="left"))
        arrivals = arrivals[lo:] - start_s
        n = len(arrivals)
        if duration_s is not None:
            dur = _positive("duration_s", duration_s)
            n = int(np.searchsorted(arrivals, dur, side="left"))
        return AzureTrace(
            arrivals[:n].copy(),
            self.context_tokens[lo:lo + n].copy(),
            self.generated_tokens[lo:lo + n].copy(),
        )

    @property
    def period_s(self) -> float:
        """The trace looped end to end repeats every ``span + one mean gap`` seconds (so that
        its last and first arrivals do not coincide at the seam)."""
        if len(self) < 2:
            raise ValueError(f"a looped trace needs at least two arrivals, trace has {len(self)}")
        return self.span_s + 1.0 / self.mean_rate_rps

    def window(self, start_s: float, duration_s: float) -> AzureTrace:
        """The arrivals in ``[start_s, start_s + duration_s)`` of the trace looped end to end
        (period :attr:`period_s`; times relative to the trace's first arrival), shifted so that
        ``start_s`` is 0, with their token counts. ``duration_s`` is capped at one period (no
        request twice); a window that runs past the end continues at the trace's start."""
        period = self.period_s
        start = _non_negative("start_s", start_s) % period
        dur = min(_positive("duration_s", duration_s), period)
        rel = self.arrival_s - self.arrival_s[0]
        end = start + dur
        first = (rel >= start) & (rel < end)
        times = [rel[first] - start]
        idx = [np.flatnonzero(first)]
        if end > period:
            wrap = rel < end - period
            times.append(rel[wrap] + period - start)
            idx.append(np.flatnonzero(wrap))
        order = np.concatenate(idx)
        return AzureTrace(np.concatenate(times), self.context_tokens[order].copy(),
                          self.generated_tokens[order].copy())


#: The golden ratio's fractional part: successive laps of seeds over the trace start at phases
#: frac(lap * PHI) of a window, all distinct and spread evenly.
_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def trace_window_start(seed: int, window_s: float, period_s: float) -> float:
    """Where seed ``seed``'s window of ``window_s`` seconds starts in a looped trace of period
    ``period_s`` (all in the same, scaled, seconds), so that seeds get independent arrivals.

    Rule: the trace holds ``m = max(1, floor(period / window))`` disjoint windows; seed ``k``
    takes window ``k mod m`` of lap ``k // m``, lap ``j`` shifted by ``frac(j * PHI)`` of a
    window: ``start = ((k mod m) + frac((k // m) * PHI)) * window  (mod period)``. So seeds
    ``0..m-1`` replay disjoint parts of the trace (seed 0 its beginning, as a run without seeds
    did), and every seed a different one; seeds beyond ``m`` overlap earlier ones at a shifted
    phase. When the window is the whole trace (``m = 1``) seeds are rotations of it -- different
    arrival times, but the same requests: choose a duration of at most ``period / #seeds`` for
    independent seeds.
    """
    win = _positive("window_s", window_s)
    per = _positive("period_s", period_s)
    win = min(win, per)
    m = max(1, math.floor(per / win + 1e-9))
    k = int(seed)
    lap, slot = divmod(k, m)
    phase = (lap * _PHI) % 1.0
    return ((slot + phase) * win) % per


def load_azure_code_trace(path: str | os.PathLike[str] | None = None) -> AzureTrace:
    """Load ``AzureLLMInferenceTrace_code.csv`` (columns TIMESTAMP, ContextTokens, GeneratedTokens).

    Timestamps such as ``2023-11-16 18:17:03.9799600`` are parsed exactly to integer 100 ns
    ticks (all 7 fractional digits kept), made relative to the earliest request, and converted
    to float64 seconds; rows are stably sorted by time. ``path`` defaults to
    :func:`default_azure_trace_path`.

    Data: Azure LLM inference trace 2023, code service, by Microsoft (Azure/AzurePublicDataset;
    Patel et al., "Splitwise", ISCA 2024), licensed CC-BY 4.0 -- keep the attribution.
    """
    p = Path(path) if path is not None else default_azure_trace_path()
    ticks: list[int] = []
    ctx: list[int] = []
    gen: list[int] = []
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
        have = set(reader.fieldnames or ())
        if not need <= have:
            raise ValueError(f"{p}: missing columns {sorted(need - have)}; found {sorted(have)}")
        for line, row in enumerate(reader, start=2):
            where = f"{p}:{line}"
            ticks.append(_parse_ticks(row["TIMESTAMP"], where))
            try:
                c, g = int(row["ContextTokens"]), int(row["GeneratedTokens"])
            except ValueError:
                raise ValueError(
                    f"{where}: bad token counts {row['ContextTokens']!r}, {row['GeneratedTokens']!r}"
                ) from None
            if c < 0 or g < 0:
                raise ValueError(f"{where}: negative token count {c}, {g}")
            ctx.append(c)
            gen.append(g)
    if not ticks:
        raise ValueError(f"{p}: trace has no rows")
    t = np.asarray(ticks, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    arrival = (t - t[0]).astype(np.float64) / _TICKS_PER_S
    return AzureTrace(
        arrival,
        np.asarray(ctx, dtype=np.int64)[order],
        np.asarray(gen, dtype=np.int64)[order],
    )


def default_azure_trace_path() -> Path:
    """Locate ``AzureLLMInferenceTrace_code.csv``.

    The environment variable ``CATO_AZURE_TRACE`` (a CSV file, or a folder holding it) if set;
    otherwise the copy shipped with the package (:data:`AZURE_TRACE_DIR`, the first 30 minutes
    of the code service, with its licence and attribution). FileNotFoundError names what was
    looked at.
    """
    env = os.environ.get(AZURE_TRACE_ENV)
    if env:
        p = Path(env)
        cand = p / AZURE_CODE_TRACE_FILE if p.is_dir() else p
        if cand.is_file():
            return cand
        raise FileNotFoundError(
            f"{AZURE_TRACE_ENV}={env!r} does not name {AZURE_CODE_TRACE_FILE} "
            f"or a folder holding it (looked at {cand})"
        )
    cand = AZURE_TRACE_DIR / AZURE_CODE_TRACE_FILE
    if cand.is_file():
        return cand
    raise FileNotFoundError(
        f"the packaged {AZURE_CODE_TRACE_FILE} is missing (looked at {cand}): reinstall cato, "
        f"or set {AZURE_TRACE_ENV} to the trace's path"
    )


def azure_task_for(context_tokens: int, generated_tokens: int, rng: np.random.Generator) -> str:
    """Map a trace request to a task by its lengths (BENCHMARK_PROTOCOL.md section 2, item 4).

    ``generated_tokens <= 32`` -> ``"completion"``; otherwise ``context_tokens < 1000`` ->
    ``"generation"``; otherwise ``"summarization"`` or ``"translation"`` with probability 1/2
    each (one ``rng.random()`` draw, made only in this last case).
    """
    c, g = int(context_tokens), int(generated_tokens)
    if c < 0:
        raise ValueError(f"context_tokens must be >= 0, got {context_tokens!r}")
    if g < 0:
        raise ValueError(f"generated_tokens must be >= 0, got {generated_tokens!r}")
    if g <= COMPLETION_MAX_OUTPUT_TOKENS:
        return "completion"
    if c < GENERATION_MAX_INPUT_TOKENS:
        return "generation"
    return "summarization" if rng.random() < 0.5 else "translation"
