"""The task DAG runner: a whole multi-step task (``POST /v1/tasks/{task}``) run live.

The DAG's state is the core's :class:`~cato.core.lifecycle.TaskProgress`, the simulator's too:
every node runs the moment its dependencies are done (an asyncio task per node, so independent
nodes run concurrently). LLM nodes become calls with deadlines from the task's slack plan
(:mod:`cato.serving.planner`, :func:`cato.core.lifecycle.node_call`) and go through the same
scheduler as direct calls; non-LLM nodes are real: ``retrieve`` searches the local code index
(:mod:`cato.workloads.code_index`, the standard library by default), ``validate`` parses and
compiles generated code (:mod:`cato.workloads.validate`, never executed) and reports its verdict,
``http`` POSTs a JSON body to the user's own service (:meth:`Tools.post_json`, the node's
``timeout_s``) and reports its answer. Prompts, retrieval queries and ``http`` bodies are the
declared templates (:mod:`cato.core.templates`) filled from the request's input and the upstream
outputs (:mod:`cato.workloads.task_decl`; the built-in tasks' templates are their default
declarations). Their measured time counts against the slack, because every deadline is absolute
from the task's arrival. A node with a ``when`` condition (generation's repair: ``validate``
failed; a declared fix: the lint service said so) runs only when it holds (the core's repair
rule). The request's TTFT is its user-facing node's first token, its E2E the end of its last
node, judged by :mod:`cato.core.sla`.

An ``http`` step that fails -- a non-2xx answer, a body that is not JSON, a timeout, no
connection -- does not fail the task: its verdict is ``ok: false`` (a ``when: {node: lint,
failed: true}`` step then runs), its ``error`` says why, and ``{lint.json...}`` fields read as
empty. A deployment that wants such a failure to end the task declares no step after it.

The user-facing node's tokens are streamed (``object: "task.chunk"``); the last event (or the
non-streamed body) is a ``task.result`` with the output, per-node outcomes and the ``cato``
summary (TTFT, E2E, SLA met; for a TTFT-critical task also its secondary E2E bound and whether
the whole task, repair included, ended within it).

:class:`PipelineRun` is built from what it needs: the planner, the call path's ``invoke``
(:meth:`cato.gateway.calls.CallRunner.invoke`), the tools, metrics and a clock. The HTTP handler
that parses the request and answers it is :func:`cato.gateway.task_api.run_task`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Callable, Mapping

import httpx

from cato.core.calls import LlmCall
from cato.core.lifecycle import Step, TaskProgress
from cato.core.sla import sla_met
from cato.core.task import NodeKind, SlaKind
from cato.core.templates import render
from cato.gateway.calls import CallStats
from cato.gateway.metrics import GatewayMetrics
from cato.serving.engine_client import EngineEvent
from cato.serving.planner import Planner
from cato.text import count_tokens
from cato.workloads.code_index import CodeIndex
from cato.workloads.task_decl import NodeSpec
from cato.workloads.validate import ValidationResult, validate_python

#: one LLM call through the gateway (:meth:`cato.gateway.calls.CallRunner.invoke`)
Invoke = Callable[[LlmCall, str, dict[str, Any], CallStats], AsyncGenerator[EngineEvent, None]]

MAX_CONTEXT_CHARS = 3000
_DEFAULT_SPEC = NodeSpec()
#: the most of an ``http`` step's answer kept (bytes): a larger answer is an error
MAX_HTTP_ANSWER_BYTES = 1 << 20


class Tools:
    """The real non-LLM steps: code retrieval and code validation."""

    def __init__(self, index: CodeIndex | None) -> None:
        self.index = index

    @staticmethod
    def open(root: str | None = None) -> Tools:
        return Tools(CodeIndex.open(root))

    def retrieve(self, query: str, k: int = 3) -> str:
        if self.index is None:
            return ""
        parts = [f"# {s.location}\n{s.text}" for s in self.index.search(query, k)]
        return "\n\n".join(parts)[:MAX_CONTEXT_CHARS]

    async def timed_retrieve(self, query: str) -> tuple[str, float]:
        t0 = time.perf_counter()
        out = await asyncio.to_thread(self.retrieve, query)
        return out, time.perf_counter() - t0

    @staticmethod
    async def post_json(url: str, body: Mapping[str, Any], timeout_s: float
                        ) -> tuple[int | None, str, Any, str | None]:
        """POST ``body`` as JSON to the user's service: ``(status, text, answer, error)``;
        ``answer`` is the parsed JSON (None when the body is not JSON); ``error`` None exactly
        when the service answered 2xx with JSON. Never raises for the service's failures."""
        try:
            async with httpx.AsyncClient(timeout=timeout_s) as client:
                r = await client.post(url, json=dict(body))
        except httpx.TimeoutException:
            return None, "", None, f"no answer from {url} within {timeout_s:g} s"
        except httpx.HTTPError as e:
            return None, "", None, f"POST {url} failed: {type(e).__name__}: {e}"
        text = r.text if len(r.content) <= MAX_HTTP_ANSWER_BYTES else ""
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = None
        if len(r.content) > MAX_HTTP_ANSWER_BYTES:
            return r.status_code, "", None, f"answer over {MAX_HTTP_ANSWER_BYTES} bytes"
        if not 200 <= r.status_code < 300:
            return r.status_code, text, answer, f"{url} answered HTTP {r.status_code}"
        if answer is None:
            return r.status_code, text, None, f"{url} answered a body that is not JSON"
        return r.status_code, text, answer, None

    async def timed_validate(self, answer: str, prefix: str = "") -> tuple[ValidationResult, float]:
        t0 = time.perf_counter()
        res = validate_python(answer)
        if not res.ok and prefix:
            joined = validate_python(prefix + answer)
            res = joined if joined.ok else res
        return res, time.perf_counter() - t0


@dataclass
class _NodeResult:
    kind: str
    seconds: float
    output: str = ""
    ok: bool = True
    skipped: bool = False
    replica: str | None = None
    error: str | None = None
    status: int | None = None
    answer: Any = None

    def view(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "ms": round(self.seconds * 1000, 3)}
        if self.skipped:
            d["skipped"] = True
        if self.replica:
            d["replica"] = self.replica
        if self.kind in ("validate", "http") and not self.skipped:
            d["ok"] = self.ok
            d["error"] = self.error
        if self.kind == "http" and not self.skipped:
            d["status"] = self.status
        return d

    def fields(self) -> dict[str, Any]:
        """What templates read of this node (:data:`cato.core.templates.OUTPUTS`)."""
        if self.kind == "validate":
            return {"ok": self.ok, "error": self.error, "code": self.output,
                    "text": self.output}
        if self.kind == "http":
            return {"ok": self.ok, "status": self.status, "text": self.output,
                    "json": self.answer}
        return {"text": self.output}


class PipelineRun:
    """One task request's DAG, run live (module docstring). Its state is the core's
    :class:`~cato.core.lifecycle.TaskProgress`; every node it releases runs at once as an
    asyncio task, so independent nodes run concurrently (the built-in tasks are chains: one
    node at a time). A node's task, when it ends, reports the node done (a validation with its
    verdict) and starts what that released, so a successor never waits for the client."""

    def __init__(self, planner: Planner, task: str, text: str, max_tokens: int | None,
                 sla_s: float | None, arrival: float, stream: bool = False, *,
                 bound: float | None = None, invoke: Invoke, tools: Tools | None,
                 metrics: GatewayMetrics, clock: Callable[[], float]) -> None:
        self.planner = planner
        self.invoke = invoke
        self.tools = tools
        self.metrics = metrics
        self.clock = clock
        self.stream = stream
        self.planned = planner.pipelines[task]
        spec = planner.specs.get(task)   # none: a task planned by hand; plain {input}
        self.node_specs: Mapping[str, NodeSpec] = spec.nodes if spec is not None else {}
        self.text = text
        self.max_tokens = max_tokens
        self.sla = sla_s
        self.sla_s = self.planned.task.sla_s if sla_s is None else sla_s
        self.bound = bound   # the request's secondary bound override (None: the task's)
        self.bound_s = self.planned.plan.effective_bound_s(self.sla_s, bound)
        self.arrival = arrival
        self.task_id = planner.next_call_id()
        self.id = "task-" + uuid.uuid4().hex[:24]
        self.progress = TaskProgress(self.planned.task, arrival)
        self.results: dict[str, _NodeResult] = {}
        self.replica = ""
        self._running: set[asyncio.Task[None]] = set()
        # what the nodes send the client's side: chunks, the result, or the error that ends it
        self._out: asyncio.Queue[dict[str, Any] | Exception] = asyncio.Queue()

    @property
    def first_token_s(self) -> float | None:
        """When the user-facing node's first token came (None: not yet)."""
        return self.progress.first_token_s

    def headers(self) -> dict[str, str]:
        h = {"x-cato-task": self.planned.task.name}
        if self.replica:
            h["x-cato-replica"] = self.replica
        ttft = self.progress.ttft_s
        if ttft is not None:
            h["x-cato-ttft-ms"] = f"{ttft * 1000:.3f}"
            if self.planned.task.sla_kind is SlaKind.TTFT:
                met = sla_met(SlaKind.TTFT, self.sla_s, ttft_s=ttft, e2e_s=None)
                h["x-cato-sla-met"] = "true" if met else "false"
        return h

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """The user-facing node's ``task.chunk`` events, then the ``task.result``. Raises what
        a node raised (a :class:`~cato.gateway.outcomes.CallOutcome`, an
        :class:`~cato.serving.engine_client.EngineError`); ending or closing it cancels the
        nodes still running."""
        try:
            self._advance(self.progress.start(self.clock()))
            while True:
                ev = await self._out.get()
                if isinstance(ev, Exception):
                    raise ev
                yield ev
                if ev["object"] == "task.result":
                    return
        finally:
            running = [t for t in self._running if not t.done()]
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _advance(self, step: Step) -> None:
        """Record the nodes ``step`` skipped, start those it released, and send the result
        once the task is complete."""
        task = self.planned.task
        for name in step.skipped:
            self.results[name] = _NodeResult(task.node(name).kind.value, 0.0, skipped=True)
        for name in step.ready:
            t = asyncio.create_task(self._node(name), name=f"{self.id}:{name}")
            self._running.add(t)
            t.add_done_callback(self._running.discard)
        if step.complete:
            self._out.put_nowait(self._result())

    async def _node(self, name: str) -> None:
        try:
            ok = await self._run_node(name)
            res = self.results.get(name)
            answer = res.answer if res is not None else None
            self._advance(self.progress.node_done(name, self.clock(), ok=ok, answer=answer))
        except Exception as e:   # the client's side raises it and cancels the other nodes
            self._out.put_nowait(e)

    async def _run_node(self, name: str) -> bool | None:
        """Run node ``name``; its verdict if it judges (a validation, an ``http`` step), else
        None."""
        task = self.planned.task
        node = task.node(name)
        spec = self._spec(name)
        if node.is_llm:
            await self._llm(name, name == task.user_facing_node)
            return None
        t0 = self.clock()
        if node.kind is NodeKind.RETRIEVE:
            out, _ = await self._tools().timed_retrieve(self._render(spec.query))
            res = _NodeResult("retrieve", self.clock() - t0, out)
        elif node.kind is NodeKind.HTTP:
            assert spec.url is not None
            body: dict[str, Any] = ({k: self._render(v) for k, v in spec.body.items()}
                                    if spec.body is not None else self._default_body(name))
            status, text, answer, err = await Tools.post_json(spec.url, body, spec.timeout_s)
            res = _NodeResult("http", self.clock() - t0, text, err is None, error=err,
                              status=status, answer=answer)
        else:
            dep = self.results[node.deps[0]].output
            v, _ = await self._tools().timed_validate(dep, prefix=self.text)
            res = _NodeResult("validate", self.clock() - t0, v.code, v.ok, error=v.error)
        self.results[name] = res
        self.metrics.node_seconds.labels(task.name, name).observe(res.seconds)
        if self.planner.on_step is not None:
            self.planner.on_step(task.name, name, res.seconds)
        return None if node.kind is NodeKind.RETRIEVE else res.ok

    def _tools(self) -> Tools:
        return self.tools or Tools(None)

    def _spec(self, node: str) -> NodeSpec:
        return self.node_specs.get(node) or _DEFAULT_SPEC

    def _render(self, template: str) -> str:
        outputs = {k: r.fields() for k, r in self.results.items() if not r.skipped}
        return render(template, self.text, outputs)

    def _default_body(self, node: str) -> dict[str, Any]:
        """An ``http`` step's body when it declares none: the input and each direct
        upstream step's text."""
        deps = self.planned.task.node(node).deps
        return {"input": self.text,
                "upstream": {d: self.results[d].output for d in deps
                             if not self.results[d].skipped}}

    def _prompt(self, node: str) -> str:
        return self._render(self._spec(node).prompt)

    async def _llm(self, node: str, user_facing: bool) -> None:
        prompt = self._prompt(node)
        now = self.clock()
        cap = self._spec(node).max_tokens
        call = self.planner.make_call(self.planned, node, arrival_s=self.arrival, now_s=now,
                                      prompt_tokens=count_tokens(prompt),
                                      max_tokens=(self.max_tokens or cap) if user_facing else cap,
                                      sla_s=self.sla, task_id=self.task_id,
                                      e2e_bound_s=self.bound, prompt_text=prompt)
        params = self.planned.task.node(node).params
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": call.expected_output_tokens,
                                "temperature": params.get("temperature", 0.0)}
        if "top_p" in params:
            body["top_p"] = params["top_p"]
        # a step whose tokens are not streamed to the client can be retried at any point
        stats = CallStats(replayable=not (user_facing and self.stream))
        async with contextlib.aclosing(self.invoke(call, "/v1/completions", body, stats)) as evs:
            async for ev in evs:
                t = ev.text()
                if user_facing and t:
                    if self.progress.first_token_s is None and stats.first_token_s is not None:
                        self.progress.first_token(node, stats.first_token_s)
                        self.replica = stats.replica
                    self._out.put_nowait({"id": self.id, "object": "task.chunk", "node": node,
                                          "choices": [{"index": 0, "text": t}]})
        self.results[node] = _NodeResult("llm", self.clock() - now, "".join(stats.text),
                                         replica=stats.replica)

    def _result(self) -> dict[str, Any]:
        task = self.planned.task
        p = self.progress
        ttft, e2e = p.ttft_s, p.e2e_s
        assert e2e is not None   # complete, and a gateway run fails by raising
        met = p.met(self.sla_s)
        met2 = p.met_bound(self.bound_s)
        bound_ms = None if self.bound_s is None else round(self.bound_s * 1000, 3)
        self.metrics.observe_request(task.name, ttft_s=ttft, e2e_s=e2e, met=met)
        uf = task.user_facing_node
        last_llm = [n.name for n in task.llm_nodes if not self.results[n.name].skipped][-1]
        return {
            "id": self.id, "object": "task.result", "task": task.name,
            "output": self.results[last_llm].output,
            "user_facing_output": self.results[uf].output,
            "nodes": {n.name: self.results[n.name].view() for n in task.nodes},
            "cato": {"task": task.name, "replica": self.replica, "sla_kind": task.sla_kind.value,
                     "sla_ms": round(self.sla_s * 1000, 3),
                     "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
                     "e2e_ms": round(e2e * 1000, 3), "sla_met": met,
                     "e2e_bound_ms": bound_ms, "secondary_met": met2},
        }
