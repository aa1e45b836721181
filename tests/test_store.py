"""The durable queue on real SQLite files: order, acks, dead letters, limits, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

import pulse_wire as wire
from agent.store import SCHEMA_VERSION, QueuedBatch, Store, beside_newer, open_store
from tests.conftest import at


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
    assert pragma(db_path, "user_version") == SCHEMA_VERSION == 2


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


async def test_a_newer_schema_is_left_untouched_and_a_new_file_used_beside_it(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    con = sqlite3.connect(db_path)
    con.execute("CREATE TABLE future (x)")
    con.execute("INSERT INTO future VALUES (1)")
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    before = await asyncio.to_thread(db_path.read_bytes)
    mtime = (await asyncio.to_thread(db_path.stat)).st_mtime_ns
    for run in range(2):
        async with open_store(db_path, 10) as store:
            assert store.quarantined is not None
            assert store.quarantined.kept
            assert store.quarantined.moved_to == db_path
            assert "newer" in store.quarantined.describe()
            assert "99" in store.quarantined.reason
            assert store.path == beside_newer(db_path)
            assert store.pending == run
            await store.add(at(run), 70, "bpm")
    assert await asyncio.to_thread(db_path.read_bytes) == before
    assert (await asyncio.to_thread(db_path.stat)).st_mtime_ns == mtime
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["queue.db", "queue.v2.db"]
    assert pragma(beside_newer(db_path), "user_version") == SCHEMA_VERSION


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


# committed rows only, acks by (seq, id), cancellation


class DiskFullOnCommit:
    """Wraps the connection's commit: waits for a gate, then fails as a full disk would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.inside = asyncio.Event()
        self.gate = asyncio.Event()
        self.real = store._db.commit

    async def commit(self) -> None:
        self.inside.set()
        await self.gate.wait()
        self.store._db.commit = self.real  # type: ignore[method-assign]
        raise sqlite3.OperationalError("database or disk is full")


async def test_the_sender_never_sees_a_row_whose_commit_fails(store: Store) -> None:
    full = DiskFullOnCommit(store)
    store._db.commit = full.commit  # type: ignore[method-assign]
    adding = asyncio.create_task(store.add(at(0), 70, "bpm"))
    await full.inside.wait()  # the INSERT ran; its COMMIT is pending
    reading = asyncio.create_task(store.oldest(10))
    await asyncio.sleep(0.05)
    full.gate.set()
    with pytest.raises(sqlite3.OperationalError):
        await adding
    assert await reading is None  # never the row that did not commit
    real = await store.add(at(1), 71, "bpm")
    assert real.seq == 1  # AUTOINCREMENT rolled back with the failed commit
    batch = await store.oldest(10)
    assert batch is not None
    assert batch.ids == [real.id]


async def test_an_ack_deletes_by_seq_and_id_never_by_seq_alone(store: Store) -> None:
    real = await store.add(at(0), 70, "bpm")
    phantom = QueuedBatch([real.seq], [str(wire.new_reading_id())], ["{}"], store.stream_id)
    assert await store.ack(phantom) == 0
    assert store.pending == 1
    assert await all_seqs(store) == [real.seq]
    batch = await store.oldest(10)
    assert batch is not None
    assert await store.ack(batch) == 1
    assert store.pending == 0


@pytest.mark.parametrize("ticks", range(8))
async def test_a_cancel_at_any_point_of_a_write_never_wedges_the_connection(
    store: Store, ticks: int
) -> None:
    await fill(store, 3)
    for _ in range(5):
        task = asyncio.create_task(store.add(at(9), 72, "bpm"))
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # every write after the cancels still works, and nothing is left half-done
    await fill(store, 2)
    batch = await store.oldest(100)
    assert batch is not None
    assert await store.ack(batch) == len(batch)
    assert store.pending == 0
    assert not store._db.in_transaction
    (count,) = await store._fetchone("SELECT COUNT(*) FROM queue")
    assert count == 0


# values that cannot be sent


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_a_non_finite_value_is_refused_and_nothing_is_stored(
    store: Store, value: float
) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        await store.add(at(0), value, "bpm")
    assert store.pending == 0
    assert (await store.add(at(1), 70, "bpm")).seq == 1


# the device id


async def test_an_empty_device_id_resolves_once_and_survives_a_rename(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "desk-1")
    async with open_store(db_path, 10) as store:
        assert store.device_for("") == "pulse-desk-1"
    monkeypatch.setattr(socket, "gethostname", lambda: "renamed-laptop")
    async with open_store(db_path, 10) as store:
        assert store.device_for("") == "pulse-desk-1"
        assert store.device_for("chosen") == "chosen"


V1_SCHEMA = """
CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
    ts TEXT NOT NULL, value NUMERIC NOT NULL, unit TEXT NOT NULL);
CREATE TABLE dead (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, ts TEXT NOT NULL,
    value NUMERIC NOT NULL, unit TEXT NOT NULL, error TEXT NOT NULL, dead_at TEXT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('sent', 5), ('dropped', 0), ('dead', 0);
INSERT INTO meta (key, value) VALUES ('stream', 'oldstream');
INSERT INTO queue (id, ts, value, unit) VALUES ('a', '2026-01-01T00:00:00.000Z', 70, 'bpm');
PRAGMA user_version = 1;
"""


async def test_a_version_1_queue_is_migrated_with_its_readings(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    con = sqlite3.connect(db_path)
    con.executescript(V1_SCHEMA)
    con.close()
    async with open_store(db_path, 10) as store:
        assert store.quarantined is None
        assert store.stream_id == "oldstream"
        assert store.pending == 1
        assert (await store.counts()).sent == 5
        assert store.device_for("").startswith("pulse-")
        assert (await store.add(at(1), 71, "bpm")).seq == 2
    assert pragma(db_path, "user_version") == SCHEMA_VERSION


# salvage of a damaged file


def corrupt_middle_pages(path: Path, pages: range) -> None:
    page_size = int(pragma(path, "page_size"))  # type: ignore[call-overload]
    with path.open("r+b") as f:
        for page in pages:
            f.seek(page * page_size)
            f.write(b"\xde\xad\xbe\xef" * (page_size // 4))


async def test_a_damaged_queue_is_salvaged_and_sent_under_its_stream(db_path: Path) -> None:
    async with open_store(db_path, 100_000) as store:
        results = await store.add_many(
            [(at(i), 60 + i % 50, "bpm") for i in range(3000)], state=None
        )
        old_stream = store.stream_id
    ids = {r.seq: r.id for r in results}
    total_pages = int(pragma(db_path, "page_count"))  # type: ignore[call-overload]
    corrupt_middle_pages(db_path, range(total_pages // 2, total_pages // 2 + 2))
    async with open_store(db_path, 100_000) as store:
        q = store.quarantined
        assert q is not None
        assert not q.kept
        assert q.salvage is not None
        assert q.moved_to.name.startswith("queue.db.corrupt-")
        recovered = len(q.salvage.rows)
        assert 2000 < recovered < 3000
        assert q.salvage.unreadable_ranges
        assert f"{recovered} readings recovered" in q.describe()
        assert store.stream_id != old_stream
        assert store.salvage_pending == recovered == store.pending
        sent: dict[int, str] = {}
        while (batch := await store.oldest_salvaged(700)) is not None:
            assert batch.stream == old_stream
            assert batch.salvaged
            sent.update(zip(batch.seqs, batch.ids, strict=True))
            for text, seq, rid in zip(batch.readings_json, batch.seqs, batch.ids, strict=True):
                reading = msgspec.json.decode(text, type=wire.Reading)
                assert (reading.seq, str(reading.id)) == (seq, rid)
            assert await store.ack(batch) == len(batch)
        assert store.pending == 0
    # every recovered reading kept its seq and id; none was invented
    assert len(sent) == recovered
    assert all(ids[seq] == rid for seq, rid in sent.items())
    lost = set(ids) - set(sent)
    assert all(any(a <= seq <= b for a, b in q.salvage.unreadable_ranges) for seq in lost)
