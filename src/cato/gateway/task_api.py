"""``POST /v1/tasks/{task}``, the HTTP side: parse and check the request, run the task's DAG
(:class:`~cato.gateway.executor.PipelineRun`), answer with its result or stream its events.

Request validation errors are 400s (:class:`~cato.edge.errors.ApiError`); what the call path
could not serve comes up as a :class:`~cato.gateway.outcomes.CallOutcome` and is mapped to HTTP
by :mod:`cato.gateway.http_errors`, as an engine failure is (once a stream has begun, as an
error event that ends it).
"""

from __future__ import annotations

from typing import Any, AsyncGenerator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cato.edge import sse
from cato.edge.errors import bad_request, not_found
from cato.gateway.config import Limits
from cato.gateway.executor import Invoke, PipelineRun, Tools
from cato.gateway.http_errors import engine_error, stream_error_event
from cato.gateway.metrics import GatewayMetrics
from cato.gateway.outcomes import CallOutcome
from cato.serving.engine_client import EngineError
from cato.serving.planner import Planner
from cato.serving.requests import feasible_slos, int_field, read_json
from cato.serving.sse import SseResponse
from cato.text import count_tokens


async def run_task(request: Request, task_name: str, *, planner: Planner, limits: Limits,
                   invoke: Invoke, tools: Tools | None, metrics: GatewayMetrics,
                   clock: Callable[[], float]) -> Response:
    arrival = clock()
    if task_name not in planner.pipelines:
        raise not_found(f"unknown task {task_name!r}; known tasks: "
                        f"{', '.join(sorted(planner.pipelines))}", param="task",
                        code="task_not_found")
    body = await read_json(request, limits.max_body_bytes)
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("'input' must be a non-empty string", param="input")
    if count_tokens(text) > limits.max_prompt_tokens:
        raise bad_request(f"input of about {count_tokens(text)} tokens exceeds the limit of "
                          f"{limits.max_prompt_tokens}", param="input",
                          code="context_length_exceeded")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", param="stream")
    max_tokens = int_field(body, "max_tokens", 1, limits.max_tokens)
    planned = planner.pipelines[task_name]
    uf = planned.task.user_facing_node
    slos = feasible_slos(request.headers, planned.plan, limits.max_sla_ms,
                         max_tokens or planned.expected_out[uf])
    run = PipelineRun(planner, task_name, text, max_tokens, slos.sla_s, arrival, stream,
                      bound=slos.bound_s, invoke=invoke, tools=tools, metrics=metrics,
                      clock=clock)
    events = run.events()
    head: list[dict[str, Any]] = []
    try:
        async for ev in events:
            head.append(ev)
            if stream and ev["object"] == "task.chunk":
                break
    except CallOutcome:
        await events.aclose()
        raise
    except EngineError as e:
        await events.aclose()
        metrics.observe_failure(task_name, "timeout" if e.code == "sla_timeout" else "error")
        raise engine_error(e) from None
    if not stream:
        return JSONResponse(head[-1], headers=run.headers())
    return SseResponse(_sse_stream(head, events), headers=run.headers())


async def _sse_stream(head: list[dict[str, Any]],
                      events: AsyncGenerator[dict[str, Any], None]
                      ) -> AsyncGenerator[bytes, None]:
    try:
        for ev in head:
            yield sse.encode(ev)
        async for ev in events:
            yield sse.encode(ev)
    except (CallOutcome, EngineError) as e:
        yield sse.encode(stream_error_event(e))
    finally:
        await events.aclose()   # a client that left stops the remaining steps
    yield sse.DONE
