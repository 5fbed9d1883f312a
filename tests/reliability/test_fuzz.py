"""Property-based fuzz of the live HTTP API: a real gateway subprocess over two fast emulated
engines on loopback, attacked three ways.

* Schemathesis reads the gateway's own ``GET /openapi.json`` and sends schema-valid and
  schema-invalid requests to every operation: no 5xx, only documented statuses and content
  types, bodies that match the schema, OpenAI-shaped 4xx errors, streams read to ``[DONE]``, and
  every schema-invalid request refused (the schema mirrors the parser exactly).
* Hypothesis at the raw HTTP level (httpx): random bytes, odd content types, deep nesting, huge
  numbers, NaN/Infinity literals, unicode and control characters, a wrong type in every field,
  oversized bodies, bad SLA and task headers. Each must get the expected 4xx with an OpenAI
  body naming the field, never a 5xx, never a hang (every request has a 30 s timeout).
* A table of concrete bad requests, each with its status and the field its error must name.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response as StResponse
from schemathesis.schemas import BaseSchema

from cato.gateway.openapi import NON_BLANK_PATTERN, PY_WHITESPACE_CLASS, openapi_schema
from cato.serving.requests import MAX_JSON_DEPTH
from conftest import (SMALL_INDEX_ROOT, RunningGateway,  # type: ignore[import-not-found]
                      launch_gateway, start_engines)

pytestmark = pytest.mark.reliability

MAX_TOKENS = 64            # limits.max_tokens: valid fuzz cases finish fast
MAX_BODY = 16384           # limits.max_body_bytes
MAX_PROMPT_TOKENS = 2048   # limits.max_prompt_tokens (reachable under MAX_BODY)
MAX_SLA_MS = 600_000.0     # limits.max_sla_ms
TIMEOUT_S = 30.0           # per request: a hang fails the test
TASKS = ["completion", "generation", "summarization", "translation"]
TTFT_TASKS = {"completion", "generation"}
SLO_TTFT, SLO_E2E, TASK_HEADER = "x-slo-ttft-ms", "x-slo-e2e-ms", "x-cato-task"
SLO_TPOT = "x-slo-tpot-ms"
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """Two emulated engines 20x faster than an A100 behind a real gateway with small limits."""
    tmp = tmp_path_factory.mktemp("fuzz")
    engines = start_engines(2, tmp, time_dilation=0.05)
    config = {
        "models": [{"name": "m", "replicas": [{"url": e.url} for e in engines]}],
        "profile_at_startup": False,
        "code_index_root": SMALL_INDEX_ROOT,
        "limits": {"max_tokens": MAX_TOKENS, "max_body_bytes": MAX_BODY,
                   "max_prompt_tokens": MAX_PROMPT_TOKENS, "max_sla_ms": MAX_SLA_MS},
    }
    gw = launch_gateway(tmp, config, engines)
    yield gw
    gw.close()


@pytest.fixture(scope="module")
def http(fuzz_gateway: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_gateway.url, timeout=TIMEOUT_S) as c:
        yield c


def assert_openai_error(r: httpx.Response) -> dict[str, Any]:
    """The body of a 4xx: ``{"error": {"message", "type", "param", "code"}}``, a message."""
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == ERROR_KEYS, err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    return err


# ---- the schema itself ---------------------------------------------------------------------------
def test_whitespace_class_is_pythons() -> None:
    """``input`` must not be blank as ``str.strip()`` sees it; the schema's pattern lists
    exactly Python's whitespace."""
    cls = re.compile(f"[{PY_WHITESPACE_CLASS}]")
    for cp in range(0x110000):
        c = chr(cp)
        assert bool(cls.fullmatch(c)) == c.isspace(), hex(cp)
    assert re.search(NON_BLANK_PATTERN, " \t\u3000x") and not re.search(NON_BLANK_PATTERN, " \n")


def test_live_schema_describes_the_client_api(http: httpx.Client) -> None:
    r = http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc == openapi_schema(TASKS, ["m"], sorted(TASKS))
    assert doc["openapi"] == "3.0.3" and doc["info"]["title"] == "CATO gateway"
    assert set(doc["paths"]) == {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                 "/v1/tasks/{task}", "/health", "/ready"}
    params = doc["components"]["parameters"]
    assert params["TaskPath"]["schema"]["enum"] == sorted(TASKS)
    assert params["TaskHeader"]["schema"]["enum"] == TASKS
    model = doc["components"]["schemas"]["CompletionRequest"]["properties"]["model"]
    assert model["anyOf"][0]["enum"] == [*TASKS, "m"]
    op = doc["paths"]["/v1/completions"]["post"]
    assert {p["$ref"].rsplit("/", 1)[1] for p in op["parameters"]} == {
        "TaskHeader", "SloTtftHeader", "SloE2eHeader", "SloTpotHeader"}
    assert set(op["responses"]) == {"200", "400", "401", "403", "404", "413", "429", "502",
                                    "503", "504"}
    assert set(op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {} in op["security"] and {"bearerAuth": []} in op["security"]


def test_schema_without_planner_has_no_enums() -> None:
    doc = openapi_schema([], ["m"], [])
    assert "enum" not in doc["components"]["parameters"]["TaskPath"]["schema"]
    assert "enum" not in doc["components"]["parameters"]["TaskHeader"]["schema"]
    model = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]
    assert model["anyOf"][0]["enum"] == ["m"]
    assert "anyOf" not in openapi_schema([], [], [])["components"]["schemas"][
        "CompletionRequest"]["properties"]["model"]


# ---- schemathesis over the live schema -----------------------------------------------------------
ST_EXAMPLES = {"POST": 60, "GET": 30}   # per operation, schema-valid and -invalid mixed
OPERATIONS = ["POST /v1/completions", "POST /v1/chat/completions", "GET /v1/models",
              "POST /v1/tasks/{task}", "GET /health", "GET /ready"]
# a valid streamed request per inference operation (path parameters, body): the fuzz itself
# streams a 200 only now and then, so each run sends one for sure, through the same checks
STREAMED_CASE: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "POST /v1/completions": ({}, {"model": "completion", "prompt": "def f(x):",
                                  "max_tokens": 4, "stream": True}),
    "POST /v1/chat/completions": ({}, {"model": "generation", "max_tokens": 4, "stream": True,
                                       "messages": [{"role": "user", "content": "hi"}]}),
    "POST /v1/tasks/{task}": ({"task": "summarization"},
                              {"input": "def f(x):\n    return x\n", "max_tokens": 4,
                               "stream": True}),
}


@pytest.fixture(scope="module")
def live_schema(fuzz_gateway: RunningGateway) -> BaseSchema:
    """The gateway's own ``GET /openapi.json``, loaded (and validated) by Schemathesis."""
    config = schemathesis.Config.from_dict({
        "request-timeout": TIMEOUT_S,
        "max-stream-events": 100_000,   # read every stream to its end
        # a schema-invalid request may be refused for its size too (a large generated body)
        "checks": {"negative_data_rejection": {"expected-statuses": [
            400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]}},
    })
    return schemathesis.openapi.from_url(fuzz_gateway.url + "/openapi.json", config=config,
                                         timeout=TIMEOUT_S)


def _header(response: StResponse, name: str) -> str:
    for k, v in response.headers.items():
        if k.lower() == name:
            return v[0] if v else ""
    return ""


def openai_error_shape(ctx: CheckContext, response: StResponse, case: Case[Any]) -> bool | None:
    """Every 4xx carries OpenAI's error object with a non-empty message."""
    if 400 <= response.status_code < 500:
        assert _header(response, "content-type").startswith("application/json")
        err = response.json()["error"]
        assert set(err) == ERROR_KEYS, err
        assert isinstance(err["message"], str) and err["message"].strip(), err
    return None


def stream_read_to_done(ctx: CheckContext, response: StResponse, case: Case[Any]) -> bool | None:
    """A streamed 200 was read to its end: ``data: [DONE]`` last, no error event."""
    if response.status_code == 200 and "event-stream" in _header(response, "content-type"):
        assert not response.stream_cut_short, "the stream was cut short"
        data = [ln[6:] for ln in response.content.decode().splitlines()
                if ln.startswith("data: ")]
        assert data and data[-1] == "[DONE]", data[-3:]
        assert not any(d.startswith('{"error"') for d in data), data
    return None


@dataclass
class Seen:
    """What one operation's fuzz got back: every status, and how many 200s were streams."""

    statuses: list[int] = field(default_factory=list)
    streamed: int = 0

    def record(self, ctx: CheckContext, response: StResponse, case: Case[Any]) -> bool | None:
        self.statuses.append(response.status_code)
        if response.status_code == 200 and "event-stream" in _header(response, "content-type"):
            self.streamed += 1
        return None


def test_live_schema_has_every_operation(live_schema: BaseSchema) -> None:
    labels = []
    for result in live_schema.get_all_operations():
        assert isinstance(result, Ok), result   # every operation's definition is valid
        labels.append(result.ok().label)
    assert sorted(labels) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_schemathesis_live_api(live_schema: BaseSchema, label: str) -> None:
    """Schema-valid and schema-invalid requests (Schemathesis' positive and negative modes)
    against one operation: no 5xx, documented statuses and content types, conforming bodies,
    OpenAI-shaped 4xx, streams read to [DONE], every schema-invalid request refused. An
    inference operation's fuzz is not all 400s: it served valid requests and refused invalid
    ones; and a valid streamed request to it passes the same checks as a streamed 200."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance,
                                                   negative_data_rejection,
                                                   response_schema_conformance,
                                                   status_code_conformance)
    op = live_schema.find_operation_by_label(label)
    assert op is not None, label
    seen = Seen()   # this run's own responses
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, negative_data_rejection, openai_error_shape,
              stream_read_to_done, seen.record]
    cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE),
                      op.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=ST_EXAMPLES[op.method.upper()], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def run(case: Case[Any]) -> None:
        case.call_and_validate(checks=checks, timeout=TIMEOUT_S)

    run()

    assert seen.statuses and all(s < 500 for s in seen.statuses), sorted(set(seen.statuses))
    if label in STREAMED_CASE:
        assert 200 in seen.statuses, sorted(set(seen.statuses))             # served valid ones
        assert {400, 404} & set(seen.statuses), sorted(set(seen.statuses))  # refused invalid ones
        path_parameters, body = STREAMED_CASE[label]
        streamed_before = seen.streamed
        op.Case(path_parameters=path_parameters, body=body,
                media_type="application/json").call_and_validate(checks=checks,
                                                                 timeout=TIMEOUT_S)
        assert seen.streamed == streamed_before + 1, seen.statuses[-1]   # read to [DONE]


# ---- hostile input at the HTTP level -------------------------------------------------------------
@dataclass
class Hostile:
    """A request that must be refused: a status in ``expect``; the error's ``param`` is
    ``param`` or a part of it (``messages[2]`` for ``messages``) and its ``code`` is ``code``,
    where these are given."""

    what: str
    path: str
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)
    expect: frozenset[int] = frozenset({400})
    param: str | None = None
    code: str | None = None
    chunked: bool = False

    def __repr__(self) -> str:
        return (f"Hostile({self.what!r}, {self.path!r}, {self.content[:300]!r}"
                f"{'...' if len(self.content) > 300 else ''} ({len(self.content)} bytes), "
                f"headers={self.headers!r}, expect={sorted(self.expect)}, param={self.param!r}, "
                f"code={self.code!r})")


ENDPOINTS = {  # path -> a valid body
    "/v1/completions": {"model": "completion", "prompt": "def f(x):", "max_tokens": 4},
    "/v1/chat/completions": {"model": "generation", "max_tokens": 4,
                             "messages": [{"role": "user", "content": "Write quicksort."}]},
    "/v1/tasks/summarization": {"input": "def f(x):\n    return x\n", "max_tokens": 4},
}
CONTENT_TYPES = [None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=xyz", "application/json; charset=latin-1",
                 "application/xml", "*/*", "nonsense"]


def _parses_as_valid_request(path: str, content: bytes) -> bool:
    """Whether ``content`` happens to be a request the gateway accepts (not hostile)."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return False
    if not isinstance(body, dict):
        return False
    required = {"/v1/completions": "prompt", "/v1/chat/completions": "messages"}.get(path, "input")
    return required in body


def _headers(content_type: str | None) -> dict[str, str]:
    return {} if content_type is None else {"content-type": content_type}


@st.composite
def random_bytes(draw: st.DrawFn) -> Hostile:
    path = draw(st.sampled_from(sorted(ENDPOINTS)))
    content = draw(st.one_of(
        st.binary(max_size=2048),
        st.text(max_size=512).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"", b"null", b"1", b'"x"', b"[]", b"{", b"{}", b'{"a":}', b"\xff\xfe",
                         b'{"prompt": "x"', b"\x00" * 64, b"{\"\xff\": 1}"])))
    if _parses_as_valid_request(path, content):
        content = b"[" + content
    return Hostile("random bytes", path, content,
                   _headers(draw(st.sampled_from(CONTENT_TYPES))))


def _nest(depth: int, inner: str, kind: str) -> str:
    if kind == "array":
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


@st.composite
def deep_nesting(draw: st.DrawFn) -> Hostile:
    """Nesting deeper than MAX_JSON_DEPTH (and than the parser recurses): at the top level, in a
    validated field, in a field the gateway would forward to the engine."""
    path = draw(st.sampled_from(sorted(ENDPOINTS)))
    kind = draw(st.sampled_from(["array", "object"]))
    depth = draw(st.one_of(st.integers(MAX_JSON_DEPTH + 1, 300),
                           st.integers(300, 2_400 if kind == "object" else 7_000)))
    inner = draw(st.sampled_from(["", "1", '"x"', "null"])) if kind == "array" else "1"
    nested = _nest(depth, inner, kind)
    where = draw(st.sampled_from(["top", "field", "extra"]))
    if where == "top":
        return Hostile("deep nesting", path, nested.encode(), code="invalid_json")
    body = dict(ENDPOINTS[path])
    name = "tools" if where == "extra" else next(
        k for k in ("prompt", "messages", "input") if k in body)
    text = json.dumps(dict(body, **{name: "@@"})).replace('"@@"', nested)
    return Hostile(f"deep nesting in {name}", path, text.encode(), code="invalid_json")


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**60),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8)


def _valid_part(p: Any) -> bool:
    return isinstance(p, dict) and isinstance(p.get("text", ""), str)


def _valid_messages(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and (isinstance(m.get("content"), str)
             or (isinstance(m.get("content"), list) and all(_valid_part(p) for p in m["content"])))
        for m in v)


def _valid_tokens(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_TOKENS)


VALID: dict[str, Callable[[Any], bool]] = {
    "prompt": lambda v: isinstance(v, str) or (isinstance(v, list) and len(v) == 1
                                               and isinstance(v[0], str)),
    "messages": _valid_messages,
    "model": lambda v: v is None or isinstance(v, str),
    "stream": lambda v: isinstance(v, bool),
    "stream_options": lambda v: v is None or isinstance(v, dict),
    "n": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v == 1),
    "max_tokens": _valid_tokens,
    "max_completion_tokens": _valid_tokens,
    "input": lambda v: isinstance(v, str) and bool(v.strip()),
}
FIELDS = {
    "/v1/completions": ["prompt", "model", "stream", "stream_options", "n", "max_tokens"],
    "/v1/chat/completions": ["messages", "model", "stream", "stream_options", "n",
                             "max_tokens", "max_completion_tokens"],
    "/v1/tasks/summarization": ["input", "max_tokens", "stream"],
}


def _bad_messages() -> st.SearchStrategy[Any]:
    msg = st.fixed_dictionaries({"role": st.text(max_size=5), "content": st.text(max_size=5)})
    bad_msg = st.one_of(
        JSON_VALUES,
        st.fixed_dictionaries({"role": JSON_VALUES, "content": st.text(max_size=5)}),
        st.fixed_dictionaries({"role": st.just("user"), "content": JSON_VALUES}),
        st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(JSON_VALUES,
                                                                             max_size=3)}))
    return st.tuples(st.lists(msg, max_size=3), bad_msg, st.lists(msg, max_size=2)).map(
        lambda t: [*t[0], t[1], *t[2]])


@st.composite
def wrong_type(draw: st.DrawFn) -> Hostile:
    """A valid body with one validated field replaced by a value it does not accept."""
    path = draw(st.sampled_from(sorted(FIELDS)))
    name = draw(st.sampled_from(FIELDS[path]))
    values = st.one_of(JSON_VALUES, _bad_messages()) if name == "messages" else JSON_VALUES
    value = draw(values.filter(lambda v: not VALID[name](v)))
    body = dict(ENDPOINTS[path], **{name: value})
    expect = frozenset({400})
    return Hostile(f"wrong type for {name}", path, json.dumps(body).encode(),
                   _headers(draw(st.sampled_from(CONTENT_TYPES))), expect, param=name)


@st.composite
def non_finite_or_huge(draw: st.DrawFn) -> Hostile:
    """NaN / Infinity literals, numbers that overflow a float, integers too long to parse: in
    any field, validated or not."""
    path = draw(st.sampled_from(sorted(FIELDS)))
    name = draw(st.sampled_from([*FIELDS[path], "temperature", "top_p", "extra"]))
    literal = draw(st.one_of(
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "2e308",
                         "1.8e308", "-" + "9" * 400 + "e999"]),
        st.integers(4301, 15000).map(lambda n: "9" * n),
        st.integers(309, 5000).map(lambda n: f"1e{n}")))
    text = json.dumps(dict(ENDPOINTS[path], **{name: "@@"})).replace('"@@"', literal)
    return Hostile(f"{literal[:12]} in {name}", path, text.encode(), code="invalid_json")


def _in_range_number_for(name: str, path: str) -> st.SearchStrategy[Hostile]:
    """Huge integers and floats in a validated number field: a 400 naming it."""
    bad = st.one_of(st.integers(min_value=MAX_TOKENS + 1, max_value=10**4000),
                    st.integers(max_value=0), st.floats(allow_nan=False, allow_infinity=False,
                                                        width=64).filter(lambda f: f != 0))
    return bad.map(lambda v: Hostile(
        f"number {str(v)[:12]} in {name}", path,
        json.dumps(dict(ENDPOINTS[path], **{name: v})).encode(), param=name))


huge_numbers = st.one_of(*(_in_range_number_for(n, p) for p, fs in FIELDS.items()
                           for n in fs if n in ("max_tokens", "max_completion_tokens")))

# what h11 lets a client send: visible latin-1, inner spaces and tabs
HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_categories=["Cc"])
                      | st.just("\t"), max_size=30).map(lambda v: v.strip(" \t"))


@st.composite
def unicode_names(draw: st.DrawFn) -> Hostile:
    """Unicode and control characters where a name is expected: a 404 naming what."""
    name = draw(st.text(max_size=30).filter(lambda s: s not in [*TASKS, "m"]))
    if draw(st.booleans()):
        path = draw(st.sampled_from(["/v1/completions", "/v1/chat/completions"]))
        body = dict(ENDPOINTS[path], model=name)
        raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        return Hostile("unicode model", path, raw, expect=frozenset({404}), param="model")
    name = draw(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
                .filter(lambda s: "/" not in s and s.strip(".") and s not in TASKS))
    return Hostile("unicode task path", "/v1/tasks/" + quote(name, safe=""), b'{"input": "x"}',
                   expect=frozenset({404}), param="task")


def _slo_ok(raw: str) -> bool:
    try:
        ms = float(raw)
    except ValueError:
        return False
    return math.isfinite(ms) and 0 < ms <= MAX_SLA_MS


@st.composite
def bad_headers(draw: st.DrawFn) -> Hostile:
    """Bad ``x-slo-*`` values, an SLA header of another kind (on a TTFT task: a bad secondary
    bound), unknown ``x-cato-task``."""
    kind = draw(st.sampled_from(["slo", "other_slo", "task"]))
    path = draw(st.sampled_from(["/v1/completions", "/v1/chat/completions"]))
    task = draw(st.sampled_from(TASKS))
    body = json.dumps(dict(ENDPOINTS[path], model=task)).encode()
    mine, other = (SLO_TTFT, SLO_E2E) if task in TTFT_TASKS else (SLO_E2E, SLO_TTFT)
    if kind == "task":
        value = draw(HEADER_TEXT.filter(lambda s: s not in TASKS))
        return Hostile("x-cato-task", path, body, {TASK_HEADER: value},
                       expect=frozenset({404}), param=TASK_HEADER)
    value = draw(st.one_of(
        HEADER_TEXT, st.sampled_from(["nan", "inf", "-inf", "0", "-0", "-1", "1e999", "0x10",
                                      "1,5", "", "1 000", "10 ms", str(MAX_SLA_MS * 2)]),
        st.floats().map(repr)))
    if kind == "other_slo":
        if task in TTFT_TASKS:
            # on a TTFT task x-slo-e2e-ms is the secondary bound, x-slo-tpot-ms sets one: only a
            # bad value is refused
            other = draw(st.sampled_from([SLO_E2E, SLO_TPOT]))
            if _slo_ok(value):
                value = "-" + value
            return Hostile(f"bad {other} for a {mine} task", path, body, {other: value},
                           param=other)
        other = draw(st.sampled_from([SLO_TTFT, SLO_TPOT]))
        return Hostile(f"{other} for a {mine} task", path, body, {other: value}, param=other)
    if _slo_ok(value):
        value = "-" + value
    return Hostile(f"bad {mine}", path, body, {mine: value}, param=mine)


@st.composite
def oversized(draw: st.DrawFn) -> Hostile:
    """Bodies above limits.max_body_bytes, with a Content-Length or chunked: 413."""
    path = draw(st.sampled_from(sorted(ENDPOINTS)))
    size = draw(st.integers(MAX_BODY + 1, 8 * MAX_BODY))
    filler = draw(st.sampled_from(["x", " ", "\u00e9", "["]))
    body = dict(ENDPOINTS[path])
    name = next(iter(k for k in ("prompt", "messages", "input") if k in body))
    if filler == "[":
        raw = ("[" * size).encode()
    else:
        body[name] = "@@"
        text = json.dumps(body)
        pad = filler * size
        raw = text.replace("@@", pad).encode()[: max(size, MAX_BODY + 1)]
    return Hostile("oversized", path, raw, expect=frozenset({413}), code="request_too_large",
                   chunked=draw(st.booleans()))


HOSTILE = st.one_of(random_bytes(), deep_nesting(), wrong_type(), non_finite_or_huge(),
                    huge_numbers, unicode_names(), bad_headers(), oversized())


def latin1(headers: dict[str, str]) -> dict[bytes, bytes]:
    """Headers as the bytes sent (httpx would encode a str value as ASCII)."""
    return {k.encode(): v.encode("latin-1") for k, v in headers.items()}


def send(http: httpx.Client, h: Hostile) -> httpx.Response:
    headers = latin1(h.headers)
    if h.chunked:
        def gen() -> Iterator[bytes]:
            for i in range(0, len(h.content), 4096):
                yield h.content[i:i + 4096]
        return http.post(h.path, content=gen(), headers=headers)
    r = http.build_request("POST", h.path, content=h.content, headers=headers)
    if b"content-type" not in {k.lower() for k in headers}:
        r.headers.pop("content-type", None)
    return http.send(r)


def check_refused(r: httpx.Response, h: Hostile) -> None:
    assert r.status_code in h.expect, (r.status_code, r.text[:500])
    err = assert_openai_error(r)
    if h.param is not None:   # the field, or a part of it (messages[2], messages[0].content[1])
        assert err["param"] == h.param or str(err["param"]).startswith(h.param + "["), err
    if h.code is not None:
        assert err["code"] == h.code, err


@settings(max_examples=1000, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(h=HOSTILE)
def test_hostile_input_gets_a_4xx(http: httpx.Client, h: Hostile) -> None:
    note(repr(h))
    check_refused(send(http, h), h)


def test_gateway_still_serves_after_the_fuzz(http: httpx.Client) -> None:
    r = http.post("/v1/completions", json={"model": "completion", "prompt": "ok",
                                            "max_tokens": 3})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    with http.stream("POST", "/v1/tasks/generation",
                     json={"input": "def f():", "max_tokens": 3, "stream": True}) as s:
        assert s.status_code == 200
        data = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
    assert data[-1] == "data: [DONE]" and json.loads(data[-2][6:])["object"] == "task.result"
    assert http.get("/ready").json()["status"] == "ready"


# ---- every bad input is named --------------------------------------------------------------------
C, CH, T = "/v1/completions", "/v1/chat/completions", "/v1/tasks/generation"
OK_C = {"model": "completion", "prompt": "x", "max_tokens": 2}
OK_CH = {"model": "generation", "messages": [{"role": "user", "content": "hi"}]}


def _nested_list(levels: int) -> list[Any]:
    """``[[...[]...]]``: ``levels`` levels of arrays."""
    out: list[Any] = []
    for _ in range(levels - 1):
        out = [out]
    return out


# (what, method, path, body (dict, or raw bytes), headers, status, the field/value named)
NAMED: list[tuple[str, str, str, Any, dict[str, str], int, str]] = [
    ("not JSON", "POST", C, b"\x00\xff{", {}, 400, "invalid_json"),
    ("an array body", "POST", C, b"[{}]", {}, 400, "JSON object"),
    ("deep nesting", "POST", C, b"[" * 5000 + b"]" * 5000, {}, 400, "invalid_json"),
    ("deep nesting in prompt", "POST", C,
     b'{"prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}", {}, 400, "invalid_json"),
    ("65 levels in a forwarded field", "POST", C, dict(OK_C, tools=_nested_list(64)), {}, 400,
     f"deeper than {MAX_JSON_DEPTH} levels"),
    ("NaN", "POST", C, b'{"prompt": "x", "temperature": NaN}', {}, 400, "NaN"),
    ("Infinity", "POST", C, b'{"prompt": "x", "max_tokens": -Infinity}', {}, 400, "Infinity"),
    ("float overflow", "POST", C, b'{"prompt": "x", "top_p": 1e400}', {}, 400, "1e400"),
    ("integer too long", "POST", C, b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", {}, 400,
     "invalid_json"),
    ("prompt of two strings", "POST", C, {"prompt": ["a", "b"]}, {}, 400, "prompt"),
    ("prompt too long", "POST", C, dict(OK_C, prompt="x" * (4 * MAX_PROMPT_TOKENS + 8)), {},
     400, "prompt"),
    ("max_tokens above the limit", "POST", C, dict(OK_C, max_tokens=MAX_TOKENS + 1), {}, 400,
     "max_tokens"),
    ("max_tokens huge", "POST", C, dict(OK_C, max_tokens=10**300), {}, 400, "max_tokens"),
    ("max_tokens a float", "POST", C, dict(OK_C, max_tokens=2.0), {}, 400, "max_tokens"),
    ("n = 2", "POST", C, dict(OK_C, n=2), {}, 400, "n"),
    ("stream_options a string", "POST", C, dict(OK_C, stream_options="yes"), {}, 400,
     "stream_options"),
    ("model a number", "POST", C, dict(OK_C, model=5), {}, 400, "model"),
    ("model unknown, control chars", "POST", C, dict(OK_C, model="gpt\x00\u202e-4"), {}, 404,
     "model"),
    ("messages[2] without a role", "POST", CH,
     {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"},
                   {"content": "c"}]}, {}, 400, "messages[2]"),
    ("content part not an object", "POST", CH,
     {"messages": [{"role": "user", "content": ["hi"]}]}, {}, 400, "messages[0].content[0]"),
    ("content part text a number", "POST", CH,
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "text", "text": 5}]}]},
     {}, 400, "messages[0].content[1]"),
    ("max_completion_tokens 0", "POST", CH, dict(OK_CH, max_completion_tokens=0), {}, 400,
     "max_completion_tokens"),
    ("unknown x-cato-task", "POST", C, OK_C, {TASK_HEADER: "transl\u00e4tion"}, 404,
     TASK_HEADER),
    ("x-slo-ttft-ms not a number", "POST", C, OK_C, {SLO_TTFT: "soon"}, 400, SLO_TTFT),
    ("x-slo-ttft-ms above max_sla_ms", "POST", C, OK_C, {SLO_TTFT: str(MAX_SLA_MS * 10)}, 400,
     SLO_TTFT),
    ("x-slo-e2e-ms on a TTFT task", "POST", C, OK_C, {SLO_E2E: "100"}, 400, SLO_E2E),
    ("oversized body", "POST", C, dict(OK_C, prompt="x" * MAX_BODY), {}, 413,
     "request_too_large"),
    ("unknown task", "POST", "/v1/tasks/refactoring", {"input": "x"}, {}, 404, "task"),
    ("blank task input", "POST", T, {"input": " \t\u3000\n"}, {}, 400, "input"),
    ("task max_tokens a string", "POST", T, {"input": "x", "max_tokens": "8"}, {}, 400,
     "max_tokens"),
    ("task stream null", "POST", T, {"input": "x", "stream": None}, {}, 400, "stream"),
    ("x-slo-e2e-ms on a TTFT pipeline", "POST", T, {"input": "x"}, {SLO_E2E: "9"}, 400,
     SLO_E2E),
    ("GET on a POST route", "GET", C, None, {}, 405, "Method Not Allowed"),
    ("unknown path", "POST", "/v1/embeddings", OK_C, {}, 404, "not_found"),
]


@pytest.mark.parametrize("what,method,path,body,headers,status,named", NAMED,
                         ids=[n[0] for n in NAMED])
def test_every_bad_input_is_named(http: httpx.Client, what: str, method: str, path: str,
                                  body: Any, headers: dict[str, str], status: int,
                                  named: str) -> None:
    kw: dict[str, Any] = {}
    if isinstance(body, bytes):
        kw["content"] = body
    elif body is not None:
        kw["json"] = body
    r = http.request(method, path, headers=latin1(headers), **kw)
    assert r.status_code == status, r.text[:500]
    err = assert_openai_error(r)
    assert named in (str(err["param"]), str(err["code"])) or named in err["message"], err


def test_nesting_limit_is_exact(http: httpx.Client) -> None:
    """A body nesting MAX_JSON_DEPTH levels is served (extra fields go to the engine), one
    level more is a 400."""
    ok = dict(OK_C, tools=_nested_list(MAX_JSON_DEPTH - 1))   # the body itself is level 1
    assert http.post(C, json=ok).status_code == 200
    r = http.post(C, json=dict(OK_C, tools=_nested_list(MAX_JSON_DEPTH)))
    assert r.status_code == 400 and assert_openai_error(r)["code"] == "invalid_json"
