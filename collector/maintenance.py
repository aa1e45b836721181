"""The store's upkeep worker: partitions for the coming days and retention, every hour."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from collector.handlers import STORE
from collector.lifecycle import watch
from collector.store import ReadingStore

logger = logging.getLogger(__name__)

# a day's partition is made two days ahead, so an hour between passes leaves a wide margin
INTERVAL_S = 3600.0

Sleep = Callable[[float], Awaitable[None]]


async def run_maintenance(
    store: ReadingStore, interval_s: float = INTERVAL_S, sleep: Sleep = asyncio.sleep
) -> None:
    """Maintain the store now and then every `interval_s` until cancelled; a failed pass is
    logged and tried again at the next one."""
    while True:
        try:
            await store.maintain()
        except Exception:
            logger.exception("store maintenance failed; trying again in %.0f s", interval_s)
        await sleep(interval_s)


def maintenance_context(
    interval_s: float = INTERVAL_S,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running the maintenance worker beside the app's store."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_maintenance(app[STORE], interval_s))
        task.add_done_callback(watch(app, "maintenance worker"))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return context
