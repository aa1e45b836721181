"""The source runners: a polled source read on a fixed cadence, a pushing one's run loop,
both committing each reading before the next, and the supervisor that restarts either."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable

from agent.sources import PushSource, Sample, Source, SourceHealth, SourceState, StatefulSource
from agent.status import LastReading, StatusHub
from agent.store import Store

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
# a source stuck on NaN would log at every tick; once a minute is enough
INVALID_LOG_EVERY_S = 60.0
# a source task that fails is started again after a wait that grows up to this
RESTART_MIN_S, RESTART_MAX_S = 1.0, 60.0


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


async def store_sample(
    sample: Sample,
    store: Store,
    hub: StatusHub,
    invalid: InvalidValues,
    health: SourceHealth | None = None,
) -> bool:
    """Store one sample durably, then tell the subscribers; return False if it was refused.

    A value that is not a finite number is refused here, counted and logged: it could
    never be sent, and one such reading would block the queue.
    """
    if not math.isfinite(sample.value):
        invalid.note(sample.value, sample.unit)
        hub.refuse_value()
        if health is not None:
            health.count_error(f"not a finite number: {sample.value!r}")
        return False
    when = dt.datetime.now(dt.UTC)
    result = await store.add(when, sample.value, sample.unit, sample.state)
    reading = LastReading(
        seq=result.seq,
        datetime=when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        value=sample.value,
        unit=sample.unit,
    )
    hub.add_reading(reading, await store.counts())
    return True


async def record(
    source: Source,
    store: Store,
    hub: StatusHub,
    invalid: InvalidValues,
    health: SourceHealth | None = None,
) -> None:
    """Read once, store durably, then tell the subscribers."""
    sample = await source.read()
    stored = await store_sample(sample, store, hub, invalid, health)
    if stored and isinstance(source, StatefulSource):
        source.restore(sample.state)


async def run_sensor(
    source: Source,
    store: Store,
    hub: StatusHub,
    interval: Callable[[], float],
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    health: SourceHealth | None = None,
) -> None:
    """Read `source` every interval() seconds on the monotonic clock, without drift.

    `health`, if given, shows each read's outcome and counts the failed ones.
    """
    if isinstance(source, StatefulSource):
        source.restore(store.source_state)
    invalid = InvalidValues(clock)
    failing = False
    deadline = clock()
    while True:
        try:
            await record(source, store, hub, invalid, health)
            if failing:
                logger.info("sensor readings stored again")
                hub.set_write_problem(None)
                failing = False
            if health is not None:
                health.set_state(SourceState.OK)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            # one bad read or a full disk must not stop the loop
            if not failing:
                logger.exception("sensor reading failed; retrying at each tick")
                failing = True
                if isinstance(err, sqlite3.Error | OSError):
                    hub.set_write_problem(f"new readings cannot be stored: {err}")
            if health is not None:
                health.count_error(_describe(err))
                health.set_state(SourceState.ERROR, f"read failed: {_describe(err)}")
        deadline = next_deadline(deadline, interval(), clock())
        await sleep(max(0.0, deadline - clock()))


async def run_push(
    source: PushSource,
    store: Store,
    hub: StatusHub,
    health: SourceHealth,
    clock: Clock = time.monotonic,
) -> None:
    """Run a pushing source; each sample it emits is stored like a polled one."""
    invalid = InvalidValues(clock)

    async def emit(sample: Sample) -> None:
        await store_sample(sample, store, hub, invalid, health)

    await source.run(emit, health)


async def run_supervised(
    name: str,
    run: Callable[[], Awaitable[None]],
    health: SourceHealth,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> None:
    """Run `run()` until cancelled; if it fails (or ends), log it and start it again later.

    A broken source never stops the agent or the other sources; the wait grows from
    RESTART_MIN_S to RESTART_MAX_S and starts over once a run lasted longer than that.
    """
    delay = RESTART_MIN_S
    while True:
        started = clock()
        try:
            await run()
            reason = "stopped by itself"
            logger.error("source %s %s; starting it again in %.0f s", name, reason, delay)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            reason = _describe(err)
            logger.exception("source %s failed; starting it again in %.0f s", name, delay)
        health.count_error(reason)
        health.set_state(SourceState.ERROR, f"{reason}; restarting")
        if clock() - started > RESTART_MAX_S:
            delay = RESTART_MIN_S
        await sleep(delay)
        delay = min(delay * 2, RESTART_MAX_S)


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
