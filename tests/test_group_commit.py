"""collector/group_commit.py on the real PostgreSQL, in the collector's own schema.

Each test checks what the database holds afterwards: the readings, and the ledger, rollups
and summaries recomputed from them, so a group statement that loses or double-counts a row
fails here whatever counts it returned.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from collector.group_commit import Limits, create_group_commit
from collector.rollups import ORIGIN
from collector.store import AVG_SCALE, StoreError
from collector.store_postgres import PostgresStore
from pulse_wire import Message, Reading
from tests.requirements import postgres_url

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)

# rows of each derived table that disagree with the readings, both ways
DISAGREEING = {
    "ledger": """SELECT count(*) FROM (
        (SELECT device_id, stream, seq, id FROM reading_keys
         EXCEPT ALL SELECT device_id, stream, seq, id FROM readings)
        UNION ALL (SELECT device_id, stream, seq, id FROM readings
         EXCEPT ALL SELECT device_id, stream, seq, id FROM reading_keys)) x""",
    "summaries": """SELECT count(*) FROM (
        (SELECT device_id, stream, first_seq, last_seq, count FROM stream_summaries
         EXCEPT SELECT device_id, stream, min(seq), max(seq), count(*) FROM readings GROUP BY 1, 2)
        UNION ALL
        (SELECT device_id, stream, min(seq), max(seq), count(*) FROM readings GROUP BY 1, 2
         EXCEPT SELECT device_id, stream, first_seq, last_seq, count FROM stream_summaries)) x""",
    **{
        unit: f"""SELECT count(*) FROM (
        (SELECT device_id, bucket, min, max, sum, count FROM rollup_{unit} EXCEPT {computed})
        UNION ALL
        ({computed} EXCEPT SELECT device_id, bucket, min, max, sum, count FROM rollup_{unit})) x"""
        for unit, computed in (
            (
                unit,
                f"SELECT device_id, date_bin('1 {unit}', datetime, $1), min(value), max(value), "
                "sum(value / $2::float8), count(*) FROM readings GROUP BY 1, 2",
            )
            for unit in ("minute", "hour")
        )
    },
}


@pytest.fixture
async def pool() -> AsyncIterator[Any]:
    """A pool on a fresh schema that PostgresStore.open made, dropped afterwards."""
    url = postgres_url()
    schema = f"pulse_test_gc_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            schema_url = f"{url}{'&' if '?' in url else '?'}search_path={schema}"
            store = await PostgresStore.open(schema_url, clock=lambda: NOW)
            await store.close()
            created = await asyncpg.create_pool(schema_url, min_size=1, max_size=4)
            try:
                yield created
            finally:
                await created.close()
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()


def readings(seqs: range, offset_s: int = 0) -> list[Reading]:
    """Readings at those seqs, one every 20 s (so they span minutes), new ids."""
    return [
        Reading(
            id=uuid.uuid4(),
            seq=seq,
            datetime=NOW - dt.timedelta(hours=1, seconds=-(seq * 20 + offset_s)),
            message=Message(value=float(50 + seq % 7), unit="bpm"),
        )
        for seq in seqs
    ]


async def stored(pool: Any) -> tuple[int, dict[str, int]]:
    """How many readings are stored, and how many rows of each derived table disagree."""
    async with pool.acquire() as conn:
        count = int(await conn.fetchval("SELECT count(*) FROM readings"))
        twice = int(await conn.fetchval("SELECT count(*) - count(DISTINCT id) FROM readings"))
        assert twice == 0
        found = {}
        for name, sql in DISAGREEING.items():
            args = (ORIGIN, AVG_SCALE) if "$1" in sql else ()
            found[name] = int(await conn.fetchval(sql, *args))
    return count, found


AGREE = dict.fromkeys(DISAGREEING, 0)


async def test_waiting_batches_are_one_group_and_each_gets_its_own_count(pool: Any) -> None:
    group_commit = create_group_commit(pool, Limits(writers=1))
    try:
        batches = [(f"dev-{k}", "s", readings(range(1, 11 + k % 3))) for k in range(30)]
        counts = await asyncio.gather(*(group_commit.write(*b, NOW) for b in batches))
    finally:
        await group_commit.close()
    assert counts == [len(b[2]) for b in batches]
    # every write was queued before the writer ran: one statement, one commit
    assert (group_commit.stats.groups, group_commit.stats.batches) == (1, 30)
    assert await stored(pool) == (sum(counts), AGREE)
    async with pool.acquire() as conn:
        last_seen = await conn.fetchval("SELECT max(last_seen) FROM stream_summaries")
    assert last_seen == NOW


async def test_copies_conflicts_and_resends_count_once(pool: Any) -> None:
    group_commit = create_group_commit(pool, Limits(writers=1))
    first = readings(range(1, 11))
    # seq 1 again with another id (a seq conflict), then 9 new seqs
    clashing = readings(range(1, 2)) + readings(range(11, 20))
    try:
        counts = await asyncio.gather(
            group_commit.write("dev", "s", first, NOW),
            group_commit.write("dev", "s", first, NOW),
            group_commit.write("dev", "s", clashing, NOW),
        )
        resent = await group_commit.write("dev", "s", first, NOW)
    finally:
        await group_commit.close()
    assert list(counts) == [10, 0, 9]
    assert resent == 0
    assert group_commit.stats.groups == 2
    assert await stored(pool) == (19, AGREE)


async def test_a_group_takes_at_most_its_limits(pool: Any) -> None:
    group_commit = create_group_commit(pool, Limits(max_batches=4, max_readings=25, writers=1))
    try:
        counts = await asyncio.gather(
            *(group_commit.write(f"dev-{k}", "s", readings(range(1, 11)), NOW) for k in range(10))
        )
    finally:
        await group_commit.close()
    assert counts == [10] * 10
    # 25 readings hold two batches of 10, not three
    assert group_commit.stats.groups == 5
    assert await stored(pool) == (100, AGREE)


async def test_a_batch_the_database_refuses_fails_alone(pool: Any) -> None:
    group_commit = create_group_commit(pool)
    bad = readings(range(1, 3))
    bad[1] = Reading(id=uuid.uuid4(), seq=2**63, datetime=NOW, message=Message(1.0, "bpm"))
    try:
        results = await asyncio.gather(
            group_commit.write("dev-a", "s", readings(range(1, 11)), NOW),
            group_commit.write("dev-b", "s", bad, NOW),
            group_commit.write("dev-c", "s", readings(range(1, 11)), NOW),
            return_exceptions=True,
        )
    finally:
        await group_commit.close()
    assert results[0] == 10
    assert isinstance(results[1], asyncpg.DataError)
    assert results[2] == 10
    assert await stored(pool) == (20, AGREE)


async def test_two_writers_and_two_collectors_store_each_reading_once(pool: Any) -> None:
    """Two GroupCommits (as two collectors) of two writers each, sent the same batches."""
    batches = [(f"dev-{k % 15}", "s", readings(range(k // 15 * 10 + 1, k // 15 * 10 + 11)))
               for k in range(60)]  # fmt: skip
    ones = [create_group_commit(pool, Limits(writers=2, max_batches=7)) for _ in range(2)]
    try:
        counts = await asyncio.gather(
            *(one.write(*batch, NOW) for batch in batches for one in ones)
        )
    finally:
        await asyncio.gather(*(one.close() for one in ones))
    # each pair of counts is one batch sent to both: its readings went in once between them
    assert [counts[k] + counts[k + 1] for k in range(0, len(counts), 2)] == [10] * 60
    assert await stored(pool) == (600, AGREE)


async def test_close_stores_what_is_queued_then_refuses(pool: Any) -> None:
    group_commit = create_group_commit(pool, Limits(max_batches=2, writers=1))
    writes = [
        asyncio.create_task(group_commit.write(f"dev-{k}", "s", readings(range(1, 11)), NOW))
        for k in range(6)
    ]
    await asyncio.sleep(0)  # each write is queued
    await group_commit.close()
    assert all(w.done() for w in writes)
    assert [w.result() for w in writes] == [10] * 6
    with pytest.raises(StoreError, match="closed"):
        await group_commit.write("dev-late", "s", readings(range(1, 11)), NOW)
    assert await stored(pool) == (60, AGREE)
