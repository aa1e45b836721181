"""The alert worker and its place in the collector's lifecycle (a cleanup context)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from collector.alerts.engine import AlertEngine
from collector.alerts.evaluation import Outcome
from collector.alerts.notify import MISSING, Notifier
from collector.alerts.rules import Channel
from collector.alerts.store import AlertStore
from collector.config import CollectorConfig
from collector.lifecycle import watch
from collector.live import LIVE, LiveHub
from collector.store import Clock

logger = logging.getLogger(__name__)

ALERTS: web.AppKey[AlertEngine] = web.AppKey("alerts")
Lead = Callable[[], Coroutine[Any, Any, None]]
Sleep = Callable[[float], Awaitable[None]]


async def run_alerts(
    engine: AlertEngine,
    interval_s: float,
    sleep: Sleep = asyncio.sleep,
    on_change: Callable[[], None] = lambda: None,
) -> None:
    """Evaluate and notify every `interval_s` until cancelled; a failed step is logged.
    `on_change` is called after each evaluation that moved or updated an alert (pages
    refresh then)."""
    failing = False
    while True:
        try:
            outcome = await _finish(engine.step())
            # a firing alert's new value changes the page too, not only a new state
            if outcome.transitions or outcome.changed:
                on_change()
        except Exception:
            # logged in full once, then briefly until a step succeeds again
            if not failing:
                logger.exception("alert evaluation failed; retrying every %.1f s", interval_s)
            failing = True
        else:
            if failing:
                logger.info("alert evaluation works again")
            failing = False
        await sleep(interval_s)


async def _finish(step: Coroutine[Any, Any, Outcome]) -> Outcome:
    """Run one step to its end even when cancelled meanwhile, then pass the cancellation on.

    A notice leaves the outbox only after its channel took it: stopping in between would
    have the next leader (or this process after a restart) send it again.
    """
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await task
        except Exception:
            logger.exception("the last alert evaluation failed")
        raise


def announce_change(live: LiveHub) -> None:
    """Tell the pages' websockets that alerts, rules or channels changed: they refetch."""
    live.publish({"type": "alerts"})


def _check_apprise() -> None:
    """Say at start, once, that notifications will fail without Apprise; run all the same."""
    # only looked for, not imported: loading its plugins imports much (gi, for dbus), and a
    # server that never sends a notification should not pay for it
    try:
        found = importlib.util.find_spec("apprise") is not None
    except ImportError:
        found = False
    if not found:
        logger.warning("alerts are evaluated, but no notification can be sent: %s", MISSING)


def _run_worker(config: CollectorConfig, evaluate: Lead) -> Coroutine[Any, Any, None]:
    """On PostgreSQL, several processes may share the database: evaluate only while leading.
    On SQLite there is one process, which evaluates all along."""
    if not config.database_url:
        return evaluate()
    # imported here: a SQLite-only install needs no PostgreSQL driver
    from collector.alerts.leader import AdvisoryLock, run_leadership

    return run_leadership(AdvisoryLock(config.database_url), evaluate)


def alerts_context(
    config: CollectorConfig, clock: Clock
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the alert store opened and seeded, the worker run, both ended."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        _check_apprise()
        store = await AlertStore.open(db=config.db, database_url=config.database_url)
        try:
            channels = [Channel(name=n, urls=u) for n, u in config.alerts.channels.items()]
            await store.seed(config.alerts.rules, channels)
            notifier = Notifier()
            # the API's engine: acknowledgements, silences and test sends work on every process
            app[ALERTS] = AlertEngine(store, notifier, clock)
            live = app[LIVE]

            def evaluate() -> Coroutine[Any, Any, None]:
                # a fresh engine per term of leadership: its cache of each device's last
                # receipt missed what another leader evaluated in between
                engine = AlertEngine(store, notifier, clock)
                interval = config.alerts.interval_s
                return run_alerts(engine, interval, on_change=lambda: announce_change(live))

            task = asyncio.create_task(_run_worker(config, evaluate))
            task.add_done_callback(watch(app, "alert worker"))
            logger.info(
                "alerts: %d rules, every %.1f s", len(await store.rules()), config.alerts.interval_s
            )
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await store.close()

    return context
