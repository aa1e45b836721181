"""The collector's reading store, the same behaviour on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import pulse_wire as wire
from collector.store import SCHEMA_VERSION, ReadingStore, StoreError
from collector.store_postgres import PostgresStore
from collector.store_sqlite import SqliteStore
from tests.test_collector_postgres import postgres_schema

NOW = dt.datetime(2026, 11, 26, 23, 0, tzinfo=dt.UTC)
STREAM = "stream-a"


class Clock:
    """A settable clock, so received_at and the future check are known to the test."""

    def __init__(self, now: dt.datetime = NOW):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[ReadingStore]:
    s: ReadingStore
    if request.param == "sqlite":
        s = await SqliteStore.open(tmp_path / "data" / "collector.db", clock=clock)
        try:
            yield s
        finally:
            await s.close()
        return
    async with postgres_schema() as url:
        s = await PostgresStore.open(url, clock=clock)
        try:
            yield s
        finally:
            await s.close()


def rid(n: int) -> uuid.UUID:
    return uuid.UUID(f"01900000-0000-7000-8000-{n:012x}")


def make(
    seq: int,
    *,
    value: float = 72,
    unit: str = "bpm",
    when: dt.datetime | None = None,
    id_: uuid.UUID | None = None,
) -> wire.Reading:
    return wire.Reading(
        id=id_ or rid(seq),
        seq=seq,
        datetime=when or NOW - dt.timedelta(seconds=100 - seq),
        message=wire.Message(value=value, unit=unit),
    )


def batch(readings: list[wire.Reading], device: str = "dev-1", stream: str = STREAM) -> wire.Batch:
    return wire.Batch(device_id=device, stream=stream, readings=readings)


def seqs(n: int, start: int = 1) -> list[wire.Reading]:
    return [make(s) for s in range(start, start + n)]


async def test_new_readings_are_accepted_and_read_back(store: ReadingStore) -> None:
    sent = [make(1, value=61), make(2, value=62.5), make(3, value=63)]
    ack = await store.store_batch(batch(sent))
    assert ack == wire.Ack(accepted=3, duplicates=0, rejected=[])
    got = await store.readings("dev-1", None, 100, None)
    assert [(r.stream, r.seq, r.id, r.datetime) for r in got] == [
        (STREAM, s.seq, s.id, s.datetime) for s in sent
    ]
    assert [r.message.value for r in got] == [61, 62.5, 63]
    assert {r.message.unit for r in got} == {"bpm"}


async def test_resent_batch_is_all_duplicates(store: ReadingStore) -> None:
    b = batch(seqs(5))
    assert await store.store_batch(b) == wire.Ack(accepted=5, duplicates=0)
    assert await store.store_batch(b) == wire.Ack(accepted=0, duplicates=5)
    assert len(await store.readings("dev-1", None, 100, None)) == 5


async def test_overlapping_batch_counts_only_new_rows(store: ReadingStore) -> None:
    await store.store_batch(batch(seqs(3)))
    ack = await store.store_batch(batch(seqs(4, start=2)))
    assert (ack.accepted, ack.duplicates) == (2, 2)
    got = await store.readings("dev-1", None, 100, None)
    assert [r.seq for r in got] == [1, 2, 3, 4, 5]


def seq_conflict(seq: int, stored: uuid.UUID, sent: uuid.UUID, stream: str = STREAM) -> str:
    return (
        f"seq {seq} of stream {stream} already holds reading {stored}; "
        f"this reading has id {sent} (seq conflict)"
    )


def id_conflict(
    id_: uuid.UUID, seq: int, sent_seq: int, stream: str = STREAM, device: str = "dev-1"
) -> str:
    return (
        f"id {id_} is already stored as seq {seq} of stream {stream} of device {device}; "
        f"this reading has seq {sent_seq} (id conflict)"
    )


async def stored_rows(store: ReadingStore, device: str = "dev-1") -> list[tuple[object, ...]]:
    got = await store.readings(device, None, 10_000, None)
    return [(r.stream, r.seq, r.id, r.datetime, r.message.value) for r in got]


async def test_known_seq_with_another_id_is_a_seq_conflict(store: ReadingStore) -> None:
    first = make(1, value=60)
    await store.store_batch(batch([first]))
    before = await stored_rows(store)
    other = make(1, value=90, id_=rid(99), when=NOW - dt.timedelta(seconds=5))
    ack = await store.store_batch(batch([other]))
    # the agent deletes what an ack covers: a different reading must never count as delivered
    assert ack == wire.Ack(
        accepted=0,
        duplicates=0,
        rejected=[wire.Rejection(str(rid(99)), seq_conflict(1, rid(1), rid(99)))],
    )
    assert await stored_rows(store) == before
    assert before == [(STREAM, 1, rid(1), first.datetime, 60)]


async def test_known_id_under_another_seq_is_an_id_conflict(store: ReadingStore) -> None:
    await store.store_batch(batch([make(1)]))
    ack = await store.store_batch(batch([make(7, id_=rid(1))]))
    assert ack == wire.Ack(
        accepted=0,
        duplicates=0,
        rejected=[wire.Rejection(str(rid(1)), id_conflict(rid(1), 1, 7))],
    )
    got = await store.readings("dev-1", None, 100, None)
    assert [(r.seq, r.id) for r in got] == [(1, rid(1))]


async def test_known_id_in_another_device_is_an_id_conflict(store: ReadingStore) -> None:
    await store.store_batch(batch([make(3)], device="dev-2", stream="b"))
    ack = await store.store_batch(batch([make(3)]))
    assert (ack.accepted, ack.duplicates) == (0, 0)
    assert [r.error for r in ack.rejected] == [id_conflict(rid(3), 3, 3, "b", "dev-2")]
    assert await store.readings("dev-1", None, 100, None) == []


async def test_repeated_reading_within_a_batch_is_a_duplicate(store: ReadingStore) -> None:
    ack = await store.store_batch(batch([make(1), make(2), make(1)]))
    assert ack == wire.Ack(accepted=2, duplicates=1, rejected=[])
    assert [r.seq for r in await store.readings("dev-1", None, 100, None)] == [1, 2]


async def test_repeated_id_within_a_batch_is_an_id_conflict(store: ReadingStore) -> None:
    ack = await store.store_batch(batch([make(1), make(2, id_=rid(1)), make(3)]))
    assert (ack.accepted, ack.duplicates) == (2, 0)
    assert ack.rejected == [wire.Rejection(str(rid(1)), id_conflict(rid(1), 1, 2))]
    got = await store.readings("dev-1", None, 100, None)
    assert [(r.seq, r.id) for r in got] == [(1, rid(1)), (3, rid(3))]


async def test_repeated_seq_within_a_batch_is_a_seq_conflict(store: ReadingStore) -> None:
    ack = await store.store_batch(batch([make(1, value=60), make(1, value=90, id_=rid(50))]))
    assert (ack.accepted, ack.duplicates) == (1, 0)
    assert ack.rejected == [wire.Rejection(str(rid(50)), seq_conflict(1, rid(1), rid(50)))]
    got = await store.readings("dev-1", None, 100, None)
    assert [(r.seq, r.id, r.message.value) for r in got] == [(1, rid(1), 60)]


async def test_mixed_batch_counts_every_reading_exactly(store: ReadingStore) -> None:
    await store.store_batch(batch(seqs(5)))
    await store.store_batch(batch([make(1, id_=rid(500))], stream="b"))
    sent = [
        make(1),  # stored: duplicate
        make(6),  # new
        make(3, id_=rid(300)),  # seq 3 holds rid(3): seq conflict
        make(2),  # stored: duplicate
        make(7, value=1000),  # implausible
        make(8, id_=rid(4)),  # rid(4) is seq 4: id conflict
        make(9),  # new
        make(9, id_=rid(900)),  # seq 9 taken earlier in this batch: seq conflict
        make(6),  # earlier in this batch: duplicate
        make(10, id_=rid(500)),  # rid(500) is seq 1 of stream b: id conflict
        make(11, when=NOW + dt.timedelta(days=2)),  # implausible
        make(12),  # new
    ]
    ack = await store.store_batch(batch(sent))
    assert (ack.accepted, ack.duplicates) == (3, 3)
    assert ack.accepted + ack.duplicates + len(ack.rejected) == len(sent)
    assert [r.id for r in ack.rejected] == [
        str(i) for i in (rid(300), rid(7), rid(4), rid(900), rid(500), rid(11))
    ]
    errors = [r.error for r in ack.rejected]
    assert errors[0] == seq_conflict(3, rid(3), rid(300))
    assert "outside 1..400" in errors[1]
    assert errors[2] == id_conflict(rid(4), 4, 8)
    assert errors[3] == seq_conflict(9, rid(9), rid(900))
    assert errors[4] == id_conflict(rid(500), 1, 10, stream="b")
    assert "future" in errors[5]
    got = await store.readings("dev-1", None, 100, STREAM)
    assert [(r.seq, r.id) for r in got] == [(s, rid(s)) for s in (1, 2, 3, 4, 5, 6, 9, 12)]


async def test_conflicts_are_found_in_a_large_resent_batch(store: ReadingStore) -> None:
    await store.store_batch(batch(seqs(1200)))
    resent = [*seqs(1200), make(1201)]
    resent[1149] = make(1150, id_=rid(5000))
    resent[3] = make(4, id_=rid(1100))
    ack = await store.store_batch(batch(resent))
    assert (ack.accepted, ack.duplicates) == (1, 1198)
    assert ack.rejected == [
        wire.Rejection(str(rid(1100)), seq_conflict(4, rid(4), rid(1100))),
        wire.Rejection(str(rid(5000)), seq_conflict(1150, rid(1150), rid(5000))),
    ]
    got = await store.readings("dev-1", None, 10_000, None)
    assert [(r.seq, r.id) for r in got] == [(s, rid(s)) for s in range(1, 1202)]


async def test_a_sparse_batch_is_settled_seq_by_seq(store: ReadingStore) -> None:
    # seqs this far apart are looked up one by one, not as one range
    await store.store_batch(batch([make(s) for s in (1, 1000, 5000)]))
    sent = [make(1), make(1000, id_=rid(77)), make(5000), make(9000), make(9999, id_=rid(1))]
    ack = await store.store_batch(batch(sent))
    assert (ack.accepted, ack.duplicates) == (1, 2)
    assert ack.rejected == [
        wire.Rejection(str(rid(77)), seq_conflict(1000, rid(1000), rid(77))),
        wire.Rejection(str(rid(1)), id_conflict(rid(1), 1, 9999)),
    ]
    got = await store.readings("dev-1", None, 100, None)
    assert [(r.seq, r.id) for r in got] == [(s, rid(s)) for s in (1, 1000, 5000, 9000)]


async def test_many_id_conflicts_in_one_batch(store: ReadingStore) -> None:
    await store.store_batch(batch(seqs(1200)))
    moved = [make(2000 + n, id_=rid(n)) for n in range(1, 1201)]
    ack = await store.store_batch(batch(moved, stream="b"))
    assert (ack.accepted, ack.duplicates) == (0, 0)
    assert [r.error for r in ack.rejected] == [
        id_conflict(rid(n), n, 2000 + n) for n in range(1, 1201)
    ]
    assert await store.readings("dev-1", None, 100, "b") == []


async def test_same_seq_in_another_stream_or_device_is_new(store: ReadingStore) -> None:
    await store.store_batch(batch([make(1)]))
    assert (await store.store_batch(batch([make(1, id_=rid(2))], stream="b"))).accepted == 1
    assert (await store.store_batch(batch([make(1, id_=rid(3))], device="dev-2"))).accepted == 1
    assert len(await store.readings("dev-1", None, 100, None)) == 2
    assert len(await store.readings("dev-2", None, 100, None)) == 1


async def test_implausible_readings_are_rejected_not_the_batch(store: ReadingStore) -> None:
    day = dt.timedelta(hours=24)
    sent = [
        make(1, value=0),
        make(2, value=1),
        make(3, value=400),
        make(4, value=401),
        make(5, value=math.nan),
        make(6, value=math.inf),
        make(7, value=-math.inf, unit="mmHg"),
        make(8, value=1e9, unit="mmHg"),
        make(9, when=NOW + day),
        make(10, when=NOW + day + dt.timedelta(seconds=1)),
        make(11, value=2**70, unit="steps"),
        make(12, value=10**400, unit="steps"),
    ]
    ack = await store.store_batch(batch(sent))
    rejected = {r.id: r.error for r in ack.rejected}
    assert list(rejected) == [str(rid(n)) for n in (1, 4, 5, 6, 7, 10, 12)]
    assert "outside 1..400" in rejected[str(rid(1))]
    assert "'bpm'" in rejected[str(rid(4))]
    assert "not a finite number" in rejected[str(rid(5))]
    assert "not a finite number" in rejected[str(rid(7))]
    assert "future" in rejected[str(rid(10))]
    assert rejected[str(rid(12))].startswith("value 100000000000000000000... is")
    assert "too large" in rejected[str(rid(12))]
    assert (ack.accepted, ack.duplicates) == (5, 0)
    got = await store.readings("dev-1", None, 100, None)
    assert [r.seq for r in got] == [2, 3, 8, 9, 11]
    assert got[-1].message.value == float(2**70)


async def test_a_single_future_reading_is_rejected(store: ReadingStore, clock: Clock) -> None:
    future = NOW + dt.timedelta(hours=25)
    ack = await store.store_batch(batch([make(1), make(2, when=future), make(3)]))
    assert (ack.accepted, [r.id for r in ack.rejected]) == (2, [str(rid(2))])
    assert "2026-11-28T00:00:00+00:00 is more than 24 h in the future" in ack.rejected[0].error
    clock.now = NOW + dt.timedelta(hours=2)  # the collector's clock decides, not the agent's
    assert (await store.store_batch(batch([make(2, when=future)]))).accepted == 1


async def test_a_batch_of_only_rejects_stores_nothing(store: ReadingStore) -> None:
    ack = await store.store_batch(batch([make(1, value=-5), make(2, value=1000)]))
    assert (ack.accepted, ack.duplicates, len(ack.rejected)) == (0, 0, 2)
    assert await store.readings("dev-1", None, 100, None) == []
    assert await store.devices() == []


async def test_datetimes_keep_their_instant_in_utc(store: ReadingStore) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2026, 11, 27, 0, 30, 15, 123456, tzinfo=plus_two)
    await store.store_batch(batch([make(1, when=when)]))
    (got,) = await store.readings("dev-1", None, 100, None)
    assert got.datetime == when
    assert got.datetime.utcoffset() == dt.timedelta(0)
    assert got.datetime.microsecond == 123456


async def test_devices_count_streams_and_gaps(store: ReadingStore, clock: Clock) -> None:
    await store.store_batch(batch([make(s) for s in (1, 2, 3, 5, 8)]))
    clock.now = NOW + dt.timedelta(minutes=5)
    await store.store_batch(batch([make(s, id_=rid(100 + s)) for s in (4, 5)], stream="b"))
    clock.now = NOW + dt.timedelta(minutes=1)
    await store.store_batch(batch([make(1, id_=rid(200))], device="dev-0"))
    devices = await store.devices()
    assert [d.device_id for d in devices] == ["dev-0", "dev-1"]
    dev0, dev1 = devices
    assert (dev0.count, dev0.last_seen) == (1, NOW + dt.timedelta(minutes=1))
    assert (dev1.count, dev1.last_seen) == (7, NOW + dt.timedelta(minutes=5))
    streams = [(s.stream, s.first_seq, s.last_seq, s.count, s.missing) for s in dev1.streams]
    # missing assumes seq starts at 1: stream b's seqs 1..3 count as missing
    assert streams == [("b", 4, 5, 2, 3), (STREAM, 1, 8, 5, 3)]


async def test_readings_query_pages_by_stream_and_seq(store: ReadingStore) -> None:
    await store.store_batch(batch(seqs(5)))
    await store.store_batch(batch([make(s, id_=rid(100 + s)) for s in (1, 2, 3)], stream="a"))
    await store.store_batch(batch([make(1, id_=rid(300))], device="other"))
    everything = await store.readings("dev-1", None, 100, None)
    assert [(r.stream, r.seq) for r in everything] == [("a", 1), ("a", 2), ("a", 3)] + [
        (STREAM, s) for s in range(1, 6)
    ]
    page = await store.readings("dev-1", 2, 100, STREAM)
    assert [r.seq for r in page] == [3, 4, 5]
    assert [r.seq for r in await store.readings("dev-1", 0, 2, STREAM)] == [1, 2]
    assert [r.seq for r in await store.readings("dev-1", 5, 100, STREAM)] == []
    assert [(r.stream, r.seq) for r in await store.readings("dev-1", 2, 3, None)] == [
        ("a", 3),
        (STREAM, 3),
        (STREAM, 4),
    ]
    assert await store.readings("nobody", None, 100, None) == []


async def test_concurrent_overlapping_batches_store_each_reading_once(
    store: ReadingStore,
) -> None:
    batches = [batch(seqs(50, start=1 + 25 * i)) for i in range(8)]
    acks = await asyncio.gather(*(store.store_batch(b) for b in batches))
    assert sum(a.accepted for a in acks) == 25 * 7 + 50
    assert all(a.accepted + a.duplicates == 50 for a in acks)
    got = await store.readings("dev-1", None, 10_000, None)
    assert [r.seq for r in got] == list(range(1, 25 * 7 + 51))


async def test_a_full_batch_of_a_thousand(store: ReadingStore) -> None:
    ack = await store.store_batch(batch(seqs(1000)))
    assert ack.accepted == 1000
    again = await store.store_batch(batch(seqs(1000, start=501)))
    assert (again.accepted, again.duplicates) == (500, 500)
    (device,) = await store.devices()
    assert (device.count, device.streams[0].last_seq, device.streams[0].missing) == (1500, 1500, 0)


# SQLite only: the file's format and durability settings


async def test_sqlite_file_has_schema_version_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "collector.db"
    store = await SqliteStore.open(path)
    try:
        await store.store_batch(batch(seqs(3)))
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 3
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'readings'").fetchone()
    assert "WITHOUT ROWID" in sql
    assert "UNIQUE" in sql


async def test_sqlite_writer_runs_with_synchronous_full(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "collector.db")
    try:
        async with store._writer.execute("PRAGMA synchronous") as cursor:
            row = await cursor.fetchone()
    finally:
        await store.close()
    assert row is not None
    assert row[0] == 2  # FULL


async def test_sqlite_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "collector.db"
    first = await SqliteStore.open(path)
    await first.store_batch(batch(seqs(4)))
    await first.close()
    second = await SqliteStore.open(path)
    try:
        assert (await second.store_batch(batch(seqs(4)))).duplicates == 4
    finally:
        await second.close()


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "collector.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await SqliteStore.open(path)
