"""A declared task with an ``http`` step, live (issue 16): ``cato serve`` over an emulated engine
runs generate -> lint -> fix through ``/v1/tasks/lint-fix``, where the lint step is a real HTTP
service on loopback (a Starlette app under uvicorn in a thread: the user's own lint tool).
The lint service is called with the generated code, and the fix step runs only when it says
the code is not ok. The declared name also works as ``model`` on ``/v1/completions``, in key
permissions, and a per-request SLA below the task's baselines is a 400 naming its header."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from cato.edge.procs import free_port
from conftest import RunningGateway, launch_gateway, start_engines  # type: ignore[import-not-found]

KEY = "sk-declared-" + "x" * 24


class LintService:
    """The user's lint tool: records each body; answers ``ok: false`` when the request's input
    asked for it (the word BROKEN), so the test controls the verdict."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.port = free_port()

        async def lint(request: Request) -> Response:
            body = await request.json()
            self.calls.append(body)
            if "CRASH" in body.get("input", ""):
                return PlainTextResponse("lint crashed", status_code=500)
            ok = "BROKEN" not in body.get("input", "")
            return JSONResponse({"ok": ok, "errors": [] if ok else ["E999 made-up finding"]})

        app = Starlette(routes=[Route("/lint", lint, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LintService:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the lint service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, LintService]]:
    tmp = tmp_path_factory.mktemp("declared")
    with LintService() as lint:
        engines = start_engines(1, tmp)
        config = {
            "models": [{"name": "m", "coefficients": "a100-llama7b", "accepts_priority": True,
                        "replicas": [{"url": e.url} for e in engines]}],
            "profile_probes": 1,
            "default_task": "lint-fix",
            "auth": {"api_keys": [{"name": "ci", "key": KEY, "tasks": ["lint-fix"]}]},
            "tasks": [{
                "name": "lint-fix",
                "description": "generate, lint with the team's service, fix when it complains",
                "sla": {"kind": "ttft", "seconds": 0.5, "e2e_bound_s": 20.0},
                "nodes": [
                    {"name": "generate", "kind": "llm", "user_facing": True, "max_tokens": 24,
                     "prompt": "Write this function:\n{input}",
                     "output_tokens": {"median": 16, "sigma": 0.0, "min": 1, "max": 24}},
                    {"name": "lint", "kind": "http", "after": ["generate"],
                     "url": f"http://127.0.0.1:{lint.port}/lint", "timeout_s": 5.0,
                     "body": {"code": "{generate.text}", "input": "{input}"},
                     "cost": {"median_ms": 5}},
                    {"name": "fix", "kind": "llm", "after": ["lint"],
                     "when": "lint.json.ok == false", "max_tokens": 16,
                     "prompt": "Fix ({lint.json.errors}):\n{generate.text}"},
                ],
            }],
        }
        gw = launch_gateway(tmp, config, engines)
        try:
            yield gw, lint
        finally:
            gw.close()


def _task(gw: RunningGateway, text: str, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + "/v1/tasks/lint-fix", json={"input": text},
                      headers={"authorization": f"Bearer {KEY}", **headers}, timeout=60)


@pytest.mark.parametrize("text,fixes", [("def add(a, b):", False),
                                         ("def add(a, b):  # BROKEN", True)])
def test_http_step_gets_the_upstream_output_and_gates_the_fix(
        live: tuple[RunningGateway, LintService], text: str, fixes: bool) -> None:
    gw, lint = live
    before = len(lint.calls)
    r = _task(gw, text)
    assert r.status_code == 200, r.text
    res = r.json()
    assert len(lint.calls) == before + 1
    call = lint.calls[-1]
    assert call["input"] == text
    assert call["code"] == res["user_facing_output"] and call["code"]   # generate's output
    nodes = res["nodes"]
    assert nodes["lint"]["kind"] == "http" and nodes["lint"]["ok"] is True
    assert nodes["lint"]["status"] == 200
    assert nodes["fix"].get("skipped", False) is not fixes
    assert ("replica" in nodes["fix"]) is fixes
    assert res["cato"]["task"] == "lint-fix" and res["cato"]["e2e_bound_ms"] == 20000.0


def test_a_failing_service_fails_the_step_not_the_task(
        live: tuple[RunningGateway, LintService]) -> None:
    gw, _ = live
    r = _task(gw, "def f():  # CRASH")
    assert r.status_code == 200, r.text
    nodes = r.json()["nodes"]
    assert nodes["lint"]["ok"] is False and nodes["lint"]["status"] == 500
    assert "HTTP 500" in nodes["lint"]["error"]
    assert not nodes["fix"].get("skipped", False)   # no answer to say the code is fine: fix


def test_declared_name_is_a_model_and_is_permitted_to_its_key(
        live: tuple[RunningGateway, LintService]) -> None:
    gw, _ = live
    auth = {"authorization": f"Bearer {KEY}"}
    r = httpx.post(gw.url + "/v1/completions", headers=auth, timeout=60,
                   json={"model": "lint-fix", "prompt": "def f():", "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert r.headers["x-cato-task"] == "lint-fix"
    r = httpx.post(gw.url + "/v1/completions", headers=auth, timeout=60,
                   json={"model": "generation", "prompt": "def f():", "max_tokens": 4})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_an_infeasible_per_request_slo_is_a_400_naming_the_header(
        live: tuple[RunningGateway, LintService]) -> None:
    gw, lint = live
    before = len(lint.calls)
    r = _task(gw, "def f():", **{"x-slo-ttft-ms": "0.5"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "x-slo-ttft-ms" and err["code"] == "slo_infeasible"
    assert "'lint-fix'" in err["message"] and "at least" in err["message"]
    assert len(lint.calls) == before          # refused before any step ran
    r = _task(gw, "def f():", **{"x-slo-ttft-ms": "5000", "x-slo-tpot-ms": "200"})
    assert r.status_code == 200, r.text
    assert r.json()["cato"]["sla_ms"] == 5000.0
