"""A collector worker that ends unexpectedly asks for a clean shutdown."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from collector.lifecycle import REQUEST_STOP, request_stop, watch


class WorkerBug(BaseException):
    """Escapes the worker's `except Exception`, as a bug of that kind would."""


async def _dies() -> None:
    raise WorkerBug("boom")


async def _runs_forever() -> None:
    await asyncio.Event().wait()


async def test_an_alert_worker_that_dies_stops_the_server() -> None:
    app = web.Application()
    reasons: list[str] = []
    app[REQUEST_STOP] = reasons.append
    task = asyncio.create_task(_dies())
    with pytest.raises(WorkerBug):
        await task
    watch(app, "alert worker")(task)
    assert len(reasons) == 1
    assert "alert worker stopped" in reasons[0]
    assert "boom" in reasons[0]


async def test_a_cancelled_worker_stops_nothing() -> None:
    app = web.Application()
    reasons: list[str] = []
    app[REQUEST_STOP] = reasons.append
    task = asyncio.create_task(_runs_forever())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    watch(app, "alert worker")(task)
    assert reasons == []


def test_without_a_server_the_request_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    request_stop(web.Application(), "why")
    assert "nothing serves this app" in caplog.text
