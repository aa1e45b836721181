"""The PostgreSQL reading store: an asyncpg pool, one statement (one round trip) per batch."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import asyncpg

from collector.conflicts import Stored, StoredKey, seq_range, settle, unplaced
from collector.group_commit import create_group_commit
from collector.partitions import AHEAD_DAYS, BEHIND_DAYS, ensure_days, maintain
from collector.rollups import ORIGIN, columns, plan, uses_rollups
from collector.store import (
    ALL_HUBS,
    AVG_SCALE,
    BACKFILL_SUMMARIES,
    DEVICES,
    GAPS,
    HUBS_TABLE,
    Activity,
    Clock,
    DevicePage,
    DeviceSummary,
    Receipt,
    SeriesPoint,
    StoredReading,
    StoreError,
    bucket_width,
    day_of,
    like_pattern,
    refuse_before,
    retention_cutoff,
    summarize,
    utc_now,
    with_hubs,
)
from pulse_wire import Ack, Batch, Message, Reading, split_batch

logger = logging.getLogger(__name__)

# any number fits: two collectors starting at once take turns creating the schema
MIGRATION_LOCK = 0x50554C5345

# 3: readings partitioned by day, with the dedup keys in an unpartitioned ledger, and rollups
SCHEMA_VERSION = 3

# A batch of at most this many readings joins a group commit (collector/group_commit.py):
# 1.7x the readings/s of a statement per batch at 50 batches in flight, with a lower p99;
# bigger batches (an agent catching up) are faster alone (docs/scale.md, "Write strategies")
GROUP_MAX_READINGS = 100

# what every version has: read before anything else, to tell a new database from an old one
VERSIONS = "CREATE TABLE IF NOT EXISTS collector_schema (version integer NOT NULL);"

# A unique key on a partitioned table must hold the partition key, and (device, stream, seq)
# or id with the datetime would let a resend with another datetime in as a second row, and
# miss a conflict. So the keys live in a ledger of their own, unpartitioned: its primary key
# and its unique id are what dedup and conflicts are judged by, exactly as before; the
# readings themselves are partitioned by day (collector/partitions.py). BRIN on datetime:
# retention deletes the ledger's oldest keys by range, at almost no cost to each insert.
TABLES = """
CREATE TABLE reading_keys (
    device_id text NOT NULL,
    stream text NOT NULL,
    seq bigint NOT NULL,
    id uuid NOT NULL UNIQUE,
    datetime timestamptz NOT NULL,
    PRIMARY KEY (device_id, stream, seq)
);
CREATE INDEX reading_keys_datetime ON reading_keys USING brin (datetime);
CREATE TABLE readings (
    device_id text NOT NULL,
    stream text NOT NULL,
    seq bigint NOT NULL,
    id uuid NOT NULL,
    datetime timestamptz NOT NULL,
    value double precision NOT NULL,
    unit text NOT NULL,
    received_at timestamptz NOT NULL
) PARTITION BY RANGE (datetime);
-- series(): a device's time range without a scan; INCLUDE lets it skip the table's pages
CREATE INDEX readings_device_datetime ON readings (device_id, datetime) INCLUDE (value);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;
CREATE INDEX readings_default_datetime ON readings_default (datetime);
CREATE TABLE rollup_minute (
    device_id text NOT NULL,
    bucket timestamptz NOT NULL,
    min double precision NOT NULL,
    max double precision NOT NULL,
    sum double precision NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (device_id, bucket)
);
CREATE TABLE rollup_hour (LIKE rollup_minute INCLUDING ALL);
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

# a version 2 database: its readings become the partitioned table's, its keys the ledger's
FROM_VERSION_2 = [
    "ALTER TABLE readings RENAME TO readings_v2",
    "ALTER INDEX IF EXISTS readings_device_datetime RENAME TO readings_v2_device_datetime",
    TABLES,
]
FILL_FROM_VERSION_2 = [
    """INSERT INTO reading_keys (device_id, stream, seq, id, datetime)
    SELECT device_id, stream, seq, id, datetime FROM readings_v2""",
    """INSERT INTO readings (device_id, stream, seq, id, datetime, value, unit, received_at)
    SELECT device_id, stream, seq, id, datetime, value, unit, received_at FROM readings_v2""",
    *(
        f"""INSERT INTO rollup_{unit} (device_id, bucket, min, max, sum, count)
        SELECT device_id, date_bin('1 {unit}', datetime, $1), min(value), max(value),
            sum(value / $2::float8), count(*)
        FROM readings_v2 GROUP BY 1, 2"""
        for unit in ("minute", "hour")
    ),
    "DROP TABLE readings_v2",
]

# One statement, one round trip, sent without BEGIN/COMMIT: PostgreSQL runs it as an
# implicit transaction that commits before it answers, so the ack still follows the commit.
# The ledger decides: no conflict target, so a clash on (device, stream, seq) or on the id
# skips the key, also between two rows of the same batch (the later one is skipped), and
# only readings whose key went in are stored, rolled up and counted. Arithmetic on the
# stored rows, never values computed from a snapshot: collectors storing batches of one
# device at once each add only what their own insert put in, and the row locks of the
# upserts (taken in bucket order) make each see the other's committed sums. Rows skipped
# are classified by the caller, and only when n is short of the batch.
STORE_TEMPLATE = """
WITH batch AS (
    SELECT DISTINCT ON (seq, id) *
    FROM unnest($4::bigint[], $5::uuid[], $6::timestamptz[], $7::float8[], $8::text[])
        WITH ORDINALITY AS r(seq, id, datetime, value, unit, n)
    ORDER BY seq, id, n
), keys AS (
    INSERT INTO reading_keys (device_id, stream, seq, id, datetime)
    SELECT $1, $2, seq, id, datetime FROM batch ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING seq, id
), stored AS (
    INSERT INTO readings (device_id, stream, seq, id, datetime, value, unit, received_at)
    SELECT $1, $2, b.seq, b.id, b.datetime, b.value, b.unit, $3
    FROM batch AS b JOIN keys AS k ON k.seq = b.seq AND k.id = b.id
    RETURNING datetime, value
{rollups}), added AS (
    SELECT count(*) AS n, min(seq) AS low, max(seq) AS high FROM keys
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

ROLLUP = """
), {unit}s AS (
    INSERT INTO rollup_{unit} AS u (device_id, bucket, min, max, sum, count)
    SELECT $1, date_bin('1 {unit}', datetime, $9), min(value), max(value),
        sum(value / $10::float8), count(*)
    FROM stored GROUP BY 2 ORDER BY 2
    ON CONFLICT (device_id, bucket) DO UPDATE SET
        min = LEAST(u.min, EXCLUDED.min), max = GREATEST(u.max, EXCLUDED.max),
        sum = u.sum + EXCLUDED.sum, count = u.count + EXCLUDED.count
"""

STORE = STORE_TEMPLATE.format(
    rollups="".join(ROLLUP.format(unit=unit).strip("\n") + "\n" for unit in ("minute", "hour"))
)

# separate statements after the INSERT has committed: each sees the keys that a concurrent
# transaction committed while the INSERT waited on them, so two collectors storing
# the same batch at once both find it stored (duplicates), not missing (a conflict).
# Joins to unnest() rather than `= ANY($n)`: on a table without statistics yet the planner
# scanned the whole stream for each array element (0.6 s for 1,000 seqs of 200,000 rows).
IDS_IN_SEQ_RANGE = """
SELECT seq, id FROM reading_keys
WHERE device_id = $1 AND stream = $2 AND seq BETWEEN $3 AND $4
"""

IDS_AT_SEQS = """
SELECT k.seq, k.id
FROM unnest($3::bigint[]) AS s(seq)
JOIN reading_keys AS k ON k.device_id = $1 AND k.stream = $2 AND k.seq = s.seq
"""

KEYS_WITH_IDS = """
SELECT k.device_id, k.stream, k.seq, k.id
FROM unnest($1::uuid[]) AS s(id)
JOIN reading_keys AS k ON k.id = s.id
"""

# the ledger gives the order and the keys, the day partition of each key's datetime the rest
READINGS = """
SELECT k.stream, k.seq, k.id, k.datetime, r.value, r.unit
FROM (
    SELECT stream, seq, id, datetime FROM reading_keys
    WHERE device_id = $1 AND seq > $2 AND ($3::text IS NULL OR stream = $3)
    ORDER BY stream, seq
    LIMIT $4
) AS k
JOIN readings AS r ON r.device_id = $1 AND r.datetime = k.datetime AND r.id = k.id
ORDER BY k.stream, k.seq
"""

GAPS_SQL = GAPS.replace("FROM readings", "FROM reading_keys").format(
    device="$1", stream="$2", limit="$3"
)

# date_bin: exact microsecond arithmetic from `start`, so both backends cut the same buckets.
# sum()/count(), not avg(): float8 avg() also sums the squares, which overflow far sooner.
# For buckets narrower than a minute: no rollup fits in them.
SERIES_RAW = """
SELECT
    r.device_id, date_bin($4::interval, r.datetime, $2) AS t,
    min(r.value), max(r.value), sum(r.value / $5::float8), count(*)
FROM unnest($1::text[]) AS d(id)
JOIN readings AS r ON r.device_id = d.id AND r.datetime >= $2 AND r.datetime < $3
GROUP BY r.device_id, t
ORDER BY r.device_id, t
"""

# Wider buckets: each is the sum of its pieces (collector/rollups.py), every piece a range
# scan of one index; $1 the devices, then (bucket, low, high) arrays per source.
SERIES_PIECES = """
SELECT device_id, k, min(low), max(high), sum(total), sum(n)::bigint
FROM (
    SELECT r.device_id, p.k, r.value AS low, r.value AS high, r.value / $11::float8 AS total,
        1::bigint AS n
    FROM unnest($1::text[]) AS d(id)
    CROSS JOIN unnest($2::int[], $3::timestamptz[], $4::timestamptz[]) AS p(k, lo, hi)
    JOIN readings AS r ON r.device_id = d.id AND r.datetime >= p.lo AND r.datetime < p.hi
    UNION ALL
    SELECT m.device_id, p.k, m.min, m.max, m.sum, m.count
    FROM unnest($1::text[]) AS d(id)
    CROSS JOIN unnest($5::int[], $6::timestamptz[], $7::timestamptz[]) AS p(k, lo, hi)
    JOIN rollup_minute AS m ON m.device_id = d.id AND m.bucket >= p.lo AND m.bucket < p.hi
    UNION ALL
    SELECT h.device_id, p.k, h.min, h.max, h.sum, h.count
    FROM unnest($1::text[]) AS d(id)
    CROSS JOIN unnest($8::int[], $9::timestamptz[], $10::timestamptz[]) AS p(k, lo, hi)
    JOIN rollup_hour AS h ON h.device_id = d.id AND h.bucket >= p.lo AND h.bucket < p.hi
) AS pieces
GROUP BY device_id, k
ORDER BY device_id, k
"""

# how many readings of each device are at or after $2 (the overview's "recent")
RECENT = """
SELECT r.device_id, count(*)
FROM unnest($1::text[]) AS d(id)
JOIN readings AS r ON r.device_id = d.id AND r.datetime >= $2 AND r.datetime < $3
GROUP BY r.device_id
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

SET_HUB = """
INSERT INTO device_hubs (device_id, hub) VALUES ($1, $2)
ON CONFLICT (device_id) DO UPDATE SET hub = EXCLUDED.hub
"""

HUBS_OF = f"{ALL_HUBS} WHERE device_id = ANY($1::text[])"

DEVICE = """
SELECT device_id, stream, first_seq, last_seq, count, last_seen
FROM stream_summaries
WHERE device_id = $1
ORDER BY stream
"""


class PostgresStore:
    """Readings in PostgreSQL, in the first schema of the connection's search_path."""

    def __init__(self, pool: Any, clock: Clock, retention: dt.timedelta | None = None):
        self._pool = pool
        self._clock = clock
        self._retention = retention
        # small batches (one agent's few readings) share statements and commits
        self._group = create_group_commit(pool)

    @classmethod
    async def open(
        cls,
        url: str,
        clock: Clock = utc_now,
        max_connections: int = 10,
        retention: dt.timedelta | None = None,
    ) -> PostgresStore:
        """Connect, create or migrate the tables and make today's partitions (`?search_path=`
        in the URL picks a schema); `retention` drops readings older than that many days."""
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=max_connections, reset=_keep_session
        )
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await _migrate(conn, clock())
                await maintain(conn, clock(), retention)
                await conn.execute(HUBS_TABLE)
        except BaseException:
            await pool.close()
            raise
        logger.info("PostgreSQL store open at %s", _redact(url))
        return cls(pool, clock, retention)

    def now(self) -> dt.datetime:
        """The store's clock: what receipts are stamped with."""
        return self._clock()

    async def maintain(self) -> None:
        """Make the coming days' partitions; drop what retention no longer keeps."""
        async with self._pool.acquire() as conn:
            await maintain(conn, self._clock(), self._retention)

    async def store_batch(self, batch: Batch) -> Ack:
        """Store a batch in one transaction; return the Ack after its commit."""
        return (await self.receive(batch)).ack

    async def receive(self, batch: Batch) -> Receipt:
        """Store a batch, roll it up and update its stream's summary in one statement, one
        round trip; classify the rows it skipped (duplicates, conflicts) only if any."""
        now = self._clock()
        good, rejected = split_batch(batch, now)
        cutoff = retention_cutoff(now, self._retention)
        if cutoff is not None:
            good, rejected = refuse_before(batch, good, rejected, cutoff)
        if not good:
            return Receipt(Ack(accepted=0, duplicates=0, rejected=rejected), now)
        if len(good) <= GROUP_MAX_READINGS:
            accepted = await self._group.write(batch.device_id, batch.stream, good, now)
            if accepted == len(good):
                return Receipt(Ack(accepted=accepted, duplicates=0, rejected=rejected), now)
            async with self._pool.acquire() as conn:
                stored = await _stored(conn, batch, good)
            return Receipt(settle(batch, good, rejected, accepted, stored), now)
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
                    ORIGIN,
                    AVG_SCALE,
                )
            )
            if accepted == len(good):
                return Receipt(Ack(accepted=accepted, duplicates=0, rejected=rejected), now)
            # after the commit, which is safe: a key ON CONFLICT skipped lost to a committed
            # key (it waits for an uncommitted one), keys are deleted only by retention,
            # older than any batch accepted, so what is read now holds what the insert saw
            stored = await _stored(conn, batch, good)
        return Receipt(settle(batch, good, rejected, accepted, stored), now)

    async def devices(self) -> list[DeviceSummary]:
        """Per device and stream: seq range, count and newest receipt, from the summaries."""
        devices = _summarize(await self._pool.fetch(DEVICES))
        return with_hubs(devices, {r[0]: r[1] for r in await self._pool.fetch(ALL_HUBS)})

    async def device(self, device_id: str) -> DeviceSummary | None:
        """One device's summary from its streams' rows, or None."""
        found = _summarize(await self._pool.fetch(DEVICE, device_id))
        return (await self._with_hubs(found))[0] if found else None

    async def set_hub(self, device_id: str, hub: str) -> None:
        """Remember the hub a device's readings came through."""
        await self._pool.execute(SET_HUB, device_id, hub)

    async def _with_hubs(self, devices: list[DeviceSummary]) -> list[DeviceSummary]:
        rows = await self._pool.fetch(HUBS_OF, [d.device_id for d in devices])
        return with_hubs(devices, {r[0]: r[1] for r in rows})

    async def device_page(self, search: str | None, offset: int, limit: int) -> DevicePage:
        """A page of devices from the summaries, in SQL: a search scans them, never readings."""
        params: list[object] = [] if search is None else [like_pattern(search.lower())]
        where = "" if search is None else MATCHING
        page_sql = DEVICE_PAGE.format(where=where, limit=len(params) + 1, offset=len(params) + 2)
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            # one snapshot, so the total counts the same devices the page was cut from
            rows = await conn.fetch(page_sql, *params, limit, offset)
            total = await conn.fetchval(DEVICE_TOTAL.format(where=where), *params)
        return DevicePage(int(total), await self._with_hubs(_summarize(rows)))

    async def activity(
        self,
        device_ids: list[str],
        start: dt.datetime,
        end: dt.datetime,
        points: int,
        recent: dt.datetime,
    ) -> dict[str, Activity]:
        """Buckets as series() cuts them for several devices, and their recent counts."""
        buckets = await self._buckets(device_ids, start, end, points)
        found = {device: Activity(found, 0) for device, found in buckets.items()}
        for device, count in await self._pool.fetch(RECENT, device_ids, recent, end):
            found.setdefault(device, Activity([], 0)).recent = int(count)
        return found

    async def gaps(self, device_id: str, stream: str, limit: int) -> list[tuple[int, int]]:
        """Missing seq runs by a window over the ledger's primary key, stopping at `limit`."""
        rows = await self._pool.fetch(GAPS_SQL, device_id, stream, limit)
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
        """A device's readings in [start, end) in at most `points` buckets, from the coarsest
        rollups that fit the buckets and raw readings only at their edges."""
        return (await self._buckets([device_id], start, end, points)).get(device_id, [])

    async def _buckets(
        self, device_ids: list[str], start: dt.datetime, end: dt.datetime, points: int
    ) -> dict[str, list[SeriesPoint]]:
        width = bucket_width(start, end, points)
        found: dict[str, list[SeriesPoint]] = {}
        if not uses_rollups(width):
            rows = await self._pool.fetch(SERIES_RAW, device_ids, start, end, width, AVG_SCALE)
            for device, t, low, high, total, count in rows:
                point = SeriesPoint(
                    t.astimezone(dt.UTC), low, high, total / count * AVG_SCALE, count
                )
                found.setdefault(device, []).append(point)
            return found
        pieces = plan(start, end, width)
        rows = await self._pool.fetch(
            SERIES_PIECES,
            device_ids,
            *columns(pieces.raw),
            *columns(pieces.minute),
            *columns(pieces.hour),
            AVG_SCALE,
        )
        for device, k, low, high, total, count in rows:
            point = SeriesPoint(start + k * width, low, high, total / count * AVG_SCALE, count)
            found.setdefault(device, []).append(point)
        return found

    async def close(self) -> None:
        """Store the batches waiting for a group, then close the pool, waiting for queries in
        flight."""
        await self._group.close()
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


async def _migrate(conn: Any, now: dt.datetime) -> None:
    """Create the tables in a new database, or bring an older one to this version: the
    summaries for version 1 (filled from its readings), the day partitions, the ledger and
    the rollups for versions 1 and 2 (filled from its readings too). Refuse a newer one."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
    await conn.execute(VERSIONS)
    version = await conn.fetchval("SELECT max(version) FROM collector_schema")
    if version is not None and int(version) > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version}, newer than this collector's schema "
            f"version {SCHEMA_VERSION}; run a newer collector"
        )
    if version is not None and int(version) == SCHEMA_VERSION:
        return
    await conn.execute(SUMMARIES)
    today = day_of(now)
    behind = today - dt.timedelta(days=BEHIND_DAYS)
    if version is None:
        await conn.execute(TABLES)
        await ensure_days(conn, behind, today + dt.timedelta(days=AHEAD_DAYS))
    else:
        # a collector of the old version still running would insert rows the copy misses:
        # SHARE mode holds its batches until this transaction commits (it then refuses to
        # restart)
        await conn.execute("LOCK TABLE readings IN SHARE MODE")
        if int(version) == 1:
            await conn.execute(BACKFILL_SUMMARIES)
        for sql in FROM_VERSION_2:
            await conn.execute(sql)
        await ensure_days(conn, behind, today + dt.timedelta(days=AHEAD_DAYS))
        for sql in FILL_FROM_VERSION_2:
            await conn.execute(sql, *((ORIGIN, AVG_SCALE) if "$1" in sql else ()))
    await conn.execute("DELETE FROM collector_schema")
    await conn.execute("INSERT INTO collector_schema (version) VALUES ($1)", SCHEMA_VERSION)
    action = "created" if version is None else f"migrated from version {version} to"
    logger.info("%s collector schema version %d", action, SCHEMA_VERSION)
