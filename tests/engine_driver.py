"""A tiny driver for :class:`~cato.replica_model.ReplicaEngine` tests: the simulator's
protocol (advance(now) before an input at now, re-read next_event_s() after every input;
advance(next_event_s()) must return events at that time), and the lifecycle check every
engine test makes."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from hypothesis import strategies as st

from cato.core.coefficients import A100_LLAMA7B, H100_LLAMA7B, ReplicaCoefficients
from cato.replica_model import EngineEvent, ReplicaEngine


@dataclass(frozen=True)
class Op:
    t: float
    kind: str  # "submit" | "cancel" | "probe"
    cid: int = 0
    prompt: int = 0
    out: int = 0
    prio: int = 0


@dataclass
class Trace:
    events: list[EngineEvent] = field(default_factory=list)
    cancel_results: list[bool] = field(default_factory=list)
    steps: int = 0
    preemptions: int = 0


def drive(eng: ReplicaEngine, ops: list[Op]) -> Trace:
    order = {"submit": 0, "cancel": 1, "probe": 2}
    ops = sorted(ops, key=lambda o: (o.t, order[o.kind]))
    tr = Trace()
    i = 0
    while True:
        te = eng.next_event_s()
        if i < len(ops) and (te is None or ops[i].t < te):
            op = ops[i]
            i += 1
            tr.events += eng.advance(op.t)
            if op.kind == "submit":
                eng.submit(op.cid, op.prompt, op.out, op.t, op.prio)
            elif op.kind == "cancel":
                tr.cancel_results.append(eng.cancel(op.cid, op.t))
        elif te is not None:
            evs = eng.advance(te)
            assert evs, f"advance(next_event_s()={te}) returned no event"
            assert all(e.at_s == te for e in evs[:1])
            tr.events += evs
        else:
            break
    tr.steps = eng.steps_executed
    tr.preemptions = eng.num_preemptions
    return tr


def check_lifecycle(events: list[EngineEvent],
                    cancelled: set[int] | frozenset[int] = frozenset()
                    ) -> dict[int, tuple[float, float]]:
    """(first token, finished) per request: each exactly once, in that order, times ordered."""
    seen: dict[int, list[EngineEvent]] = defaultdict(list)
    last = -math.inf
    for e in events:
        assert e.at_s >= last
        last = e.at_s
        seen[e.call_id].append(e)
    out: dict[int, tuple[float, float]] = {}
    for cid, evs in seen.items():
        kinds = [e.kind for e in evs]
        if cid in cancelled:
            assert kinds in ([], ["first_token"], ["first_token", "finished"])
        else:
            assert kinds == ["first_token", "finished"], (cid, kinds)
        if len(evs) == 2:
            out[cid] = (evs[0].at_s, evs[1].at_s)
    return out


@st.composite
def engine_scenarios(draw: st.DrawFn, priorities: bool = False
                     ) -> tuple[ReplicaCoefficients, list[Op]]:
    """A small engine (batch, token and KV limits drawn so that queueing and preemption
    happen) and up to 18 submits, a few cancels and probes; with ``priorities``, each submit
    draws a priority in [-3, 3]."""
    base = draw(st.sampled_from([A100_LLAMA7B, H100_LLAMA7B]))
    mns = draw(st.sampled_from([1, 2, 3, 5, 8, 256]))
    mbt = draw(st.sampled_from([max(mns, 48), 256, 2048]))
    kv = draw(st.sampled_from([704, 1200, 2500, 115_000]))
    c = base.with_overrides(max_num_seqs=mns, max_num_batched_tokens=mbt, kv_capacity_tokens=kv)
    n = draw(st.integers(1, 18))
    ops: list[Op] = []
    t = 0.0
    for cid in range(n):
        t += draw(st.floats(0.0, 0.4, allow_nan=False))
        p = draw(st.integers(1, 600))
        o = draw(st.integers(1, 90))
        ops.append(Op(t, "submit", cid, p, o, draw(st.integers(-3, 3)) if priorities else 0))
    for _ in range(draw(st.integers(0, 3))):
        cid = draw(st.integers(0, n - 1))
        ops.append(Op(ops[cid].t + draw(st.floats(0.0, 1.0)), "cancel", cid))
    for _ in range(draw(st.integers(0, 4))):
        ops.append(Op(draw(st.floats(0.0, t + 2.0)), "probe"))
    return c, ops
