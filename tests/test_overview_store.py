"""The stores' per-stream summaries and the overview's queries, on SQLite and PostgreSQL.

Every summary is checked against the aggregate over the readings themselves (the SQL that
devices() ran before the summaries existed), after duplicates, conflicts, gap fills, a
database written by the version 1 code, and concurrent overlapping batches on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import pulse_wire as wire
from collector.store import DEVICES_FROM_READINGS, SCHEMA_VERSION, ReadingStore, summarize
from collector.store_postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION
from collector.store_postgres import PostgresStore
from collector.store_sqlite import SqliteStore
from tests.test_collector_postgres import postgres_schema

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
STREAM = "s1"


class Clock:
    """A settable clock: receipts and "now" are known to the test."""

    def __init__(self, now: dt.datetime = NOW):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def rid(device: str, stream: str, seq: int) -> uuid.UUID:
    """The one id a (device, stream, seq) has in these tests: resending it is a duplicate."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{device}/{stream}/{seq}")


def batch(
    device: str, seqs: list[int], stream: str = STREAM, when: dt.datetime | None = None
) -> wire.Batch:
    at = when or NOW - dt.timedelta(minutes=1)
    readings = [
        wire.Reading(rid(device, stream, s), s, at, wire.Message(60.0 + s % 50)) for s in seqs
    ]
    return wire.Batch(device, stream, readings)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres"])
async def opened(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[tuple[ReadingStore, str]]:
    """A fresh store on each backend, and its file path or URL."""
    store: ReadingStore
    if request.param == "sqlite":
        path = tmp_path / "collector.db"
        store = await SqliteStore.open(path, clock=clock)
        yield store, str(path)
        await store.close()
        return
    async with postgres_schema() as url:
        store = await PostgresStore.open(url, clock=clock)
        yield store, url
        await store.close()


@pytest.fixture
def store(opened: tuple[ReadingStore, str]) -> ReadingStore:
    return opened[0]


async def aggregate(where: str) -> list[Any]:
    """DeviceSummaries computed from the readings themselves, in the file or database `where`."""
    if where.startswith("postgresql://"):
        conn = await asyncpg.connect(where)
        try:
            rows = [tuple(r) for r in await conn.fetch(DEVICES_FROM_READINGS)]
        finally:
            await conn.close()
        return summarize([(*r[:5], r[5].astimezone(UTC)) for r in rows])
    with sqlite3.connect(where) as db:
        rows = db.execute(DEVICES_FROM_READINGS).fetchall()
    return summarize([(*r[:5], dt.datetime.fromisoformat(r[5])) for r in rows])


async def test_summaries_equal_the_aggregate_after_every_kind_of_batch(
    opened: tuple[ReadingStore, str], clock: Clock
) -> None:
    store, where = opened
    assert (await store.store_batch(batch("dev-a", [5, 6, 7, 10]))).accepted == 4
    clock.now += dt.timedelta(seconds=30)
    # a gap filled below the last seq, with duplicates mixed in
    ack = await store.store_batch(batch("dev-a", [6, 7, 8, 9]))
    assert (ack.accepted, ack.duplicates) == (2, 2)
    clock.now += dt.timedelta(seconds=30)
    # a seq conflict and a fresh reading below first_seq; the conflict must not count
    moved = wire.Reading(uuid.uuid4(), 10, NOW, wire.Message(70.0))
    fresh = batch("dev-a", [2]).readings
    ack = await store.store_batch(wire.Batch("dev-a", STREAM, [moved, *fresh]))
    assert (ack.accepted, len(ack.rejected)) == (1, 1)
    # a batch wholly duplicate leaves last_seen where it was
    clock.now += dt.timedelta(seconds=30)
    assert (await store.store_batch(batch("dev-a", [2, 5]))).duplicates == 2
    seen = await store.device("dev-a")
    assert seen is not None
    assert seen.last_seen == NOW + dt.timedelta(seconds=60)
    # another stream and device; an implausible reading is refused and not counted
    bad = wire.Reading(uuid.uuid4(), 1, NOW, wire.Message(9999.0))
    await store.store_batch(wire.Batch("dev-b", "s2", [bad, *batch("dev-b", [1], "s2").readings]))
    await store.store_batch(batch("dev-a", [1, 3], stream="s0"))
    got = await store.devices()
    assert got == await aggregate(where)
    (a, b) = got
    assert [(s.stream, s.first_seq, s.last_seq, s.count, s.missing) for s in a.streams] == [
        ("s0", 1, 3, 2, 1),
        (STREAM, 2, 10, 7, 3),
    ]
    assert a.last_seen == NOW + dt.timedelta(seconds=90)
    assert (b.device_id, b.count) == ("dev-b", 1)
    assert await store.device("dev-a") == a
    assert await store.device("nobody") is None


async def test_concurrent_overlapping_batches_on_postgres_keep_exact_counts(
    clock: Clock,
) -> None:
    """Four collectors post overlapping batches of one stream at once; no count is lost."""
    async with postgres_schema() as url:
        collectors = [await PostgresStore.open(url, clock=clock) for _ in range(4)]
        try:
            rng = random.Random(20261201)
            batches = []
            for i in range(60):
                low = rng.randrange(1, 400)
                seqs = list(range(low, low + rng.randrange(1, 80)))
                readings = batch("dev", seqs).readings
                if i % 7 == 0:  # a seq conflict now and then: rejected by whoever is second
                    readings.append(wire.Reading(uuid.uuid4(), low, NOW, wire.Message(61.0)))
                batches.append(wire.Batch("dev", STREAM, readings))
            acks = await asyncio.gather(
                *(collectors[i % 4].store_batch(b) for i, b in enumerate(batches))
            )
            (device,) = await collectors[0].devices()
            assert [device] == await aggregate(url)
            assert device.count == sum(a.accepted for a in acks)
        finally:
            for collector in collectors:
                await collector.close()


V1_SQLITE = """
CREATE TABLE readings (
    device_id TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,
    id BLOB NOT NULL UNIQUE, datetime TEXT NOT NULL, value REAL NOT NULL,
    unit TEXT NOT NULL, received_at TEXT NOT NULL,
    PRIMARY KEY (device_id, stream, seq)
) STRICT, WITHOUT ROWID;
PRAGMA user_version = 1;
"""

V1_POSTGRES = """
CREATE TABLE collector_schema (version integer NOT NULL);
CREATE TABLE readings (
    device_id text NOT NULL, stream text NOT NULL, seq bigint NOT NULL, id uuid NOT NULL UNIQUE,
    datetime timestamptz NOT NULL, value double precision NOT NULL, unit text NOT NULL,
    received_at timestamptz NOT NULL, PRIMARY KEY (device_id, stream, seq)
);
INSERT INTO collector_schema (version) VALUES (1);
"""

# what a version 1 collector wrote: (device, stream, seq, received seconds after NOW)
V1_ROWS = [("d1", "s", 1, 0), ("d1", "s", 2, 5), ("d1", "s", 6, 3), ("d1", "t", 3, 9)] + [
    ("d2", "s", seq, seq) for seq in range(4, 40, 3)
]


def _v1_values(row: tuple[str, str, int, int]) -> tuple[Any, ...]:
    device, stream, seq, after = row
    return (device, stream, seq, rid(device, stream, seq), NOW, 70.0, "bpm", after)


async def test_a_version_1_sqlite_file_gets_correct_summaries(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SQLITE)
        for row in V1_ROWS:
            device, stream, seq, rid_, when, value, unit, after = _v1_values(row)
            received = (NOW + dt.timedelta(seconds=after)).isoformat(timespec="microseconds")
            db.execute(
                "INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device, stream, seq, rid_.bytes, "2026-06-01T12:00:00Z", value, unit, received),
            )
    store = await SqliteStore.open(path, clock=Clock(NOW + dt.timedelta(minutes=1)))
    try:
        _check_v1(await store.devices())
        await store.store_batch(batch("d1", [7]))
        assert await store.devices() == await aggregate(str(path))
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


async def test_a_version_1_postgres_database_gets_correct_summaries() -> None:
    async with postgres_schema() as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(V1_POSTGRES)
            for row in V1_ROWS:
                values = list(_v1_values(row))
                values[7] = NOW + dt.timedelta(seconds=values[7])
                await conn.execute(
                    "INSERT INTO readings VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", *values
                )
        finally:
            await conn.close()
        store = await PostgresStore.open(url, clock=Clock(NOW + dt.timedelta(minutes=1)))
        try:
            _check_v1(await store.devices())
            await store.store_batch(batch("d1", [7]))
            assert await store.devices() == await aggregate(url)
        finally:
            await store.close()
        conn = await asyncpg.connect(url)
        try:
            version = await conn.fetchval("SELECT version FROM collector_schema")
            assert version == PG_SCHEMA_VERSION == 3
        finally:
            await conn.close()


def _check_v1(devices: list[Any]) -> None:
    d1, d2 = devices
    assert [(s.stream, s.first_seq, s.last_seq, s.count) for s in d1.streams] == [
        ("s", 1, 6, 3),
        ("t", 3, 3, 1),
    ]
    assert d1.last_seen == NOW + dt.timedelta(seconds=9)
    assert (d2.count, d2.streams[0].last_seq, d2.streams[0].missing) == (12, 37, 25)
    assert d2.last_seen == NOW + dt.timedelta(seconds=37)


async def test_pages_and_search_are_cut_in_sql(store: ReadingStore) -> None:
    names = [f"dev-{i:02}" for i in range(12)] + ["a%b", "a_b", "axb", "A\\B", "Kitchen"]
    for name in names:
        await store.store_batch(batch(name, [1, 3]))
    everything = sorted(names)
    page = await store.device_page(None, 0, 5)
    assert (page.total, [d.device_id for d in page.devices]) == (17, everything[:5])
    page = await store.device_page(None, 15, 5)
    assert [d.device_id for d in page.devices] == everything[15:]
    assert (page.devices[0].count, page.devices[0].streams[0].missing) == (2, 1)
    assert (await store.device_page(None, 17, 5)).devices == []

    async def found(search: str) -> list[str]:
        page = await store.device_page(search, 0, 200)
        assert page.total == len(page.devices)
        return [d.device_id for d in page.devices]

    assert await found("%") == ["a%b"]
    assert await found("_") == ["a_b"]
    assert await found("\\") == ["A\\B"]
    assert await found("a\\b") == ["A\\B"]
    assert await found("DEV-0") == [f"dev-{i:02}" for i in range(10)]
    assert await found("kitch") == ["Kitchen"]
    assert await found("nothing") == []
    page = await store.device_page("dev", 10, 5)
    assert (page.total, [d.device_id for d in page.devices]) == (12, ["dev-10", "dev-11"])


async def test_activity_buckets_and_recent_counts_reading_by_reading(
    store: ReadingStore,
) -> None:
    start, end = NOW - dt.timedelta(hours=1), NOW
    recent = NOW - dt.timedelta(minutes=5)
    rng = random.Random(7)
    stored: dict[str, list[tuple[dt.datetime, float]]] = {"x": [], "y": []}
    for device, readings in stored.items():
        for seq in range(1, 301):
            # some before the hour, some exactly on edges, some in the future
            when = start + dt.timedelta(microseconds=rng.randrange(-600_000_000, 3_700_000_000))
            if seq % 50 == 0:
                when = recent
            readings.append((when, round(rng.uniform(40, 200), 2)))
        body = [
            wire.Reading(uuid.uuid4(), seq, when, wire.Message(value))
            for seq, (when, value) in enumerate(readings, start=1)
        ]
        assert (await store.store_batch(wire.Batch(device, STREAM, body))).accepted == 300
    got = await store.activity(["x", "y", "nobody"], start, end, 30, recent)
    assert sorted(got) == ["x", "y"]
    width = dt.timedelta(minutes=2)
    for device, readings in stored.items():
        inside = [(w, v) for w, v in readings if start <= w < end]
        want: dict[dt.datetime, list[float]] = {}
        for when, value in inside:
            want.setdefault(start + (when - start) // width * width, []).append(value)
        points = got[device].points
        assert [p.t for p in points] == sorted(want)
        for p in points:
            values = want[p.t]
            assert (p.min, p.max, p.count) == (min(values), max(values), len(values))
            assert p.avg == pytest.approx(sum(values) / len(values), rel=1e-12)
        assert got[device].recent == sum(1 for w, _ in inside if w >= recent)


async def test_gaps_are_the_missing_runs_from_seq_1(store: ReadingStore) -> None:
    await store.store_batch(batch("g", [3, 4, 8, 10, 11, 15]))
    assert await store.gaps("g", STREAM, 100) == [(1, 2), (5, 7), (9, 9), (12, 14)]
    assert await store.gaps("g", STREAM, 2) == [(1, 2), (5, 7)]
    await store.store_batch(batch("h", list(range(1, 6))))
    assert await store.gaps("h", STREAM, 100) == []
    assert await store.gaps("nobody", STREAM, 100) == []
