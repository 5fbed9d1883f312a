"""The one SSE codec (:mod:`cato.edge.sse`): what the gateway sends, and the incremental parser
every reader uses (the gateway's engine client, the load generators), fed cut at every byte,
with ``[DONE]``, comments, CRLF, unterminated and malformed lines; then the engine client and
the live-load client on a real HTTP stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from cato.edge.sse import (DONE, MalformedEvent, SseParser, aiter_data, encode, encode_raw,
                           loads)

EVENTS: list[dict[str, Any]] = [
    {"id": "c1", "choices": [{"index": 0, "text": "def"}]},
    {"id": "c1", "choices": [{"index": 0, "text": " f(x):\n\treturn 'é' # ü"}]},
    {"id": "c1", "choices": [], "usage": {"completion_tokens": 2}, "cato": {"sla_met": True}},
]


def _stream() -> bytes:
    return b"".join(encode(e) for e in EVENTS) + DONE


def _parse(chunks: list[bytes]) -> tuple[list[dict[str, Any]], SseParser]:
    p = SseParser()
    out = [loads(payload) for c in chunks for payload in p.feed(c)]
    return out, p


def test_encoder_writes_data_lines_and_done() -> None:
    assert encode({"a": [1, "x"]}) == b'data: {"a":[1,"x"]}\n\n'
    assert encode_raw(b'{"b":2}') == b'data: {"b":2}\n\n'
    assert DONE == b"data: [DONE]\n\n"
    assert json.loads(encode(EVENTS[1])[len(b"data: "):]) == EVENTS[1]


def test_round_trip_whole_and_byte_by_byte() -> None:
    data = _stream()
    whole, p = _parse([data])
    assert whole == EVENTS and p.done and p.pending == b""
    one_by_one, p = _parse([data[i:i + 1] for i in range(len(data))])
    assert one_by_one == EVENTS and p.done


def test_every_split_point_gives_the_same_events() -> None:
    data = _stream()
    for cut in range(len(data) + 1):
        got, p = _parse([data[:cut], data[cut:]])
        assert got == EVENTS and p.done, cut


def test_a_line_split_across_chunks_waits_for_its_newline() -> None:
    p = SseParser()
    assert list(p.feed(b'data: {"a":')) == []
    assert p.pending == b'data: {"a":'
    assert list(p.feed(b"1}")) == []
    assert list(p.feed(b"\n\n")) == [b'{"a":1}']
    assert p.pending == b"" and not p.done


def test_done_ends_the_stream_and_later_input_is_ignored() -> None:
    p = SseParser()
    got = list(p.feed(b'data: {"a":1}\n\ndata: [DONE]\n\ndata: {"late":1}\n\n'))
    assert got == [b'{"a":1}'] and p.done
    assert list(p.feed(b'data: {"later":2}\n\n')) == [] and list(p.feed(b"garbage\n")) == []


def test_comments_other_fields_crlf_and_no_space_after_the_colon() -> None:
    p = SseParser()
    got = list(p.feed(b': keep-alive\r\n\r\nevent: message\r\nid: 7\r\n'
                      b'data:{"a":1}\r\n\r\ndata:   {"b":2}  \n\ndata: [DONE]\r\n'))
    assert got == [b'{"a":1}', b'{"b":2}'] and p.done


def test_str_chunks_are_accepted() -> None:
    p = SseParser()
    assert [loads(x) for x in p.feed(encode(EVENTS[0]).decode() + "data: [DONE]\n")] \
        == [EVENTS[0]]
    assert p.done


def test_an_unterminated_last_line_is_not_an_event() -> None:
    got, p = _parse([b'data: {"a":1}\n\ndata: {"b":2}'])
    assert got == [{"a": 1}] and not p.done and p.pending == b'data: {"b":2}'
    got, p = _parse([b'data: {"a":1}\n\ndata: [DONE]'])
    assert got == [{"a": 1}] and not p.done


@pytest.mark.parametrize("line", [b"data: not json", b"data: [1, 2]", b"data:", b"data: 42",
                                  b'data: "text"', b"data: {unclosed"])
def test_malformed_payloads_raise_after_the_good_ones(line: bytes) -> None:
    p = SseParser()
    it = p.feed(b'data: {"ok":1}\n\n' + line + b'\n\ndata: {"ok":2}\n\n')
    assert next(it) == b'{"ok":1}'
    with pytest.raises(MalformedEvent) as info:
        next(it)
    assert isinstance(info.value, ValueError)
    assert info.value.payload == line[5:].strip()
    assert repr(line[5:].strip())[:20] in str(info.value)


@pytest.mark.parametrize("payload", [b"{not json}", b'{"a":1} {"b":2}', b"[1]", b"null", b""])
def test_loads_checks_the_payload_is_a_json_object(payload: bytes) -> None:
    with pytest.raises(MalformedEvent):
        loads(payload)
    assert loads(b' {"a": [1]} ') == {"a": [1]}


async def _chunks(parts: list[bytes], seen: list[int]) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        seen.append(i)
        yield part


def test_aiter_data_stops_at_done_or_drains() -> None:
    parts = [b'data: {"a":1}\n', b'\ndata: [DO', b'NE]\n\n', b'data: {"late":1}\n\n', b"tail"]

    async def run(drain: bool) -> tuple[list[bytes], SseParser, list[int]]:
        p, seen = SseParser(), []
        got = [x async for x in aiter_data(_chunks(parts, seen), p, drain=drain)]
        return got, p, seen

    got, p, seen = asyncio.run(run(False))
    assert got == [b'{"a":1}'] and p.done and seen == [0, 1, 2]
    got, p, seen = asyncio.run(run(True))
    assert got == [b'{"a":1}'] and p.done and seen == [0, 1, 2, 3, 4]


# ---- the readers on a real HTTP stream ------------------------------------------------------------
async def _serve(body_parts: list[bytes]) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for part in body_parts:
            await resp.write(part)
            await asyncio.sleep(0.005)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _engine_events(parts: list[bytes]) -> tuple[list[dict[str, Any]], Exception | None]:
    from cato.serving.engine_client import EngineClient

    async def run() -> tuple[list[dict[str, Any]], Exception | None]:
        runner, url = await _serve(parts)
        client = EngineClient(timeout_s=10)
        got: list[dict[str, Any]] = []
        err: Exception | None = None
        try:
            async for ev in client.stream(url, "/v1/completions", {"prompt": "x"}):
                got.append(ev.json())
        except Exception as e:   # noqa: BLE001
            err = e
        finally:
            await client.aclose()
            await runner.cleanup()
        return got, err

    return asyncio.run(run())


def test_engine_client_reads_events_cut_anywhere_until_done() -> None:
    data = _stream() + encode({"after": "done"})
    parts = [data[i:i + 7] for i in range(0, len(data), 7)]
    got, err = _engine_events(parts)
    assert err is None and got == EVENTS


def test_engine_client_names_a_malformed_event_and_a_stream_without_done() -> None:
    from cato.serving.engine_client import EngineError
    got, err = _engine_events([encode(EVENTS[0]), b"data: oops\n\n", DONE])
    assert got == [EVENTS[0]] and isinstance(err, EngineError)
    assert "sent a malformed event: b'oops'" in str(err) and err.retryable
    got, err = _engine_events([encode(EVENTS[0]), b"data: [DONE]"])   # no newline: cut
    assert got == [EVENTS[0]] and isinstance(err, EngineError)
    assert "closed the stream before it finished" in str(err)
    got, err = _engine_events([encode({"error": {"message": "boom"}}), DONE])
    assert got == [] and isinstance(err, EngineError) and "failed mid-stream: boom" in str(err)


def test_load_generator_times_the_stream_and_reports_malformed_events() -> None:
    from cato.loadgen import session, stream_request

    async def run(parts: list[bytes]) -> Any:
        runner, url = await _serve(parts)
        try:
            async with session() as s:
                return await stream_request(s, url + "/v1/completions", {"prompt": "x"})
        finally:
            await runner.cleanup()

    t = asyncio.run(run([encode(e) for e in EVENTS] + [DONE]))
    assert t.status == 200 and t.done and t.chunks == 2 and t.output_tokens == 2
    assert t.summary == {"sla_met": True} and t.ttft_s is not None and t.e2e_s is not None
    t = asyncio.run(run([encode(EVENTS[0]), b"data: [1]\n\n", DONE]))
    assert t.status == -1 and not t.done and t.chunks == 1
    assert t.error is not None and t.error.startswith("MalformedEvent: malformed event")
    t = asyncio.run(run([encode(EVENTS[0]), encode({"error": {"message": "mid"}}), DONE]))
    assert t.status == 599 and t.error == "mid" and not t.done and t.e2e_s is None
