"""The sensor loop on an injected clock: a fixed grid, no drift, failures survived."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import pulse_wire as wire
from agent.sensor import next_deadline, run_sensor
from agent.sources import Counter, Sample, SourceError
from agent.status import Event, ReadingEvent, StatusHub
from agent.store import Store, open_store


@pytest.mark.parametrize(
    ("previous", "interval", "now", "expected"),
    [
        (0.0, 1.0, 0.0, 1.0),  # on time
        (0.0, 1.0, 0.7, 1.0),  # the read took a while
        (10.0, 2.5, 11.0, 12.5),
        (0.0, 1.0, 3.2, 4.0),  # three ticks missed: skipped, not bunched
        (0.0, 1.0, 1.5, 2.0),
        (100.0, 0.5, 107.3, 107.5),
        (0.0, 1.0, 1.0, 1.0),  # due right now: kept
        (0.0, 1.0, 3.0, 3.0),  # woke exactly on a later tick: that tick is due, not missed
    ],
)
def test_next_deadline(previous: float, interval: float, now: float, expected: float) -> None:
    assert next_deadline(previous, interval, now) == pytest.approx(expected)


def test_next_deadline_stays_on_the_grid() -> None:
    start, interval = 1000.0, 0.3
    deadline = start
    for now in [1000.3, 1000.65, 1002.0, 1002.1, 1010.0, 1010.61]:
        deadline = next_deadline(deadline, interval, now)
        ticks = (deadline - start) / interval
        assert ticks == pytest.approx(round(ticks))
        assert now <= deadline < now + interval + 1e-9


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, start: float = 500.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


class StopLoop(asyncio.CancelledError):
    """Raised by the fake sleep to end run_sensor after N ticks."""


class FakeSleep:
    """Records each requested delay, advances the clock by it, and stops after `ticks`."""

    def __init__(self, clock: FakeClock, ticks: int, late: dict[int, float] | None = None):
        self.clock = clock
        self.ticks = ticks
        self.late = late or {}
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.clock.now += delay + self.late.get(len(self.delays), 0.0)
        if len(self.delays) >= self.ticks:
            raise StopLoop


class ScriptedSource:
    """Returns 60, 61, ...; takes `read_time` on the clock; fails on the given reads."""

    def __init__(self, clock: FakeClock, read_time: float = 0.0, fail_on: set[int] | None = None):
        self.clock = clock
        self.read_time = read_time
        self.fail_on = fail_on or set()
        self.reads = 0
        self.read_at: list[float] = []

    async def read(self) -> Sample:
        self.reads += 1
        self.read_at.append(self.clock.now)
        self.clock.now += self.read_time
        if self.reads in self.fail_on:
            raise SourceError(f"sensor unplugged (read {self.reads})")
        return Sample(59 + self.reads, "bpm")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "queue.db", 1000) as s:
        yield s


async def stored_values(store: Store) -> list[float]:
    batch = await store.oldest(1000)
    assert batch is not None
    return [json.loads(r)["message"]["value"] for r in batch.readings_json]


async def test_run_sensor_reads_on_a_fixed_grid(store: Store) -> None:
    clock = FakeClock()
    sleep = FakeSleep(clock, ticks=5)
    source = ScriptedSource(clock, read_time=0.25)
    hub = StatusHub()
    with pytest.raises(StopLoop):
        await run_sensor(source, store, hub, lambda: 2.0, clock=clock, sleep=sleep)
    # each read takes 0.25 s of the 2 s interval; the sleep makes up the rest
    assert sleep.delays == pytest.approx([1.75] * 5)
    assert source.read_at == pytest.approx([500.0, 502.0, 504.0, 506.0, 508.0])
    assert await stored_values(store) == [60, 61, 62, 63, 64]
    assert store.pending == 5
    assert hub.status.pending == 5
    assert hub.status.last_reading is not None
    assert hub.status.last_reading.value == 64
    assert hub.status.last_reading.seq == 5


async def test_run_sensor_skips_missed_ticks_after_a_late_wake(store: Store) -> None:
    clock = FakeClock(0.0)
    # the second sleep wakes 2.5 intervals late (a laptop lid, a busy loop)
    sleep = FakeSleep(clock, ticks=4, late={2: 2.5})
    source = ScriptedSource(clock)
    with pytest.raises(StopLoop):
        await run_sensor(source, store, StatusHub(), lambda: 1.0, clock=clock, sleep=sleep)
    assert source.read_at == pytest.approx([0.0, 1.0, 4.5, 5.0])
    assert sleep.delays == pytest.approx([1.0, 1.0, 0.5, 1.0])


async def test_run_sensor_follows_a_changed_interval(store: Store) -> None:
    clock = FakeClock(0.0)
    sleep = FakeSleep(clock, ticks=4)
    intervals = iter([1.0, 1.0, 3.0, 3.0])
    source = ScriptedSource(clock)
    with pytest.raises(StopLoop):
        await run_sensor(
            source, store, StatusHub(), lambda: next(intervals), clock=clock, sleep=sleep
        )
    assert source.read_at == pytest.approx([0.0, 1.0, 2.0, 5.0])


async def test_run_sensor_publishes_each_reading(store: Store) -> None:
    clock = FakeClock()
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    with pytest.raises(StopLoop):
        await run_sensor(
            ScriptedSource(clock), store, hub, lambda: 1.0, clock=clock, sleep=FakeSleep(clock, 3)
        )
    readings = [e for e in events if isinstance(e, ReadingEvent)]
    assert [e.reading.seq for e in readings] == [1, 2, 3]
    assert [e.pending for e in readings] == [1, 2, 3]
    assert all(e.reading.unit == "bpm" for e in readings)
    assert all(e.reading.datetime.endswith("Z") for e in readings)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)


async def test_a_failing_source_is_logged_once_and_the_loop_continues(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="agent.sensor")
    clock = FakeClock()
    sleep = FakeSleep(clock, ticks=6)
    source = ScriptedSource(clock, fail_on={2, 3})
    with pytest.raises(StopLoop):
        await run_sensor(source, store, StatusHub(), lambda: 1.0, clock=clock, sleep=sleep)
    assert source.reads == 6
    assert await stored_values(store) == [60, 63, 64, 65]
    failures = [r for r in caplog.records if "sensor reading failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelname == "ERROR"
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], SourceError)
    recovered = [r for r in caplog.records if "stored again" in r.getMessage()]
    assert len(recovered) == 1
    # the failures cost no extra ticks: the grid holds
    assert sleep.delays == pytest.approx([1.0] * 6)


async def test_the_stored_readings_are_valid_wire_readings(store: Store) -> None:
    clock = FakeClock()
    with pytest.raises(StopLoop):
        await run_sensor(
            ScriptedSource(clock),
            store,
            StatusHub(),
            lambda: 1.0,
            clock=clock,
            sleep=FakeSleep(clock, 2),
        )
    batch = await store.oldest(10)
    assert batch is not None
    body = b'{"device_id":"d","stream":"%s","readings":[%s]}' % (
        store.stream_id.encode(),
        ",".join(batch.readings_json).encode(),
    )
    decoded = wire.decode_batch(body)
    assert [r.message.value for r in decoded.readings] == [60, 61]


class Values:
    """A source that returns the given values in turn."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    async def read(self) -> Sample:
        return Sample(self.values.pop(0), "bpm")


async def test_non_finite_values_are_refused_counted_and_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    source = Values([70, math.nan, math.inf, -math.inf, 71])
    hub = StatusHub()
    with pytest.raises(StopLoop):
        await run_sensor(source, store, hub, lambda: 1.0, clock=clock, sleep=FakeSleep(clock, 5))
    assert await stored_values(store) == [70, 71]
    assert hub.status.invalid_total == 3
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    # logged once, not once per value: the next report comes a minute later
    assert len(errors) == 1
    assert "nan" in errors[0].getMessage()


async def test_the_counter_continues_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    for run in range(2):
        async with open_store(path, 1000) as store:
            clock = FakeClock()
            with pytest.raises(StopLoop):
                await run_sensor(
                    Counter(),
                    store,
                    StatusHub(),
                    lambda: 1.0,
                    clock=clock,
                    sleep=FakeSleep(clock, 3),
                )
            assert await stored_values(store) == list(range(1, 4 + 3 * run))
    async with open_store(path, 1000) as store:
        assert await stored_values(store) == [1, 2, 3, 4, 5, 6]
        assert store.source_state == "6"


async def test_the_counter_does_not_advance_when_a_commit_fails(store: Store) -> None:
    counter = Counter()
    hub = StatusHub()
    real = store._db.commit
    calls = 0

    async def fail_second() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("database or disk is full")
        await real()

    store._db.commit = fail_second  # type: ignore[method-assign]
    clock = FakeClock()
    with pytest.raises(StopLoop):
        await run_sensor(counter, store, hub, lambda: 1.0, clock=clock, sleep=FakeSleep(clock, 4))
    # the failed commit took its value with it: the stored values stay 1..N without a gap
    assert await stored_values(store) == [1, 2, 3]
    batch = await store.oldest(10)
    assert batch is not None
    assert batch.seqs == [1, 2, 3]
