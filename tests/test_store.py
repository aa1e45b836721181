"""The durable queue on real SQLite files: order, acks, dead letters, limits, recovery."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from agent import wire
from agent.store import SCHEMA_VERSION, QueuedBatch, Store, open_store

T0 = dt.datetime(2026, 11, 26, 23, 0, tzinfo=dt.UTC)


def at(i: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=i)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "queue.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with open_store(db_path, max_pending=1_000_000) as s:
        yield s


async def fill(store: Store, n: int, start: int = 0) -> list[int]:
    results = await store.add_many([(at(start + i), 60 + i % 50, "bpm") for i in range(n)])
    return [r.seq for r in results]


async def all_seqs(store: Store) -> list[int]:
    batch = await store.oldest(1_000_000)
    return batch.seqs if batch else []


def readings(batch: QueuedBatch) -> list[wire.Reading]:
    return [msgspec.json.decode(r, type=wire.Reading) for r in batch.readings_json]


def file_size(path: Path) -> int:
    return path.stat().st_size


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def pragma(path: Path, name: str) -> object:
    con = sqlite3.connect(path)
    try:
        return con.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        con.close()


# opening


async def test_open_creates_a_wal_file_with_the_schema_version(db_path: Path) -> None:
    async with open_store(db_path, 10) as store:
        async with store._db.execute("PRAGMA synchronous") as cur:
            row = await cur.fetchone()
        assert row is not None
        assert row[0] == 2  # FULL
        assert store.quarantined is None
        assert store.pending == 0
    assert file_size(db_path) > 0
    assert pragma(db_path, "journal_mode") == "wal"
    assert pragma(db_path, "auto_vacuum") == 2  # INCREMENTAL
    assert pragma(db_path, "user_version") == SCHEMA_VERSION == 1


async def test_stream_id_persists_and_differs_for_a_new_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    async with open_store(first, 10) as store:
        stream = store.stream_id
    assert stream
    async with open_store(first, 10) as store:
        assert store.stream_id == stream
    async with open_store(second, 10) as store:
        assert store.stream_id
        assert store.stream_id != stream


# adding and reading


async def test_add_returns_increasing_seqs(store: Store) -> None:
    seqs = [(await store.add(at(i), 70, "bpm")).seq for i in range(5)]
    seqs += await fill(store, 5, start=5)
    assert seqs == list(range(1, 11))
    assert store.pending == 10
    assert (await store.counts()).pending == 10


async def test_seq_is_never_reused_after_deleting_the_newest(db_path: Path) -> None:
    async with open_store(db_path, 100) as store:
        await fill(store, 3)
        batch = await store.oldest(3)
        assert batch is not None
        await store.ack(batch)
        assert store.pending == 0
    async with open_store(db_path, 100) as store:
        result = await store.add(at(9), 70, "bpm")
        assert result.seq == 4
        assert result.dropped == 0


async def test_oldest_returns_the_oldest_in_order(store: Store) -> None:
    await fill(store, 10)
    batch = await store.oldest(4)
    assert batch is not None
    assert batch.seqs == [1, 2, 3, 4]
    assert (batch.first_seq, batch.last_seq, len(batch)) == (1, 4, 4)
    after = await store.oldest(4, after_seq=batch.last_seq)
    assert after is not None
    assert after.seqs == [5, 6, 7, 8]
    tail = await store.oldest(100, after_seq=8)
    assert tail is not None
    assert tail.seqs == [9, 10]
    assert await store.oldest(100, after_seq=10) is None


async def test_oldest_of_an_empty_queue_is_none(store: Store) -> None:
    assert await store.oldest(10) is None


async def test_readings_json_decodes_as_wire_readings(store: Store) -> None:
    when = dt.datetime(2026, 11, 26, 23, 59, 58, 123_456, tzinfo=dt.UTC)
    local = when.astimezone(dt.timezone(dt.timedelta(hours=2)))
    await store.add(local, 72.0, "bpm")
    await store.add(when, 98.6, "F")
    batch = await store.oldest(10)
    assert batch is not None
    first, second = readings(batch)
    assert first.seq == 1
    assert second.seq == 2
    assert first.id != second.id
    assert first.id.version == 7
    # stored in UTC to the millisecond, whatever zone it came in
    assert first.datetime == when.replace(microsecond=123_000)
    assert first.datetime.utcoffset() == dt.timedelta(0)
    assert first.message == wire.Message(72, "bpm")
    assert second.message == wire.Message(98.6, "F")
    body = (
        b'{"device_id":"d","stream":"s","readings":[%s]}' % ",".join(batch.readings_json).encode()
    )
    assert len(wire.decode_batch(body).readings) == 2


# acks and dead letters


async def test_ack_deletes_exactly_the_batch(store: Store) -> None:
    await fill(store, 10)
    batch = await store.oldest(4)
    assert batch is not None
    await store.add(at(99), 70, "bpm")  # arrives while the batch is in flight
    assert await store.ack(batch) == 4
    assert await all_seqs(store) == [5, 6, 7, 8, 9, 10, 11]
    counts = await store.counts()
    assert (counts.pending, counts.sent, counts.dead, counts.dropped) == (7, 4, 0, 0)


async def test_rejected_readings_become_dead_letters(store: Store) -> None:
    await fill(store, 5)
    batch = await store.oldest(5)
    assert batch is not None
    ids = [str(r.id) for r in readings(batch)]
    rejected = [wire.Rejection(ids[1], "value out of range"), wire.Rejection(ids[3], "bad unit")]
    assert await store.ack(batch, rejected) == 3
    assert store.pending == 0
    dead = await store.dead_letters()
    assert [d["seq"] for d in dead] == [2, 4]
    assert [d["id"] for d in dead] == [ids[1], ids[3]]
    assert [d["error"] for d in dead] == ["value out of range", "bad unit"]
    assert all(str(d["dead_at"]).endswith("Z") for d in dead)
    counts = await store.counts()
    assert (counts.sent, counts.dead) == (3, 2)


async def test_a_failed_ack_moves_and_deletes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fill(store, 3)
    batch = await store.oldest(3)
    assert batch is not None
    first_id = str(readings(batch)[0].id)

    async def fail_delete(batch: QueuedBatch) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    # the dead-letter insert has run when the delete fails: both must roll back
    monkeypatch.setattr(store, "_delete", fail_delete)
    with pytest.raises(sqlite3.OperationalError):
        await store.ack(batch, [wire.Rejection(first_id, "bad")])
    monkeypatch.undo()
    assert await store.dead_letters() == []
    assert await all_seqs(store) == [1, 2, 3]
    counts = await store.counts()
    assert (counts.pending, counts.sent, counts.dead) == (3, 0, 0)
    # and the store still works afterwards
    assert await store.ack(batch, [wire.Rejection(first_id, "bad")]) == 2
    assert [d["seq"] for d in await store.dead_letters()] == [1]


async def test_a_rejection_for_an_unknown_id_moves_nothing(store: Store) -> None:
    await fill(store, 2)
    batch = await store.oldest(2)
    assert batch is not None
    assert await store.ack(batch, [wire.Rejection("not-in-batch", "?")]) == 2
    assert await store.dead_letters() == []
    assert (await store.counts()).dead == 0


async def test_counters_survive_reopen(db_path: Path) -> None:
    async with open_store(db_path, 4) as store:
        await fill(store, 6)  # two dropped
        batch = await store.oldest(3)
        assert batch is not None
        first_id = str(readings(batch)[0].id)
        await store.ack(batch, [wire.Rejection(first_id, "no")])
        before = await store.counts()
    assert (before.pending, before.sent, before.dead, before.dropped) == (1, 2, 1, 2)
    async with open_store(db_path, 4) as store:
        assert await store.counts() == before
        assert store.pending == 1


async def test_retry_dead_requeues_under_the_original_seq(store: Store) -> None:
    await fill(store, 5)
    batch = await store.oldest(5)
    assert batch is not None
    original = readings(batch)
    rejected = [wire.Rejection(str(original[i].id), "later") for i in (1, 3)]
    await store.ack(batch, rejected)
    await fill(store, 3, start=5)  # seqs 6, 7, 8
    assert await store.retry_dead() == 2
    assert await store.dead_letters() == []
    assert (await store.counts()).dead == 0
    assert store.pending == 5
    assert await all_seqs(store) == [2, 4, 6, 7, 8]
    again = await store.oldest(2)
    assert again is not None
    assert readings(again) == [original[1], original[3]]


async def test_ack_of_a_non_contiguous_batch_deletes_exactly_it(store: Store) -> None:
    await fill(store, 5)
    batch = await store.oldest(5)
    assert batch is not None
    ids = [str(r.id) for r in readings(batch)]
    await store.ack(batch, [wire.Rejection(ids[1], "x"), wire.Rejection(ids[3], "y")])
    await fill(store, 3, start=5)
    await store.retry_dead()
    gappy = await store.oldest(3)
    assert gappy is not None
    assert gappy.seqs == [2, 4, 6]
    assert await store.ack(gappy) == 3
    assert await all_seqs(store) == [7, 8]
    assert store.pending == 2
    assert (await store.counts()).sent == 3 + 3


async def test_rejection_in_a_non_contiguous_batch_skips_rows_in_its_gaps(store: Store) -> None:
    await fill(store, 5)
    batch = await store.oldest(5)
    assert batch is not None
    ids = [str(r.id) for r in readings(batch)]
    await store.ack(batch, [wire.Rejection(ids[1], "x"), wire.Rejection(ids[3], "y")])
    await store.retry_dead()
    await fill(store, 2, start=5)  # seqs 6, 7
    gappy = await store.oldest(1)
    assert gappy is not None
    assert gappy.seqs == [2]
    # the batch [2] only: seq 4 sits after it and must stay queued
    assert await store.ack(gappy, [wire.Rejection(ids[3], "not in this batch")]) == 1
    assert await all_seqs(store) == [4, 6, 7]
    assert await store.dead_letters() == []


# limits


async def test_max_pending_drops_the_oldest_and_counts_them(db_path: Path) -> None:
    async with open_store(db_path, max_pending=3) as store:
        results = [await store.add(at(i), 70, "bpm") for i in range(5)]
        assert [r.dropped for r in results] == [0, 0, 0, 1, 1]
        assert store.pending == 3
        assert await all_seqs(store) == [3, 4, 5]
        assert (await store.counts()).dropped == 2
        many = await store.add_many([(at(10 + i), 70, "bpm") for i in range(4)])
        assert [r.seq for r in many] == [6, 7, 8, 9]
        assert many[-1].dropped == 4
        assert await all_seqs(store) == [7, 8, 9]
        assert (await store.counts()).dropped == 6


async def test_queue_full_is_logged_once(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="agent.store")
    async with open_store(db_path, max_pending=2) as store:
        for i in range(6):
            await store.add(at(i), 70, "bpm")
        full = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(full) == 1
        assert full[0].levelname == "WARNING"
        batch = await store.oldest(1)
        assert batch is not None
        await store.ack(batch)
        assert any("below its cap" in r.getMessage() for r in caplog.records)


# file size


async def test_the_file_shrinks_after_draining(db_path: Path) -> None:
    async with open_store(db_path, 1_000_000) as store:
        await store.add_many([(at(i), 70, "bpm") for i in range(20_000)])
    full_size = file_size(db_path)
    full_pages = pragma(db_path, "page_count")
    async with open_store(db_path, 1_000_000) as store:
        while (batch := await store.oldest(1000)) is not None:
            await store.ack(batch)
        async with store._db.execute("PRAGMA freelist_count") as cur:
            row = await cur.fetchone()
        assert row is not None
        assert row[0] == 0
        assert (await store.counts()).sent == 20_000
    drained_size = file_size(db_path)
    drained_pages = pragma(db_path, "page_count")
    assert isinstance(full_pages, int)
    assert isinstance(drained_pages, int)
    assert drained_pages < full_pages // 10
    assert drained_size < full_size // 10
    assert pragma(db_path, "freelist_count") == 0


# recovery


async def test_a_garbage_file_is_moved_aside(db_path: Path) -> None:
    garbage = b"this is not a database " * 100
    write_file(db_path, garbage)
    async with open_store(db_path, 10) as store:
        assert store.quarantined is not None
        moved = store.quarantined.moved_to
        assert moved.parent == db_path.parent
        assert moved.name.startswith("queue.db.corrupt-")
        assert moved.read_bytes() == garbage
        assert "not a database" in store.quarantined.reason
        assert (await store.add(at(0), 70, "bpm")).seq == 1
    assert pragma(db_path, "user_version") == SCHEMA_VERSION


async def test_a_newer_schema_is_moved_aside_as_unsupported(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    con = sqlite3.connect(db_path)
    con.execute("CREATE TABLE future (x)")
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    async with open_store(db_path, 10) as store:
        assert store.quarantined is not None
        assert store.quarantined.moved_to.name.startswith("queue.db.unsupported-")
        assert "99" in store.quarantined.reason
        assert store.pending == 0
    assert pragma(store.quarantined.moved_to, "user_version") == 99
    assert pragma(db_path, "user_version") == SCHEMA_VERSION


async def test_a_good_file_is_not_moved(db_path: Path) -> None:
    async with open_store(db_path, 10) as store:
        await fill(store, 2)
    async with open_store(db_path, 10) as store:
        assert store.quarantined is None
        assert store.pending == 2
    assert sorted(p.name for p in db_path.parent.iterdir() if "corrupt" in p.name) == []


async def test_pending_is_counted_from_the_file_at_open(db_path: Path) -> None:
    async with open_store(db_path, 100) as store:
        await fill(store, 7)
    async with open_store(db_path, 100) as store:
        assert store.pending == 7
        batch = await store.oldest(100)
        assert batch is not None
        assert [json.loads(r)["seq"] for r in batch.readings_json] == list(range(1, 8))
