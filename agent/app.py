"""The agent's one app factory: store, HTTP session and workers as cleanup contexts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from agent import APP_NAME, __version__
from agent.config import LiveConfig
from agent.control import Control
from agent.dashboard import DASHBOARD, setup_dashboard
from agent.keys import (
    CONFIG,
    CONTROL,
    HUB,
    LOG_FILES,
    REQUEST_STOP,
    SESSION,
    SOURCE,
    STORE,
    WORKERS,
)
from agent.sender import Sender
from agent.sensor import run_sensor
from agent.sources import Source, create_source
from agent.status import StatusHub
from agent.store import open_store

logger = logging.getLogger(__name__)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    live = app[CONFIG]
    async with open_store(live.loaded.storage_path, live.config.storage.max_pending) as store:
        app[STORE] = store
        # the counter source exists to check identity: keep the ledger of what committed
        store.keep_ledger = live.config.sensor.kind == "counter"
        problems = []
        if store.quarantined:
            problems.append(store.quarantined.describe())
        log_files = app.get(LOG_FILES)
        if log_files is not None and log_files.problem:
            problems.append(log_files.problem)
        app[HUB].set_counts(await store.counts())
        app[HUB].set_start_problem("; ".join(problems) or None)
        yield


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    headers = {"User-Agent": f"{APP_NAME}/{__version__}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        app[SESSION] = session
        yield


def _watch(app: web.Application, task: asyncio.Task[None]) -> None:
    """A worker must only end by cancellation; anything else shuts the agent down."""

    def done(t: asyncio.Task[None]) -> None:
        if t in app[WORKERS]:
            app[WORKERS].remove(t)
        if t.cancelled():
            return
        err = t.exception()
        logger.error("worker %s stopped unexpectedly", t.get_name(), exc_info=err)
        app[REQUEST_STOP](f"worker {t.get_name()} stopped: {err!r}")

    task.add_done_callback(done)


def _spawn(app: web.Application, name: str, coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro, name=name)
    app[WORKERS].append(task)
    _watch(app, task)


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    live = app[CONFIG]
    # the pause is Control's; the sender asks it before each batch
    sender = Sender(
        app[STORE], app[HUB], app[SESSION], lambda: live.config, is_paused=lambda: control.is_paused
    )
    control = Control(
        live,
        app[HUB],
        app[STORE],
        sender,
        lambda: app[REQUEST_STOP](None),
        secret=app[DASHBOARD].auth.secret,
    )
    app[CONTROL] = control
    app[WORKERS] = []
    _spawn(
        app,
        "sensor",
        run_sensor(app[SOURCE], app[STORE], app[HUB], lambda: live.config.sensor.interval_s),
    )
    _spawn(app, "sender", sender.run())
    yield
    tasks = app[WORKERS].copy()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _raise_stop(reason: str | None) -> None:
    raise SystemExit(reason)


def create_app(
    live: LiveConfig,
    source: Source | None = None,
    request_stop: Callable[[str | None], None] = _raise_stop,
) -> web.Application:
    """Build the agent: store → HTTP session → workers (with Control) → dashboard.

    The contexts unwind in reverse; the dashboard comes last because it goes through Control.
    """
    app = web.Application()
    app[CONFIG] = live
    app[HUB] = StatusHub()
    app[SOURCE] = source or create_source(live.config.sensor)
    app[REQUEST_STOP] = request_stop
    app.cleanup_ctx.extend([_store_ctx, _session_ctx, _workers_ctx])
    setup_dashboard(app, live.loaded)
    return app
