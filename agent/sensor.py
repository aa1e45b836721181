"""The sensor loop: read on a fixed cadence, commit each reading before the next read."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable

from agent.sources import Source, StatefulSource
from agent.status import LastReading, StatusHub
from agent.store import Store

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
# a source stuck on NaN would log at every tick; once a minute is enough
INVALID_LOG_EVERY_S = 60.0


class InvalidValues:
    """Counts values that cannot be sent (NaN, ±Inf) and logs them at most once a minute."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0

    def note(self, value: float, unit: str) -> None:
        """One refused value: log it now, or count it for the next log line."""
        self._unlogged += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= INVALID_LOG_EVERY_S:
            logger.error(
                "sensor gave %r %s, which cannot be sent; not stored (%d such values since "
                "the last report)",
                value,
                unit,
                self._unlogged,
            )
            self._logged_at = now
            self._unlogged = 0


def next_deadline(previous: float, interval: float, now: float) -> float:
    """The next tick on a fixed grid; ticks already missed are skipped, not bunched."""
    deadline = previous + interval
    if deadline < now:
        # a tick that falls exactly on `now` is due, not missed
        missed = math.ceil((now - deadline) / interval)
        deadline += missed * interval
    return deadline


async def record(source: Source, store: Store, hub: StatusHub, invalid: InvalidValues) -> None:
    """Read once, store durably, then tell the subscribers.

    A value that is not a finite number is refused here, counted and logged: it could
    never be sent, and one such reading would block the queue.
    """
    sample = await source.read()
    if not math.isfinite(sample.value):
        invalid.note(sample.value, sample.unit)
        hub.refuse_value()
        return
    when = dt.datetime.now(dt.UTC)
    result = await store.add(when, sample.value, sample.unit, sample.state)
    if isinstance(source, StatefulSource):
        source.restore(sample.state)
    reading = LastReading(
        seq=result.seq,
        datetime=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        value=sample.value,
        unit=sample.unit,
    )
    hub.add_reading(reading, await store.counts())


async def run_sensor(
    source: Source,
    store: Store,
    hub: StatusHub,
    interval: Callable[[], float],
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Read `source` every interval() seconds on the monotonic clock, without drift."""
    if isinstance(source, StatefulSource):
        source.restore(store.source_state)
    invalid = InvalidValues(clock)
    failing = False
    deadline = clock()
    while True:
        try:
            await record(source, store, hub, invalid)
            if failing:
                logger.info("sensor readings stored again")
                hub.set_write_problem(None)
                failing = False
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # one bad read or a full disk must not stop the loop
            if not failing:
                logger.exception("sensor reading failed; retrying at each tick")
                failing = True
                if isinstance(err, sqlite3.Error | OSError):
                    hub.set_write_problem(f"new readings cannot be stored: {err}")
        deadline = next_deadline(deadline, interval(), clock())
        await sleep(max(0.0, deadline - clock()))
