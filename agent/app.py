"""The agent's one app factory: stores, HTTP session and workers as cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
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
    LANES,
    LOG_FILES,
    REQUEST_STOP,
    SESSION,
    SOURCE,
    STORE,
    STORES,
    TOTALS,
    WORKERS,
)
from agent.lanes import Lane, Totals, config_for, create_lane_source, lane_specs
from agent.memory import run_trim
from agent.metrics import METRICS, add_metrics
from agent.sender import Sender
from agent.sources import Source
from agent.status import StatusHub
from agent.store import open_store

logger = logging.getLogger(__name__)

# how long the agent's exit waits for the Home Assistant bridge to say offline and go
HOMEASSISTANT_STOP_S = 5.0


def _primary(app: web.Application) -> int:
    """The lane whose queue is storage.path (the agent's own device id), else the first."""
    loaded = app[CONFIG].loaded
    paths = [spec.path for spec in lane_specs(loaded)]
    return paths.index(loaded.storage_path) if loaded.storage_path in paths else 0


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    live = app[CONFIG]
    specs = lane_specs(live.loaded)
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for spec in specs:
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            store = await stack.enter_async_context(
                open_store(spec.path, live.config.storage.max_pending)
            )
            # the counter source exists to check identity: keep the ledger of what committed
            store.keep_ledger = spec.kind == "counter"
            stores.append(store)
        app[STORES] = stores
        app[STORE] = stores[_primary(app)]
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


async def _create_lanes(app: web.Application, is_paused: Callable[[], bool]) -> list[Lane]:
    """One lane per source, over the stores the store context opened."""
    live = app[CONFIG]
    specs = lane_specs(live.loaded)
    primary = _primary(app)
    stores = app[STORES]
    lanes = []
    for i, (spec, store) in enumerate(zip(specs, stores, strict=True)):
        hub = StatusHub()
        get_config = config_for(lambda: live.config, spec.device_id)
        # a source of its own device id is relayed: the server learns the hub it came by
        relay_for = (lambda: live.config.effective_device_id) if spec.device_id else None
        sender = Sender(
            store, hub, app[SESSION], get_config, is_paused=is_paused, relay_for=relay_for
        )
        given = app.get(SOURCE) if i == primary else None
        source = given or create_lane_source(spec, live.config)
        hub.set_counts(await store.counts())
        if store.quarantined:
            hub.set_start_problem(store.quarantined.describe())
        lanes.append(Lane(spec, source, store, hub, sender, get_config))
    return lanes


async def _workers_ctx(app: web.Application) -> AsyncIterator[None]:
    live = app[CONFIG]
    # the pause is Control's; each sender asks it before each batch
    lanes = await _create_lanes(app, lambda: control.is_paused)
    log_files = app.get(LOG_FILES)
    totals = Totals(app[HUB], lanes, log_files.problem if log_files is not None else None)
    app[LANES], app[TOTALS] = lanes, totals
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.sources = totals.counts
    primary = lanes[_primary(app)]
    control = Control(
        live,
        app[HUB],
        primary.store,
        primary.sender,
        lambda: app[REQUEST_STOP](None),
        secret=app[DASHBOARD].auth.secret,
        lanes=lanes,
    )
    app[CONTROL] = control
    app[WORKERS] = []
    for i, lane in enumerate(lanes):
        # a source restarts itself after a failure; a sender that dies stops the agent
        _spawn(app, f"source-{i}" if len(lanes) > 1 else "sensor", lane.run())
        _spawn(app, f"sender-{i}" if len(lanes) > 1 else "sender", lane.sender.run())
    _spawn(app, "trim", run_trim())
    yield
    tasks = app[WORKERS].copy()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    totals.close()


async def _homeassistant_ctx(app: web.Application) -> AsyncIterator[None]:
    """With homeassistant.enabled: announce the hub and its sources, and feed their values."""
    config = app[CONFIG].config
    if not config.homeassistant.enabled:
        yield
        return
    # imported here: an agent that does not announce never loads the MQTT client
    from agent.announcer import create_bridge, run_announcer

    bridge = create_bridge(config)
    # the bridge reconnects on its own and never ends but by cancellation: not a worker that
    # stops the agent, Home Assistant being optional
    tasks = [
        asyncio.create_task(bridge.run(), name="homeassistant"),
        asyncio.create_task(
            run_announcer(bridge, app[HUB], config.effective_device_id), name="announcer"
        ),
    ]
    yield
    for task in tasks:
        task.cancel()
    # bounded: Home Assistant is optional, and a broker that never lets the MQTT client go
    # must not hold the agent's exit (the last will tells Home Assistant it is offline)
    done, pending = await asyncio.wait(tasks, timeout=HOMEASSISTANT_STOP_S)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s ended with %r", task.get_name(), task.exception())
    if pending:
        names = ", ".join(task.get_name() for task in pending)
        logger.warning(
            "Home Assistant (%s) did not stop within %.0f s", names, HOMEASSISTANT_STOP_S
        )


def _raise_stop(reason: str | None) -> None:
    raise SystemExit(reason)


def create_app(
    live: LiveConfig,
    source: Source | None = None,
    request_stop: Callable[[str | None], None] = _raise_stop,
) -> web.Application:
    """Build the agent: stores → HTTP session → workers (with Control) → dashboard.

    `source`, if given, replaces the primary source (the legacy sensor). The contexts
    unwind in reverse; the dashboard comes last because it goes through Control.
    """
    app = web.Application()
    app[CONFIG] = live
    app[HUB] = StatusHub()
    if source is not None:
        app[SOURCE] = source
    app[REQUEST_STOP] = request_stop
    app.cleanup_ctx.extend([_store_ctx, _session_ctx, _workers_ctx, _homeassistant_ctx])
    setup_dashboard(app, live.loaded)
    # on the dashboard's port, read-only like its other GETs: the security layer needs no unlock
    add_metrics(app, app[HUB])
    return app
