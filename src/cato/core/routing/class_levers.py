"""SLA-class levers of :class:`~cato.core.routing.cato_prefix.CatoPrefixPolicy` that change what
shares an engine's batch (issue 17; BENCHMARKS section 12.3). Both are off by default.

A *lax* call is one completed by its last token (not TTFT-critical: an E2E-critical node, seconds
of slack); an *urgent* one is TTFT-critical. The replica model's step time grows with the
context tokens of every decode in the batch (``e * K``), so long lax decodes lengthen every step
on their replica, for the urgent calls' prefill and for each other's decode.

* **Lax KV cap** (``lax_kv_tokens = N``, :func:`lax_kv_admits`): a lax call is released to an
  engine only while the lax calls already in flight there hold at most ``N`` KV tokens with it
  (each counted as prompt + expected output: the gateway does not know true lengths); a lax call
  alone on the engine is always released (one call larger than ``N`` is never held for ever).
  Urgent calls are never held by it.
* **Class split** (``ttft_share = s``, :func:`ttft_reserved`): of the visited replicas, the
  first ``round(s * n)`` by replica id (at least 1, at most ``n - 1``) are *reserved* for urgent
  calls: a lax call is placed on a reserved replica only when no unreserved one meets its slack
  (with the policy's ``affinity_slack``), and an urgent call prefers a reserved replica among
  those that meet its slack. Sized by load: when the unreserved replicas fill up, the estimates
  there pass the lax calls' slack and they spill onto the reserved ones.

* **Lax refusal margin** (``lax_refuse_margin = m``): early rejection of lax calls at a
  tighter bar. An E2E call's decode costs ``e * context`` per token whatever the batch (about
  1.3 ms a token for a 3,200-token context on an A100, 125 ms of engine time for a
  96-token output), so a pool serving many of them slows every step; a lax call at its task's
  arrival is placed only on a replica predicted to finish it within ``m * slack`` and refused
  when none is (:meth:`~cato.core.routing.cato_prefix.CatoPrefixPolicy.refuse`). The estimate
  uses the expected output, so ``m < 1`` sheds lax work while the predicted decode is slow
  enough that the longer outputs would miss, keeping steps short for the rest.

Measured on ``ide-mixed`` (BENCHMARKS section 12.3; seeds 0-1, 120 s, 36-44 req/s): the cap
and the split lose at every value tried and the margin is within noise of early rejection alone
(SLO capacity +0.2 %). The lax calls' decode costs the same engine time whichever batch it
joins; what would win is knowing which calls will be long (with true output lengths early
rejection holds 0.93 attainment at 48 req/s).

Bounds: :func:`lax_kv_in_flight` O(calls in flight); :func:`ttft_reserved` O(n log n) over the
visited replicas (at most ``max_candidates``). Both pure functions of the replica states.
"""

from __future__ import annotations

import math
from typing import Sequence

from cato.core.calls import LlmCall
from cato.core.replica import ReplicaState


def check_lax_kv_tokens(value: int | None) -> int | None:
    """``lax_kv_tokens`` is ``None`` (off) or an int >= 1; anything else raises naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"lax_kv_tokens must be an int >= 1 or None, got {value!r}")
    return value


def check_ttft_share(value: float | None) -> float | None:
    """``ttft_share`` is ``None`` (off) or a number in (0, 1); anything else raises naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 < float(value) < 1.0:
        raise ValueError(f"ttft_share must be in (0, 1) or None, got {value!r}")
    return float(value)


def check_lax_refuse_margin(value: float | None) -> float | None:
    """``lax_refuse_margin`` is ``None`` (off) or a number in (0, 1]; anything else raises."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"lax_refuse_margin must be in (0, 1] or None, got {value!r}")
    return float(value)


def kv_tokens(call: LlmCall) -> int:
    """KV tokens ``call`` holds by its last token, as the gateway knows it: prompt + expected
    output."""
    return call.num_prompt_tokens + call.expected_output_tokens


def lax_kv_in_flight(replica: ReplicaState) -> int:
    """KV tokens (:func:`kv_tokens`) of the lax calls in flight on ``replica``."""
    return sum(kv_tokens(f.call) for f in replica.in_flight.values()
               if not f.call.ttft_critical)


def lax_kv_admits(call: LlmCall, replica: ReplicaState, cap: int | None) -> bool:
    """The lax KV cap: False holds lax ``call`` in the gateway (module docstring)."""
    if cap is None or call.ttft_critical:
        return True
    held = lax_kv_in_flight(replica)
    return held == 0 or held + kv_tokens(call) <= cap


def ttft_reserved(replicas: Sequence[ReplicaState], share: float) -> frozenset[str]:
    """Ids of the replicas reserved for urgent calls: the first ``round(share * n)`` of
    ``replicas`` by id, at least 1 and at most ``n - 1`` (none when ``n < 2``)."""
    n = len(replicas)
    if n < 2:
        return frozenset()
    k = min(n - 1, max(1, math.floor(share * n + 0.5)))
    return frozenset(sorted(r.replica_id for r in replicas)[:k])
