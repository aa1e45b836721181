"""The PostgreSQL reading store: an asyncpg pool, one statement (one round trip) per batch."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import asyncpg

from collector.conflicts import Stored, StoredKey, seq_range, settle, unplaced
from collector.store import (
    AVG_SCALE,
    BACKFILL_SUMMARIES,
    DEVICES,
    GAPS,
    SCHEMA_VERSION,
    Activity,
    Clock,
    DevicePage,
    DeviceSummary,
    Receipt,
    SeriesPoint,
    StoredReading,
    StoreError,
    bucket_width,
    like_pattern,
    summarize,
    utc_now,
)
from pulse_wire import Ack, Batch, Message, Reading, split_batch

logger = logging.getLogger(__name__)

# any number fits: two collectors starting at once take turns creating the schema
MIGRATION_LOCK = 0x50554C5345

SCHEMA = """
CREATE TABLE IF NOT EXISTS collector_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS readings (
    device_id text NOT NULL,
    stream text NOT NULL,
    seq bigint NOT NULL,
    id uuid NOT NULL UNIQUE,
    datetime timestamptz NOT NULL,
    value double precision NOT NULL,
    unit text NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, stream, seq)
);
-- for series(): a device's time range without a scan; run at every open, so a database
-- created before series() existed gets it too. INCLUDE lets it skip the table's pages.
CREATE INDEX IF NOT EXISTS readings_device_datetime ON readings (device_id, datetime)
    INCLUDE (value);
"""

# one row per (device, stream), updated in each batch's transaction from what it inserted
SUMMARIES = """
CREATE TABLE IF NOT EXISTS stream_summaries (
    device_id text NOT NULL,
    stream text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    count bigint NOT NULL,
    last_seen timestamptz NOT NULL,
    PRIMARY KEY (device_id, stream)
);
"""

# no conflict target: a clash on the primary key or on the id skips the row, also between two
# rows of the same batch (the later one is skipped); whether a skipped row was a duplicate or
# a conflict is settled afterwards, and only if some row was skipped
INSERT = """
INSERT INTO readings (device_id, stream, seq, id, datetime, value, unit, received_at)
SELECT $1, $2, r.seq, r.id, r.datetime, r.value, r.unit, $3
FROM unnest($4::bigint[], $5::uuid[], $6::timestamptz[], $7::float8[], $8::text[])
    WITH ORDINALITY AS r(seq, id, datetime, value, unit, n)
ORDER BY r.n
ON CONFLICT DO NOTHING
"""

# The common case in one statement, sent without BEGIN/COMMIT: PostgreSQL runs it as an
# implicit transaction that commits before it answers, so the ack still follows the commit,
# in one round trip instead of four (BEGIN, INSERT, summary upsert, COMMIT).
# Arithmetic on the stored row, never values computed from a snapshot: collectors storing
# batches of one stream at once each add only the rows their own INSERT put in, and the row
# lock of the upsert makes each one see the other's committed sum. Rows skipped by ON
# CONFLICT are classified by the caller, and only when n is short of the batch.
STORE = f"""
WITH inserted AS (
{INSERT.strip()}
RETURNING seq
), added AS (
    SELECT count(*) AS n, min(seq) AS low, max(seq) AS high FROM inserted
), summary AS (
    INSERT INTO stream_summaries AS s (device_id, stream, first_seq, last_seq, count, last_seen)
    SELECT $1, $2, low, high, n, $3 FROM added WHERE n > 0
    ON CONFLICT (device_id, stream) DO UPDATE SET
        first_seq = LEAST(s.first_seq, EXCLUDED.first_seq),
        last_seq = GREATEST(s.last_seq, EXCLUDED.last_seq),
        count = s.count + EXCLUDED.count,
        last_seen = GREATEST(s.last_seen, EXCLUDED.last_seen)
)
SELECT n FROM added
"""

# separate statements after the INSERT has committed: each sees the rows that a concurrent
# transaction committed while the INSERT waited on them, so two collectors storing
# the same batch at once both find it stored (duplicates), not missing (a conflict).
# Joins to unnest() rather than `= ANY($n)`: on a table without statistics yet the planner
# scanned the whole stream for each array element (0.6 s for 1,000 seqs of 200,000 rows).
IDS_IN_SEQ_RANGE = """
SELECT seq, id FROM readings WHERE device_id = $1 AND stream = $2 AND seq BETWEEN $3 AND $4
"""

IDS_AT_SEQS = """
SELECT r.seq, r.id
FROM unnest($3::bigint[]) AS k(seq)
JOIN readings AS r ON r.device_id = $1 AND r.stream = $2 AND r.seq = k.seq
"""

KEYS_WITH_IDS = """
SELECT r.device_id, r.stream, r.seq, r.id
FROM unnest($1::uuid[]) AS k(id)
JOIN readings AS r ON r.id = k.id
"""

READINGS = """
SELECT stream, seq, id, datetime, value, unit
FROM readings
WHERE device_id = $1 AND seq > $2 AND ($3::text IS NULL OR stream = $3)
ORDER BY stream, seq
LIMIT $4
"""

# date_bin: exact microsecond arithmetic from `start`, so both backends cut the same buckets.
# sum()/count(), not avg(): float8 avg() also sums the squares, which overflow far sooner
SERIES = """
SELECT
    date_bin($4::interval, datetime, $2) AS t,
    min(value), max(value), sum(value / $5::float8) / count(*) * $5::float8, count(*)
FROM readings
WHERE device_id = $1 AND datetime >= $2 AND datetime < $3
GROUP BY t
ORDER BY t
"""


# series() for several devices at once, plus how many readings are at or after $7
ACTIVITY = """
SELECT
    r.device_id, date_bin($4::interval, r.datetime, $2) AS t,
    min(r.value), max(r.value), sum(r.value / $5::float8) / count(*) * $5::float8, count(*),
    count(*) FILTER (WHERE r.datetime >= $6)
FROM unnest($1::text[]) AS d(id)
JOIN readings AS r ON r.device_id = d.id AND r.datetime >= $2 AND r.datetime < $3
GROUP BY r.device_id, t
ORDER BY r.device_id, t
"""

MATCHING = "WHERE lower(device_id) LIKE $1 ESCAPE '\\'"

# the page's streams, summed up in Python: a sum of seqs near 2**63 overflows in SQL
DEVICE_PAGE = """
SELECT device_id, stream, first_seq, last_seq, count, last_seen
FROM stream_summaries
WHERE device_id IN (
    SELECT device_id FROM stream_summaries {where}
    GROUP BY device_id
    ORDER BY device_id
    LIMIT ${limit} OFFSET ${offset}
)
ORDER BY device_id, stream
"""

DEVICE_TOTAL = "SELECT COUNT(DISTINCT device_id) FROM stream_summaries {where}"

DEVICE = """
SELECT device_id, stream, first_seq, last_seq, count, last_seen
FROM stream_summaries
WHERE device_id = $1
ORDER BY stream
"""


class PostgresStore:
    """Readings in PostgreSQL, in the first schema of the connection's search_path."""

    def __init__(self, pool: Any, clock: Clock):
        self._pool = pool
        self._clock = clock

    @classmethod
    async def open(
        cls, url: str, clock: Clock = utc_now, max_connections: int = 10
    ) -> PostgresStore:
        """Connect and create the tables if needed (`?search_path=` in the URL picks a schema)."""
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=max_connections, reset=_keep_session
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        logger.info("PostgreSQL store open at %s", _redact(url))
        return cls(pool, clock)

    def now(self) -> dt.datetime:
        """The store's clock: what receipts are stamped with."""
        return self._clock()

    async def store_batch(self, batch: Batch) -> Ack:
        """Store a batch in one transaction; return the Ack after its commit."""
        return (await self.receive(batch)).ack

    async def receive(self, batch: Batch) -> Receipt:
        """Store a batch and update its stream's summary in one statement, one round trip;
        classify the rows it skipped (duplicates, conflicts) only if there are any."""
        now = self._clock()
        good, rejected = split_batch(batch, now)
        if not good:
            return Receipt(Ack(accepted=0, duplicates=0, rejected=rejected), now)
        async with self._pool.acquire() as conn:
            accepted = int(
                await conn.fetchval(
                    STORE,
                    batch.device_id,
                    batch.stream,
                    now,
                    [r.seq for r in good],
                    [r.id for r in good],
                    [r.datetime for r in good],
                    [float(r.message.value) for r in good],
                    [r.message.unit for r in good],
                )
            )
            if accepted == len(good):
                return Receipt(Ack(accepted=accepted, duplicates=0, rejected=rejected), now)
            # after the commit, which is safe: a row ON CONFLICT skipped lost to a committed
            # row (it waits for an uncommitted one), rows are never deleted, so what is read
            # now holds at least what the insert saw
            stored = await _stored(conn, batch, good)
        return Receipt(settle(batch, good, rejected, accepted, stored), now)

    async def devices(self) -> list[DeviceSummary]:
        """Per device and stream: seq range, count and newest receipt, from the summaries."""
        return _summarize(await self._pool.fetch(DEVICES))

    async def device(self, device_id: str) -> DeviceSummary | None:
        """One device's summary from its streams' rows, or None."""
        found = _summarize(await self._pool.fetch(DEVICE, device_id))
        return found[0] if found else None

    async def device_page(self, search: str | None, offset: int, limit: int) -> DevicePage:
        """A page of devices from the summaries, in SQL: a search scans them, never readings."""
        params: list[object] = [] if search is None else [like_pattern(search.lower())]
        where = "" if search is None else MATCHING
        page_sql = DEVICE_PAGE.format(where=where, limit=len(params) + 1, offset=len(params) + 2)
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            # one snapshot, so the total counts the same devices the page was cut from
            rows = await conn.fetch(page_sql, *params, limit, offset)
            total = await conn.fetchval(DEVICE_TOTAL.format(where=where), *params)
        return DevicePage(int(total), _summarize(rows))

    async def activity(
        self,
        device_ids: list[str],
        start: dt.datetime,
        end: dt.datetime,
        points: int,
        recent: dt.datetime,
    ) -> dict[str, Activity]:
        """Buckets as series() cuts them, for several devices, by index range scans."""
        width = bucket_width(start, end, points)
        rows = await self._pool.fetch(ACTIVITY, device_ids, start, end, width, AVG_SCALE, recent)
        found: dict[str, Activity] = {}
        for device, t, low, high, avg, count, recent_count in rows:
            entry = found.setdefault(device, Activity([], 0))
            entry.points.append(SeriesPoint(t.astimezone(dt.UTC), low, high, avg, count))
            entry.recent += recent_count
        return found

    async def gaps(self, device_id: str, stream: str, limit: int) -> list[tuple[int, int]]:
        """Missing seq runs by a window over the stream's primary key, stopping at `limit`."""
        sql = GAPS.format(device="$1", stream="$2", limit="$3")
        rows = await self._pool.fetch(sql, device_id, stream, limit)
        return [(r[0], r[1]) for r in rows]

    async def readings(
        self, device_id: str, since_seq: int | None, limit: int, stream: str | None
    ) -> list[StoredReading]:
        """A device's readings with seq > since_seq, ordered by (stream, seq)."""
        rows = await self._pool.fetch(READINGS, device_id, since_seq or 0, stream, limit)
        return [
            StoredReading(
                id=rid,
                seq=seq,
                datetime=when,
                message=Message(value=value, unit=unit),
                stream=row_stream,
            )
            for row_stream, seq, rid, when, value, unit in rows
        ]

    async def series(
        self, device_id: str, start: dt.datetime, end: dt.datetime, points: int
    ) -> list[SeriesPoint]:
        """A device's readings in [start, end) in at most `points` buckets, by SQL aggregates."""
        width = bucket_width(start, end, points)
        rows = await self._pool.fetch(SERIES, device_id, start, end, width, AVG_SCALE)
        return [SeriesPoint(r[0].astimezone(dt.UTC), r[1], r[2], r[3], r[4]) for r in rows]

    async def close(self) -> None:
        """Close the pool, waiting for queries in flight."""
        await self._pool.close()


async def _stored(conn: Any, batch: Batch, readings: list[Reading]) -> Stored:
    """What the transaction sees at the readings' seqs, then at their ids where a seq is free."""
    span = seq_range(readings)
    if span is not None:
        rows = await conn.fetch(IDS_IN_SEQ_RANGE, batch.device_id, batch.stream, *span)
    else:
        seqs = sorted({r.seq for r in readings})
        rows = await conn.fetch(IDS_AT_SEQS, batch.device_id, batch.stream, seqs)
    ids_by_seq: dict[int, uuid.UUID] = {seq: rid for seq, rid in rows}
    keys_by_id: dict[uuid.UUID, StoredKey] = {}
    if ids := unplaced(readings, ids_by_seq):
        for row in await conn.fetch(KEYS_WITH_IDS, ids):
            keys_by_id[row[3]] = StoredKey(row[0], row[1], row[2], row[3])
    return Stored(ids_by_seq, keys_by_id)


async def _keep_session(conn: Any) -> None:
    """Skip asyncpg's reset query on release: a round trip per batch, for session state
    (LISTEN, SET, advisory or cursor) that this store never leaves behind. An open
    transaction is still rolled back by the pool before this is called."""


def _summarize(rows: list[Any]) -> list[DeviceSummary]:
    return summarize([(r[0], r[1], r[2], r[3], r[4], r[5].astimezone(dt.UTC)) for r in rows])


def _redact(url: str) -> str:
    """The URL without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


async def _migrate(conn: Any) -> None:
    """Create the tables in a new database, add the summaries to a version 1 one (filled from
    its readings); refuse one written by a newer version."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    await conn.execute(SCHEMA)
    version = await conn.fetchval("SELECT max(version) FROM collector_schema")
    if version is not None and int(version) > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version}, newer than this collector's schema "
            f"version {SCHEMA_VERSION}; run a newer collector"
        )
    if version is not None and int(version) == SCHEMA_VERSION:
        return
    await conn.execute(SUMMARIES)
    if version is not None:
        # a version 1 collector still running would insert rows the backfill misses: SHARE
        # mode holds its batches until this transaction commits (it then refuses to restart)
        await conn.execute("LOCK TABLE readings IN SHARE MODE")
        await conn.execute(BACKFILL_SUMMARIES)
    await conn.execute("DELETE FROM collector_schema")
    await conn.execute("INSERT INTO collector_schema (version) VALUES ($1)", SCHEMA_VERSION)
    action = "created" if version is None else f"migrated from version {version} to"
    logger.info("%s collector schema version %d", action, SCHEMA_VERSION)
