"""What the replica model emits: token milestones (:class:`EngineEvent`) and, for debugging, one
:class:`StepRecord` per executed unit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """A token milestone of one request: its first token, or its last token (finished).

    ``cached_tokens``: on a first token, the prompt tokens its prefill took from the prefix
    cache (0 without caching or a prefix identity; 0 on ``finished``)."""

    call_id: int
    kind: Literal["first_token", "finished"]
    at_s: float
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class StepRecord:
    """Debug record of one executed unit (a single step, or ``num_steps`` identical pure-decode
    steps of a fast-forward segment), passed to ``ReplicaEngine.step_hook`` when it is set.

    ``num_tokens``/``num_seqs`` are per step; ``kv_used_tokens`` is the peak (after the unit's
    allocations, before the frees of requests finishing at its end); ``num_running`` counts the
    running requests after the unit's admissions and preemptions.
    """

    start_s: float
    end_s: float
    num_steps: int
    num_tokens: int
    num_seqs: int
    num_decodes: int
    num_prefill_chunks: int
    kv_used_tokens: int
    num_running: int
    num_preempted: int
