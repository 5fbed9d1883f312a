"""CallControl: the one abort handle of a gateway call (timeouts, ejection, shutdown)."""

from __future__ import annotations

import asyncio

import pytest

from cato.gateway.control import CallControl
from cato.serving.engine_client import CallAborted, EngineError


def test_timer_aborts_and_disarming_cancels_it() -> None:
    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        fired, kept = CallControl(1), CallControl(2)
        fired.set_timer(loop.call_later(0.02, fired.abort, "timeout", "late"))
        kept.set_timer(loop.call_later(0.02, kept.abort, "timeout", "late"))
        kept.set_timer(None)           # the first token came: the SLA timer is off
        await asyncio.sleep(0.08)
        return fired.aborted, kept.aborted

    assert asyncio.run(main()) == (True, False)


def test_rearming_replaces_the_earlier_timer() -> None:
    async def main() -> str | None:
        loop = asyncio.get_running_loop()
        c = CallControl(1)
        c.set_timer(loop.call_later(0.02, c.abort, "timeout", "first"))
        c.set_timer(loop.call_later(0.05, c.abort, "shutdown", "second"))
        await asyncio.sleep(0.1)
        return c.reason

    assert asyncio.run(main()) == "second"


def test_abort_while_waiting_raises_call_aborted_not_cancelled() -> None:
    async def main() -> CallAborted:
        c = CallControl(1)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        c.wait_on(fut)
        asyncio.get_running_loop().call_later(0.01, c.abort, "timeout", "far past its SLA")
        try:
            await fut
        except asyncio.CancelledError:
            with pytest.raises(CallAborted) as info:
                c.raise_if_aborted()
            return info.value
        raise AssertionError("not interrupted")

    e = asyncio.run(main())
    assert isinstance(e, EngineError) and e.kind == "timeout" and e.code == "sla_timeout"


def test_own_cancellation_is_not_mistaken_for_an_abort() -> None:
    async def waiter(c: CallControl, fut: asyncio.Future[int]) -> str:
        try:
            await fut
        except asyncio.CancelledError:
            c.raise_if_aborted()      # the task itself is being cancelled: re-raise as is
            raise
        return "done"

    async def main() -> None:
        c = CallControl(1)
        c.abort("shutdown", "bye")    # aborted, but the task's own cancel must win
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        t = asyncio.ensure_future(waiter(c, fut))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(main())


def test_ejection_ends_an_attempt_but_a_retry_starts_clean() -> None:
    c = CallControl(1)
    c.replica = "m-0"
    c.abort_attempt("replica m-0 was ejected")
    assert c.aborted and c.kind == "ejected"
    c.reset_attempt()
    assert not c.aborted and c.replica is None
    c.abort("timeout", "late")
    c.reset_attempt()                 # a timeout is final
    assert c.aborted and c.kind == "timeout"
    c.abort_attempt("ejected later")  # does not overwrite the final reason
    assert c.reason == "late"
