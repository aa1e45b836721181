"""How a part of the running collector asks for a clean shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

logger = logging.getLogger(__name__)

# set by whoever serves the app (`python -m collector`); absent under a test client
REQUEST_STOP: web.AppKey[Callable[[str], None]] = web.AppKey("request_stop")


def request_stop(app: web.Application, reason: str) -> None:
    """Ask the server to shut down in order, saying why; logged where nobody can stop it."""
    stop = app.get(REQUEST_STOP)
    if stop is None:
        logger.error("shutdown requested (%s), but nothing serves this app to stop", reason)
        return
    logger.error("shutting down: %s", reason)
    stop(reason)


def watch(app: web.Application, name: str) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback for a worker that only ends by cancellation: anything else stops the
    server in order, saying which worker stopped and why."""

    def done(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        err = task.exception()
        logger.error("the %s stopped unexpectedly", name, exc_info=err)
        request_stop(app, f"the {name} stopped: {err!r}")

    return done
