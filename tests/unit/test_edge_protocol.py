"""The shared OpenAI edge (:mod:`cato.edge.protocol`, :mod:`cato.edge.errors`) and the two
validators on top of it: the gateway's (:func:`cato.serving.requests.parse_llm_request`) and the
emulated engine's (:mod:`cato.engine.requests`). Each keeps the status, ``param``, ``code`` and
wording its clients had before the models were shared; the OpenAPI 3.0 conversion of the models
is checked on its own (the live schema is fuzzed in ``tests/reliability/test_fuzz.py``)."""

from __future__ import annotations

import json
from typing import Any, Literal, NotRequired

import pytest
from pydantic import BaseModel, Field, ValidationError
from typing_extensions import TypedDict

from cato.edge.errors import ApiError, error_body, overloaded, retry_after, unavailable
from cato.edge.protocol import (MAX_TOKENS_LIMIT, ChatCompletionRequest, CompletionRequest,
                                default_wording, first_error, invalid_request,
                                openapi_components)
from cato.engine.requests import check_model, parse_chat, parse_completion
from cato.gateway.config import ConfigError, GatewayConfig, Limits, parse_config
from cato.serving.requests import parse_llm_request
from cato.serving.scope import Front, RequestLimits

TASKS = ["completion", "generation"]
CFG = GatewayConfig.model_validate({
    "models": [{"name": "m", "replicas": [{"url": "http://127.0.0.1:1"}]}],
    "limits": {"max_tokens": 64, "max_prompt_tokens": 2048}})
MSG = [{"role": "user", "content": "hi"}]


def _gateway_error(kind: str, body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse_llm_request(kind, body, {}, CFG, TASKS)
    return e.value


# ------------------------------------------------------------------------------------ errors
def test_api_error_body_and_response() -> None:
    e = ApiError(400, "bad", param="n", code="x")
    assert e.body() == error_body("bad", "invalid_request_error", "n", "x") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": "x"}}
    r = e.response()
    assert r.status_code == 400 and json.loads(bytes(r.body)) == e.body()
    assert overloaded("full", 2.4).headers == {"Retry-After": "2"} == retry_after(2.4)
    assert overloaded("full", 0.1).response().headers["retry-after"] == "1"
    u = unavailable("starting")
    assert (u.status, u.type, u.code, u.headers) == (503, "service_unavailable", "not_ready",
                                                     {"Retry-After": "1"})


# ------------------------------------------------------------------------------------ gateway
GATEWAY_400: list[tuple[str, dict[str, Any], str, str]] = [
    ("completions", {}, "prompt", "'prompt' must be a string (or a list of one string)"),
    ("completions", {"prompt": ["a", "b"]}, "prompt",
     "'prompt' must be a string (or a list of one string)"),
    ("completions", {"prompt": "x", "stream": None}, "stream", "'stream' must be a boolean"),
    ("completions", {"prompt": "x", "n": 2}, "n", "'n' must be between 1 and 1, got 2"),
    ("completions", {"prompt": "x", "max_tokens": 2.0}, "max_tokens",
     "'max_tokens' must be an integer, got float 2.0"),
    ("completions", {"prompt": "x", "max_tokens": True}, "max_tokens",
     "'max_tokens' must be an integer, got bool True"),
    ("completions", {"prompt": "x", "max_tokens": 65}, "max_tokens",
     "'max_tokens' must be between 1 and 64, got 65"),
    ("completions", {"prompt": "x", "max_tokens": 10**40}, "max_tokens",
     f"'max_tokens' must be between 1 and 64, got {10**40}"),
    ("completions", {"prompt": "x", "stream_options": "yes"}, "stream_options",
     "'stream_options' must be an object"),
    ("completions", {"prompt": "x", "model": 5}, "model", "'model' must be a string"),
    ("chat", {"messages": []}, "messages", "'messages' must be a non-empty list"),
    ("chat", {"messages": [*MSG, {"role": "user"}]}, "messages[1]",
     "messages[1] must be an object with a string 'role' and a 'content'"),
    ("chat", {"messages": [{"role": "u", "content": ["hi"]}]}, "messages[0].content[0]",
     "messages[0].content[0] must be an object (a content part), got str"),
    ("chat", {"messages": [{"role": "u", "content": [{"text": "a"}, {"text": 5}]}]},
     "messages[0].content[1].text", "messages[0].content[1].text must be a string, got int"),
    ("chat", {"messages": MSG, "max_completion_tokens": 0}, "max_completion_tokens",
     "'max_completion_tokens' must be between 1 and 64, got 0"),
    # several bad fields: the first in the gateway's order is named
    ("completions", {"prompt": "x", "model": 5, "stream_options": 1, "n": 3}, "n",
     "'n' must be between 1 and 1, got 3"),
    ("chat", {"messages": [{"role": 1, "content": ["x"]}], "stream": 1}, "messages[0]",
     "messages[0] must be an object with a string 'role' and a 'content'"),
]


@pytest.mark.parametrize("kind,body,param,message", GATEWAY_400)
def test_gateway_names_the_bad_field(kind: str, body: dict[str, Any], param: str,
                                     message: str) -> None:
    e = _gateway_error(kind, body)
    assert (e.status, e.type, e.param, e.code, e.message) == (
        400, "invalid_request_error", param, None, message)


def test_gateway_accepts_and_forwards() -> None:
    body = {"model": "generation", "messages": [{"role": "u", "content": [{"type": "text",
                                                                          "text": "ab"}]}],
            "max_completion_tokens": 7, "stream": True, "stream_options": {"include_usage": 1},
            "priority": 3, "tools": [{"x": 1}], "n": None}
    r = parse_llm_request("chat", body, {}, CFG, TASKS)
    assert (r.task, r.client_model, r.max_tokens, r.stream, r.include_usage) == (
        "generation", "generation", 7, True, True)
    assert r.body == {k: v for k, v in body.items()
                      if k not in ("stream", "stream_options", "priority")}
    r = parse_llm_request("completions", {"prompt": ["hello"], "max_tokens": 64}, {}, CFG, TASKS)
    assert (r.max_tokens, r.stream, r.include_usage, r.prompt_tokens) == (64, False, False, 2)
    e = _gateway_error("completions", {"prompt": "x" * 9000})
    assert (e.param, e.code) == ("prompt", "context_length_exceeded")
    with pytest.raises(ApiError) as nf:
        parse_llm_request("completions", {"prompt": "x", "model": "gpt-9"}, {}, CFG, TASKS)
    assert (nf.value.status, nf.value.param) == (404, "model")


# ------------------------------------------------------------------------------------ engine
ENGINE_400: list[tuple[Literal["completion", "chat"], dict[str, Any], str, str]] = [
    ("completion", {"max_tokens": 3}, "prompt", "'prompt' is required"),
    ("completion", {"prompt": None}, "prompt", "'prompt' is required"),
    ("completion", {"prompt": [None]}, "prompt", "'prompt' is required"),
    ("completion", {"prompt": 42}, "prompt", "'prompt' must be a string or a list of one string"),
    ("completion", {"prompt": "x", "max_tokens": "3"}, "max_tokens",
     "'max_tokens' must be an integer"),
    ("completion", {"prompt": "x", "max_tokens": 0}, "max_tokens",
     "'max_tokens' must be >= 1, got 0"),
    ("completion", {"prompt": "x", "n": 2}, "n", "only n = 1 is supported"),
    ("completion", {"prompt": "x", "n": 0}, "n", "'n' must be >= 1, got 0"),
    ("completion", {"prompt": "x", "stream": "yes"}, "stream", "'stream' must be a boolean"),
    ("completion", {"prompt": "x", "priority": 1.5}, "priority",
     "'priority' must be an integer, got 1.5"),
    ("completion", {"prompt": "x", "model": 7}, "model", "'model' must be a string"),
    ("chat", {}, "messages", "'messages' is required"),
    ("chat", {"messages": {}}, "messages", "'messages' must be a non-empty list"),
    ("chat", {"messages": [{"content": "no role"}]}, "messages",
     "each message must be an object with a string 'role'"),
    ("chat", {"messages": [{"role": "u", "content": 5}]}, "messages",
     "a message's 'content' must be a string or a list of parts"),
    ("chat", {"messages": MSG, "stream_options": True}, "stream_options",
     "'stream_options' must be an object"),
    ("chat", {"messages": MSG, "stream_options": {"include_usage": 1}}, "include_usage",
     "'include_usage' must be a boolean"),
    ("chat", {"messages": MSG, "max_completion_tokens": 0}, "max_completion_tokens",
     "'max_completion_tokens' must be >= 1, got 0"),
    ("completion", {"prompt": "x" * 8188, "max_tokens": 2}, "prompt",
     "This model's maximum context length is 2048 tokens. However, you requested 2049 tokens "
     "(2047 in the prompt, 2 in the completion). Please reduce the length of the prompt or "
     "completion."),
]


@pytest.mark.parametrize("kind,body,param,message", ENGINE_400)
def test_engine_names_the_bad_field(kind: Literal["completion", "chat"], body: dict[str, Any],
                                    param: str, message: str) -> None:
    with pytest.raises(ApiError) as e:
        (parse_chat if kind == "chat" else parse_completion)(body, 2048)
    assert (e.value.status, e.value.type, e.value.param, e.value.message) == (
        400, "invalid_request_error", param, message)


def test_engine_leniencies() -> None:
    """vLLM's: null is the default everywhere; a message needs a role only; a chat request with
    max_tokens is not checked for max_completion_tokens."""
    job = parse_chat({"messages": [{"role": "assistant", "content": None}, {"role": "user"},
                                   {"role": "u", "content": [1, "x"]}],
                      "stream": None, "n": None, "priority": None, "max_tokens": 5,
                      "max_completion_tokens": "junk", "stream_options": {"include_usage": None}},
                     2048)
    assert (job.kind, job.max_tokens, job.stream, job.include_usage, job.priority) == (
        "chat", 5, False, False, 0)
    job = parse_completion({"prompt": ["x"], "priority": -3, "stream": True,
                            "stream_options": {"include_usage": True}}, 2048)
    assert (job.max_tokens, job.stream, job.include_usage, job.priority) == (16, True, True, -3)
    assert parse_chat({"messages": MSG, "max_completion_tokens": 9}, 2048).max_tokens == 9
    check_model({"model": None}, "m")
    with pytest.raises(ApiError) as e:
        check_model({"model": "gpt-9"}, "m")
    assert (e.value.status, e.value.param, e.value.code) == (404, "model", "model_not_found")


# ------------------------------------------------------------------------------------ models
def test_max_tokens_limit_comes_from_the_context() -> None:
    body = {"prompt": "x", "max_tokens": 100}
    assert CompletionRequest.model_validate(body).max_tokens == 100
    with pytest.raises(ValidationError) as e:
        CompletionRequest.model_validate(body, context={MAX_TOKENS_LIMIT: 99})
    assert e.value.errors()[0]["type"] == "less_than_equal"


def test_default_wording_and_order() -> None:
    with pytest.raises(ValidationError) as e:
        ChatCompletionRequest.model_validate({"messages": [{"role": "u", "content": [3]}],
                                              "n": "1"})
    assert str(first_error(e.value)["loc"][0]) == "n"   # the model's order: n before messages
    assert first_error(e.value, ["messages"])["loc"][:2] == ("messages", 0)
    err = invalid_request(e.value, order=["messages"], code="c")
    assert (err.status, err.param, err.code) == (400, "messages", "c")
    assert err.message.startswith("'messages[0].content.parts[0]': Input should be")
    assert default_wording(first_error(e.value))[1] == "n"


class _Inner(BaseModel):
    a: int


class _Shape(TypedDict):
    kind: Literal["x"]
    inner: _Inner | None
    many: list[_Inner]
    maybe: NotRequired[str | None]
    positive: NotRequired[float]


class _Req(BaseModel):
    shape: _Shape
    size: int = Field(gt=0)


def test_openapi_components_are_openapi_3_0() -> None:
    out = openapi_components({"Request": _Req, "Shape": _Shape})
    assert set(out) == {"Request", "Shape", "_Inner"}   # under the given names
    text = json.dumps(out)
    assert '"title"' not in text and '"const"' not in text and '"null"' not in text
    assert out["Request"]["properties"]["shape"] == {"$ref": "#/components/schemas/Shape"}
    assert out["Request"]["properties"]["size"] == {"type": "integer", "minimum": 0,
                                                    "exclusiveMinimum": True}
    props = out["Shape"]["properties"]
    assert props["kind"] == {"enum": ["x"], "type": "string"}
    assert props["inner"]["nullable"] is True and props["inner"]["type"] == "object"
    assert props["inner"]["required"] == ["a"]   # a nullable reference is inlined
    assert props["many"]["items"] == {"$ref": "#/components/schemas/_Inner"}
    assert props["maybe"] == {"type": "string", "nullable": True}
    assert out["Shape"]["required"] == ["kind", "inner", "many"]


def test_token_counting_skips_a_content_part_whose_text_is_not_a_string() -> None:
    # the engine counted such a part's text and answered 500; it now counts it as empty
    from cato.text import chat_prompt_text
    messages = [{"role": "user", "content": [{"type": "text", "text": 5}, {"text": "hi"}]}]
    assert chat_prompt_text(messages) == "user: hi"


# ------------------------------------------------------------------------------------ fronts
FRONT = Front.of(["m"], "generation", RequestLimits(max_tokens=64, max_prompt_tokens=2048))


@pytest.mark.parametrize("kind,body,headers", [
    ("completions", {"prompt": "x", "max_tokens": 65}, {}),
    ("completions", {"prompt": "x" * 9000}, {}),
    ("completions", {"prompt": "x", "model": "gpt-9"}, {}),
    ("completions", {"prompt": "x"}, {"x-cato-task": "poetry"}),
    ("chat", {"messages": [{"role": 1}]}, {}),
    ("completions", {"prompt": ["hello"], "max_tokens": 64, "model": "m"}, {}),
    ("chat", {"model": "completion", "messages": MSG, "stream": True}, {}),
])
def test_a_front_parses_as_the_gateway_config_does(kind: str, body: dict[str, Any],
                                                   headers: dict[str, str]) -> None:
    """A Ray Serve replica's :class:`Front` and the gateway's config are the same
    :class:`RequestScope`: the same request gets the same answer, accepted or refused."""
    def answer(scope: Any) -> Any:
        try:
            return parse_llm_request(kind, body, headers, scope, TASKS)
        except ApiError as e:
            return (e.status, e.type, e.param, e.code, e.message)
    assert answer(FRONT) == answer(CFG)


def test_a_front_names_its_models_and_needs_a_task_without_a_default() -> None:
    with pytest.raises(ApiError) as nf:
        parse_llm_request("completions", {"prompt": "x", "model": "gpt-9"}, {},
                          Front.of(["a", "b"], None), TASKS)
    assert nf.value.status == 404 and "models: a, b" in nf.value.message
    with pytest.raises(ApiError) as no_task:
        parse_llm_request("completions", {"prompt": "x", "model": "a"}, {},
                          Front.of(["a"], None), TASKS)
    assert (no_task.value.status, no_task.value.param) == (400, "model")
    with pytest.raises(ValueError, match="at least one model"):
        Front.of([], "generation")


def test_request_limits_have_one_home() -> None:
    """The gateway's ``limits`` extend the request limits a front has: same defaults, and a
    bad value is named by its place in the gateway's config."""
    assert issubclass(Limits, RequestLimits)
    assert Limits().model_dump(include=set(RequestLimits.model_fields)) == \
        RequestLimits().model_dump()
    with pytest.raises(ConfigError, match=r"limits\.max_tokens"):
        parse_config({"models": [{"name": "m", "replicas": [{"url": "http://127.0.0.1:1"}]}],
                      "limits": {"max_tokens": 0}})
