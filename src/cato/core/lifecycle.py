"""One task request's lifecycle: the calls its LLM nodes become and the progress of its DAG.

Every driver of the core runs a task request through this module -- the simulator
(:mod:`cato.sim.simulator`), the live gateway (:mod:`cato.gateway.executor` for ``/v1/tasks``,
:mod:`cato.serving.planner` for direct calls) and the Ray Serve ranker
(:mod:`cato.rayserve.ranking`) -- and they differ only in where time, token counts and node
outcomes come from (an event heap and pre-drawn values, or a clock and real engines and tools).

**Calls.** :func:`node_call` is the one place an :class:`~cato.core.calls.LlmCall`'s deadline,
``ttft_critical`` and expected output are decided:

* ``deadline_s`` = the task's arrival + the node's deadline offset from its slack plan
  (:meth:`~cato.core.slack.TaskPlan.deadline_offsets`): at the profiled SLA and secondary bound
  (precomputed in :class:`PlannedTask`), or rescaled for a request's SLA / bound override;
* ``ttft_critical`` iff the task is TTFT-critical and the node is its user-facing node (its
  deadline then applies to the first token; every other call's to its last token);
* ``expected_output_tokens`` = the request's ``max_tokens`` when it gives one, else the node's
  mean output length ``max(1, round(mean))`` (:func:`expected_output_tokens`).

:func:`load_call` is the other builder: a call known only as load on a replica (no task plan,
no deadline), which the estimator reads for its lengths and times.

**Progress.** :class:`TaskProgress` is the DAG execution state of one request. Algorithm: every
node keeps the count of its unfinished dependencies; :meth:`~TaskProgress.start` releases the
roots, :meth:`~TaskProgress.node_done` decrements the counts of the finished node's successors
and releases those that reach zero. A released node either *runs* (it is returned in
:attr:`Step.ready`: the driver runs it now, concurrently with whatever else runs) or is
*skipped*: it finishes at once, at the same instant, and releases its own successors in turn.
The walk is depth-first, each node's successors in the task's node order, so a driver that
runs ``Step.ready`` in order starts nodes in the order of a recursive walk that starts every
node the moment it is released. A released node is skipped when

* the task has *failed* (:meth:`~TaskProgress.fail`: a call the dispatcher rejected): a failed
  task runs no further node -- and a driver must not start a node it was handed before the
  failure either, but report it done at once;
* it was decided up front not to run (the ``skipped`` set: the simulator draws each
  conditional node's branch, ``run_probability < 1``, with the request); or
* it has a ``when`` condition (:mod:`cato.core.conditions`) and the upstream node it names
  reported what makes it false: a verdict (``node_done(..., ok=True/False)``: ``failed: true``
  holds when ``ok`` was False) or a JSON answer (``node_done(..., answer=...)``, an ``http``
  step's body). This is the repair rule: generation's repair runs only when its validation
  failed; a declared fix step only when the lint service said so. When the named node
  reported nothing (a simulator's nodes report no outputs), only the up-front decision
  applies; or
* it is *conditional* (``run_probability < 1``) without a ``when``, and the judging steps it
  depends on said it is not needed: every dependency that reported a verdict passed.
  Dependencies that report no verdict (``ok=None``) do not count; with none that does, only
  the up-front decision applies.

Invariants: each node is released exactly once and finishes exactly once (a second
``node_done`` for it, or one for a node not released, raises :class:`ValueError`); the task is
complete when every node has finished, and exactly one :class:`Step` -- the one that finished the
last node, skipped or not -- says ``complete`` (its ``ready`` is then empty). O(nodes + edges)
over a request's life.

The request's user-facing first token (:meth:`~TaskProgress.first_token`, the first one only) and
its last time (the latest node finish) give its TTFT and E2E, judged by :mod:`cato.core.sla`: a
request that failed or did not complete has no E2E and met nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Mapping, NamedTuple

from cato.core.calls import LlmCall
from cato.core.sla import bound_met, sla_met
from cato.core.slack import TaskPlan
from cato.core.task import Node, SlaKind, TaskType


# ---- calls -----------------------------------------------------------------------------------
def expected_output_tokens(node: Node) -> int:
    """What a gateway expects an LLM node to generate when the request does not say: the mean
    of its output-length distribution, rounded, at least 1."""
    if node.output_tokens is None:
        raise ValueError(f"node {node.name!r} is not an LLM node with an output length")
    return max(1, round(node.output_tokens.mean()))


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """A task with its slack plan, and what every call of it needs, computed once (:meth:`of`):
    the deadline offsets at the profiled SLA and bound, each LLM node's expected output and
    model, and the node whose first token is TTFT-critical (None for an E2E-critical task)."""

    task: TaskType
    plan: TaskPlan
    offsets: Mapping[str, float]
    expected_out: Mapping[str, int]
    models: Mapping[str, str]
    ttft_node: str | None

    @staticmethod
    def of(task: TaskType, plan: TaskPlan) -> PlannedTask:
        return PlannedTask(task, plan, plan.deadline_offsets(),
                           {n.name: expected_output_tokens(n) for n in task.llm_nodes
                            if n.output_tokens is not None},
                           {n.name: n.model for n in task.llm_nodes if n.model is not None},
                           task.user_facing_node if task.sla_kind is SlaKind.TTFT else None)


def node_call(planned: PlannedTask, node: str, *, call_id: int, task_id: int, arrival_s: float,
              now_s: float, prompt_tokens: int, max_tokens: int | None = None,
              true_output_tokens: int | None = None, sla_s: float | None = None,
              e2e_bound_s: float | None = None, tenant: str = "",
              prefix_hashes: tuple[int, ...] | None = None) -> LlmCall:
    """The :class:`LlmCall` of LLM node ``node`` of a request that arrived at ``arrival_s`` and
    whose node became ready at ``now_s`` (module docstring: deadline, ``ttft_critical``,
    expected output). ``sla_s`` / ``e2e_bound_s``: the request's SLA and secondary-bound
    overrides (None: the task's); ``max_tokens``: the request's output cap (None or 0: the
    node's mean); ``true_output_tokens``: what it will generate, when the driver knows (the
    simulator; read only by clairvoyant policies); ``tenant``: whom it is billed to for fair
    shares (:mod:`cato.core.fairness`); ``prefix_hashes``: its prompt's KV block hashes, when
    the driver knows them (:attr:`LlmCall.prefix_hashes`). The call's ``seq`` is its
    ``call_id``."""
    model = planned.models.get(node)
    if model is None:
        raise ValueError(f"task {planned.task.name!r}: node {node!r} is not an LLM node")
    offsets = planned.offsets if sla_s is None and e2e_bound_s is None \
        else planned.plan.deadline_offsets(sla_s, e2e_bound_s)
    return LlmCall(
        call_id=call_id, task_id=task_id, task=planned.task.name, node=node, model=model,
        num_prompt_tokens=int(prompt_tokens),
        expected_output_tokens=int(max_tokens) if max_tokens else planned.expected_out[node],
        arrival_s=arrival_s, ready_s=now_s, deadline_s=arrival_s + offsets[node],
        ttft_critical=node == planned.ttft_node,
        true_output_tokens=None if true_output_tokens is None else int(true_output_tokens),
        seq=call_id, tenant=tenant,
        prefix_hashes=None if prefix_hashes is None else tuple(prefix_hashes),
    )


def load_call(call_id: int, *, task: str, model: str, prompt_tokens: int,
              expected_output_tokens: int, started_s: float) -> LlmCall:
    """A call known only as load on a replica (a replica's report, a call another router
    sent): its lengths and start time, what the estimator reads of a call in flight. It has no
    deadline (``inf``: never urgent), is not TTFT-critical and names node ``"llm"``."""
    return LlmCall(call_id=call_id, task_id=call_id, task=task, node="llm", model=model,
                   num_prompt_tokens=prompt_tokens, expected_output_tokens=expected_output_tokens,
                   arrival_s=started_s, ready_s=started_s, deadline_s=math.inf,
                   ttft_critical=False, seq=call_id)


# ---- progress --------------------------------------------------------------------------------
class Step(NamedTuple):
    """What one :meth:`TaskProgress.start` / :meth:`TaskProgress.node_done` released: the nodes
    to run now, in order; those that finished at once without running; and whether this step
    finished the task's last node."""

    ready: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    complete: bool = False


class TaskProgress:
    """The DAG execution state of one task request (module docstring: algorithm, skip rules,
    invariants). ``skipped``: the nodes decided up front not to run."""

    __slots__ = ("task", "arrival_s", "_succ", "_waiting", "_remaining", "_started", "_done",
                 "_skip", "_verdicts", "_failed", "_first_token_s", "_last_s", "_uf",
                 "_answers", "_when")

    def __init__(self, task: TaskType, arrival_s: float, *, skipped: Collection[str] = ()) -> None:
        self.task = task
        self.arrival_s = arrival_s
        # _waiting[n]: n's unfinished dependencies (0: released, once started)
        self._succ: dict[str, list[str]] = {n.name: [] for n in task.nodes}
        self._waiting: dict[str, int] = {}
        for n in task.nodes:
            self._waiting[n.name] = len(n.deps)
            for d in n.deps:
                self._succ[d].append(n.name)
        self._remaining = len(task.nodes)
        self._started = False
        self._done: set[str] = set()
        self._skip = skipped if isinstance(skipped, frozenset) else frozenset(skipped)
        self._verdicts: dict[str, bool] = {}
        self._answers: dict[str, object] = {}
        self._when = {n.name: n.when for n in task.nodes if n.when is not None}
        self._failed = False
        self._first_token_s: float | None = None
        self._last_s: float | None = None
        self._uf = task.user_facing_node

    # ---- the DAG ---------------------------------------------------------------------------
    def start(self, now_s: float) -> Step:
        """Release the task's roots at ``now_s`` (once: at the request's arrival, or when its
        driver begins it)."""
        if self._started:
            raise ValueError(f"task {self.task.name!r}: started twice")
        self._started = True
        ready: list[str] = []
        skipped: list[str] = []
        complete = False
        for n in self.task.nodes:
            if not n.deps:
                complete = self._release(n.name, now_s, ready, skipped) or complete
        return Step(tuple(ready), tuple(skipped), complete)

    def node_done(self, name: str, now_s: float, *, ok: bool | None = None,
                  answer: object = None) -> Step:
        """Node ``name`` finished at ``now_s`` (ran, failed, or was not started because the task
        had failed). ``ok``: its verdict, for a judging step (a validation: passed or not; an
        ``http`` step: its service answered without error); None for a step that judges
        nothing. ``answer``: its JSON answer (an ``http`` step), read by ``when`` conditions.
        Returns the nodes this released."""
        if not self._started or self._waiting.get(name) != 0:
            raise ValueError(f"task {self.task.name!r}: node {name!r} finished but was never "
                             f"ready")
        if ok is not None:
            self._verdicts[name] = ok
        if answer is not None:
            self._answers[name] = answer
        ready: list[str] = []
        skipped: list[str] = []
        complete = self._finish(name, now_s, ready, skipped)
        return Step(tuple(ready), tuple(skipped), complete)

    def fail(self) -> None:
        """The task failed (a call of it was rejected): it runs no further node."""
        self._failed = True

    def first_token(self, node: str, at_s: float) -> None:
        """A first token of ``node`` came at ``at_s``; the first of the user-facing node is the
        request's."""
        if node == self._uf and self._first_token_s is None:
            self._first_token_s = at_s

    def _skips(self, name: str) -> bool:
        if self._failed or name in self._skip:
            return True
        when = self._when.get(name)
        if when is not None:
            return when.holds(self._verdicts.get(when.node), self._answers.get(when.node)) is False
        if not self._verdicts:
            return False
        node = self.task.node(name)
        if node.run_probability >= 1.0:
            return False
        verdicts = [self._verdicts[d] for d in node.deps if d in self._verdicts]
        return bool(verdicts) and all(verdicts)

    def _release(self, name: str, now_s: float, ready: list[str], skipped: list[str]) -> bool:
        if not self._skips(name):
            ready.append(name)
            return False
        skipped.append(name)
        return self._finish(name, now_s, ready, skipped)

    def _finish(self, name: str, now_s: float, ready: list[str], skipped: list[str]) -> bool:
        if name in self._done:
            raise ValueError(f"task {self.task.name!r}: node {name!r} finished twice")
        self._done.add(name)
        self._remaining -= 1
        complete = self._remaining == 0    # exactly one finish sees this
        if self._last_s is None or now_s > self._last_s:
            self._last_s = now_s
        waiting = self._waiting
        for s in self._succ[name]:
            waiting[s] -= 1
            if waiting[s] == 0:
                complete = self._release(s, now_s, ready, skipped) or complete
        return complete

    # ---- the outcome -----------------------------------------------------------------------
    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def complete(self) -> bool:
        """Every node has finished (ran or skipped)."""
        return self._remaining == 0

    @property
    def succeeded(self) -> bool:
        """Complete, and not failed."""
        return self._remaining == 0 and not self._failed

    def is_done(self, name: str) -> bool:
        return name in self._done

    @property
    def first_token_s(self) -> float | None:
        """When the user-facing node's first token came (None: not yet, or never)."""
        return self._first_token_s

    @property
    def last_s(self) -> float | None:
        """The latest time a node finished (None: none has)."""
        return self._last_s

    @property
    def ttft_s(self) -> float | None:
        """The user-facing first token's latency from arrival (None: none came)."""
        return None if self._first_token_s is None else self._first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        """The request's latency from arrival to its last node's finish; None unless it
        succeeded."""
        if not self.succeeded or self._last_s is None:
            return None
        return self._last_s - self.arrival_s

    def met(self, sla_s: float) -> bool:
        """Whether the request met an SLA of ``sla_s`` of its task's kind
        (:func:`cato.core.sla.sla_met`); a request that did not succeed met nothing."""
        return self.succeeded and sla_met(self.task.sla_kind, sla_s, ttft_s=self.ttft_s,
                                          e2e_s=self.e2e_s)

    def met_bound(self, bound_s: float | None) -> bool | None:
        """Whether it ended within the secondary bound ``bound_s`` (None: no bound;
        :func:`cato.core.sla.bound_met`)."""
        return bound_met(bound_s, self.e2e_s)
