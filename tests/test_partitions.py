"""PostgreSQL's readings by day: partitions, the dedup ledger, retention and the move from v2.

Every check reads the readings back one by one and compares them with what was sent.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest

import pulse_wire as wire
from collector.partitions import AHEAD_DAYS, BEHIND_DAYS, partition_name
from collector.store import day_of
from collector.store_postgres import SCHEMA_VERSION, PostgresStore
from tests.test_collector_postgres import postgres_schema

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
# the test's own schema only: other tests' schemas have partitions of the same names
NAMES = "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace"


class Clock:
    """A clock the test moves."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def make(seq: int, when: dt.datetime, value: float = 70.0) -> wire.Reading:
    return wire.Reading(
        id=uuid.uuid4(), seq=seq, datetime=when, message=wire.Message(value=value, unit="bpm")
    )


def batch(readings: list[wire.Reading], device: str = "dev", stream: str = "s") -> wire.Batch:
    return wire.Batch(device_id=device, stream=stream, readings=readings)


async def stored(url: str) -> dict[uuid.UUID, tuple[int, dt.datetime, float, str]]:
    """Every reading in the table, by id: seq, datetime, value and the partition holding it."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id, seq, datetime, value, tableoid::regclass::text FROM readings"
        )
    finally:
        await conn.close()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


async def fetch(url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def expected_partition(when: dt.datetime, days: set[dt.date]) -> str:
    day = day_of(when)
    return partition_name(day) if day in days else "readings_default"


async def test_a_new_database_has_day_partitions_around_today_and_a_default() -> None:
    async with postgres_schema() as url:
        store = await PostgresStore.open(url, clock=Clock())
        await store.close()
        names = {r[0] for r in await fetch(url, NAMES)}
        today = NOW.date()
        for offset in range(-BEHIND_DAYS, AHEAD_DAYS + 1):
            assert partition_name(today + dt.timedelta(days=offset)) in names
        assert partition_name(today - dt.timedelta(days=BEHIND_DAYS + 1)) not in names
        assert partition_name(today + dt.timedelta(days=AHEAD_DAYS + 1)) not in names
        assert "readings_default" in names
        version = await fetch(url, "SELECT version FROM collector_schema")
        assert [r[0] for r in version] == [SCHEMA_VERSION]


async def test_readings_land_in_their_day_and_old_ones_in_the_default() -> None:
    async with postgres_schema() as url:
        store = await PostgresStore.open(url, clock=Clock())
        try:
            ages = [dt.timedelta(minutes=5), dt.timedelta(days=3), dt.timedelta(days=400)]
            sent = [make(i + 1, NOW - age, 60 + i) for i, age in enumerate(ages)]
            sent.append(make(4, NOW + dt.timedelta(hours=23), 64))
            ack = await store.store_batch(batch(sent))
            assert ack == wire.Ack(accepted=4, duplicates=0)
            # a resend is a duplicate, found in the ledger, whatever partition holds it
            again = await store.store_batch(batch(sent))
            assert again == wire.Ack(accepted=0, duplicates=4)
        finally:
            await store.close()
        rows = await stored(url)
        days = {NOW.date() + dt.timedelta(days=d) for d in range(-BEHIND_DAYS, AHEAD_DAYS + 1)}
        assert rows == {
            r.id: (r.seq, r.datetime, float(r.message.value), expected_partition(r.datetime, days))
            for r in sent
        }
        assert rows[sent[2].id][3] == "readings_default"


async def test_a_conflict_across_partitions_is_still_a_conflict() -> None:
    async with postgres_schema() as url:
        store = await PostgresStore.open(url, clock=Clock())
        try:
            first = make(1, NOW - dt.timedelta(days=2))
            assert (await store.store_batch(batch([first]))).accepted == 1
            # same seq, another id and another day: the ledger's key sees it
            clash = make(1, NOW - dt.timedelta(minutes=1))
            ack = await store.store_batch(batch([clash]))
            assert ack.accepted == 0
            assert ack.duplicates == 0
            assert [r.id for r in ack.rejected] == [str(clash.id)]
            # the same id under another seq clashes too
            moved = wire.Reading(id=first.id, seq=2, datetime=first.datetime, message=first.message)
            ack = await store.store_batch(batch([moved]))
            assert [r.id for r in ack.rejected] == [str(first.id)]
        finally:
            await store.close()
        assert set(await stored(url)) == {first.id}


async def test_retention_drops_old_days_refuses_old_readings_and_keeps_the_rest() -> None:
    async with postgres_schema() as url:
        clock = Clock()
        store = await PostgresStore.open(url, clock=clock)
        ages_days = [0, 1, 5, 9, 10, 11, 20, 40, 400]
        sent = [
            make(i + 1, NOW - dt.timedelta(days=d, minutes=1), 50 + i)
            for i, d in enumerate(ages_days)
        ]
        try:
            assert (await store.store_batch(batch(sent))).accepted == len(sent)
        finally:
            await store.close()
        keep = dt.timedelta(days=10)
        store = await PostgresStore.open(url, clock=clock, retention=keep)
        try:
            cutoff = dt.datetime.combine((NOW - keep).date(), dt.time(), tzinfo=dt.UTC)
            kept = [r for r in sent if r.datetime >= cutoff]
            gone = [r for r in sent if r.datetime < cutoff]
            assert kept
            assert gone
            rows = await stored(url)
            assert set(rows) == {r.id for r in kept}
            names = {r[0] for r in await fetch(url, NAMES)}
            assert partition_name(cutoff.date() - dt.timedelta(days=1)) not in names
            assert partition_name(cutoff.date()) in names
            # the ledger lost the same keys, the minute rollups their minutes; hours stay
            keys = await fetch(url, "SELECT id FROM reading_keys")
            assert {r[0] for r in keys} == {r.id for r in kept}
            minutes = await fetch(url, "SELECT min(bucket) FROM rollup_minute")
            assert minutes[0][0] >= cutoff
            hours = await fetch(url, "SELECT sum(count) FROM rollup_hour")
            assert hours[0][0] == len(sent)
            # a reading from before the cutoff is refused, by name, in batch order
            late = [make(100, cutoff - dt.timedelta(seconds=1)), make(101, NOW, 61)]
            ack = await store.store_batch(batch(late))
            assert ack.accepted == 1
            assert [r.id for r in ack.rejected] == [str(late[0].id)]
            assert "retention_days" in ack.rejected[0].error
            # what is kept still dedups
            again = await store.store_batch(batch(kept))
            assert again == wire.Ack(accepted=0, duplicates=len(kept))
        finally:
            await store.close()


async def test_days_that_came_without_maintenance_move_out_of_the_default() -> None:
    async with postgres_schema() as url:
        clock = Clock()
        store = await PostgresStore.open(url, clock=clock)
        try:
            # a week passes with no maintenance pass: those days have no partition yet
            clock.now = NOW + dt.timedelta(days=7)
            sent = [make(i + 1, clock.now - dt.timedelta(hours=i * 10), 60 + i) for i in range(12)]
            assert (await store.store_batch(batch(sent))).accepted == 12
            before = await stored(url)
            assert any(row[3] == "readings_default" for row in before.values())
            await store.maintain()
        finally:
            await store.close()
        after = await stored(url)
        today = clock.now.date()
        assert {k: v[:3] for k, v in after.items()} == {k: v[:3] for k, v in before.items()}
        for r in sent:
            day = day_of(r.datetime)
            if day >= today:
                assert after[r.id][3] == partition_name(day)


# what the version 2 collector created (store_postgres.py before day partitions)
V2_SCHEMA = """
CREATE TABLE collector_schema (version integer NOT NULL);
INSERT INTO collector_schema (version) VALUES (2);
CREATE TABLE readings (
    device_id text NOT NULL, stream text NOT NULL, seq bigint NOT NULL,
    id uuid NOT NULL UNIQUE, datetime timestamptz NOT NULL, value double precision NOT NULL,
    unit text NOT NULL, received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, stream, seq)
);
CREATE INDEX readings_device_datetime ON readings (device_id, datetime) INCLUDE (value);
CREATE TABLE stream_summaries (
    device_id text NOT NULL, stream text NOT NULL, first_seq bigint NOT NULL,
    last_seq bigint NOT NULL, count bigint NOT NULL, last_seen timestamptz NOT NULL,
    PRIMARY KEY (device_id, stream)
);
"""


@pytest.mark.parametrize("ages_days", [[0, 0.5, 2, 45, 800]])
async def test_a_version_2_database_moves_to_partitions_reading_by_reading(
    ages_days: list[float],
) -> None:
    async with postgres_schema() as url:
        sent = [
            make(i + 1, NOW - dt.timedelta(days=d, seconds=i), 60 + i)
            for i, d in enumerate(ages_days)
        ]
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(V2_SCHEMA)
            for r in sent:
                await conn.execute(
                    "INSERT INTO readings VALUES ('dev', 's', $1, $2, $3, $4, 'bpm', $5)",
                    r.seq,
                    r.id,
                    r.datetime,
                    float(r.message.value),
                    NOW,
                )
            await conn.execute(
                "INSERT INTO stream_summaries VALUES ('dev', 's', 1, $1, $1, $2)", len(sent), NOW
            )
        finally:
            await conn.close()
        store = await PostgresStore.open(url, clock=Clock())
        try:
            back = await store.readings("dev", None, 100, None)
            assert [(r.id, r.seq, r.datetime, r.message.value) for r in back] == [
                (r.id, r.seq, r.datetime, r.message.value) for r in sent
            ]
            again = await store.store_batch(batch(sent))
            assert again == wire.Ack(accepted=0, duplicates=len(sent))
            series = await store.series(
                "dev", NOW - dt.timedelta(days=900), NOW + dt.timedelta(1), 10
            )
            assert sum(p.count for p in series) == len(sent)
        finally:
            await store.close()
        version = await fetch(url, "SELECT version FROM collector_schema")
        assert [r[0] for r in version] == [SCHEMA_VERSION]
        hours = await fetch(url, "SELECT sum(count) FROM rollup_hour")
        assert hours[0][0] == len(sent)
        names = {r[0] for r in await fetch(url, NAMES)}
        assert "readings_v2" not in names
