"""The SQLite reading store: one write connection, WAL, synchronous=FULL, one commit per batch."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from collector.conflicts import Stored, StoredKey, seq_range, settle, unplaced
from collector.rollups import plan, uses_rollups
from collector.store import (
    ALL_HUBS,
    AVG_SCALE,
    BACKFILL_SUMMARIES,
    DEVICES,
    GAPS,
    HUBS_TABLE,
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
    in_place,
    like_pattern,
    refuse_before,
    retention_cutoff,
    summarize,
    utc_now,
    with_hubs,
)
from pulse_wire import Ack, Batch, Message, Reading, split_batch

logger = logging.getLogger(__name__)

UTC = dt.UTC

# The writer checkpoints the WAL into the file every this many pages (40 MB at 4 KiB), not
# SQLite's 1,000: a page a catch-up writes again and again (the indexes' right edges, the
# rollups, the summary) is copied once per checkpoint, which cut the writer's insert and
# commit CPU by 12-15 % (docs/performance.md). The WAL file may grow to about that size.
WAL_CHECKPOINT_PAGES = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL UNIQUE,
    datetime TEXT NOT NULL,
    value REAL NOT NULL,
    unit TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (device_id, stream, seq)
) STRICT, WITHOUT ROWID;
"""

# one row per (device, stream), updated in each batch's transaction from what it inserted
SUMMARIES = """
CREATE TABLE IF NOT EXISTS stream_summaries (
    device_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (device_id, stream)
) STRICT, WITHOUT ROWID;
"""

# min/max, not the batch's values alone: a batch may fill a gap below the stream's last seq
SUMMARY_UPSERT = """
INSERT INTO stream_summaries (device_id, stream, first_seq, last_seq, count, last_seen)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, stream) DO UPDATE SET
    first_seq = MIN(first_seq, excluded.first_seq),
    last_seq = MAX(last_seq, excluded.last_seq),
    count = count + excluded.count,
    last_seen = MAX(last_seen, excluded.last_seen)
"""

# no conflict target: a clash on the primary key or on the id skips the row; whether it was a
# duplicate or a conflict is settled afterwards, and only if some row was skipped
INSERT = """
INSERT INTO readings (device_id, stream, seq, id, datetime, value, unit, received_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""

# a batch has at most 10,000 readings; chunks keep each query far below SQLite's
# limit on bound parameters (32,766, but only 999 before 3.32)
KEY_CHUNK = 500

# The batch goes in as one multi-row INSERT (two at most, 10,000 readings): executemany
# would take the GIL back for every row, each time waiting while the event loop decodes the
# next request, and the writer would crawl. 8 parameters a row, under SQLite's limit.
INSERT_COLUMNS = 8
MAX_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
ROWS_PER_INSERT = MAX_PARAMETERS // INSERT_COLUMNS

IDS_IN_SEQ_RANGE = """
SELECT seq, id FROM readings WHERE device_id = ? AND stream = ? AND seq BETWEEN ? AND ?
"""

IDS_AT_SEQS = """
SELECT seq, id FROM readings WHERE device_id = ? AND stream = ? AND seq IN ({marks})
"""

KEYS_WITH_IDS = """
SELECT device_id, stream, seq, id FROM readings WHERE id IN ({marks})
"""

READINGS = """
SELECT stream, seq, id, datetime, value, unit
FROM readings
WHERE device_id = ? AND seq > ? {stream}
ORDER BY stream, seq
LIMIT ?
"""


# created at every open, not only with the schema: a file made before series() existed gets it
# too. It covers value as well, so series() never visits the table itself.
SERIES_INDEX = """
CREATE INDEX IF NOT EXISTS readings_device_datetime ON readings (device_id, datetime, value)
"""

# datetime is msgspec's UTC text, `YYYY-MM-DDTHH:MM:SSZ` or `...SS.ffffffZ`: text order is
# not time order within one second (`Z` sorts after `.`), so the text range only narrows
# the index scan to whole seconds and `us`, exact integer microseconds, decides. julianday()
# would be a float, a few microseconds off, and could move a reading across a bucket edge.
MICROSECONDS = """
    CAST(strftime('%s', substr(datetime, 1, 19)) AS INTEGER) * 1000000
    + CASE WHEN length(datetime) > 20 THEN CAST(substr(datetime, 21, 6) AS INTEGER)
      ELSE 0 END
"""

SERIES = f"""
SELECT
    (us - :start) / :width AS bucket,
    MIN(value), MAX(value), AVG(value / :scale) * :scale, COUNT(*)
FROM (
    SELECT {MICROSECONDS} AS us, value
    FROM readings
    WHERE device_id = :device AND datetime >= :low AND datetime < :high
)
WHERE us >= :start AND us < :end
GROUP BY bucket
ORDER BY bucket
"""

# series() for several devices at once, plus how many readings are at or after :recent
ACTIVITY = f"""
SELECT
    device_id, (us - :start) / :width AS bucket,
    MIN(value), MAX(value), AVG(value / :scale) * :scale, COUNT(*), SUM(us >= :recent)
FROM (
    SELECT device_id, {MICROSECONDS} AS us, value
    FROM readings
    WHERE device_id IN ({{marks}}) AND datetime >= :low AND datetime < :high
)
WHERE us >= :start AND us < :end
GROUP BY device_id, bucket
ORDER BY device_id, bucket
"""

# Buckets of a minute or more: the sum of their pieces (collector/rollups.py), given as JSON
# arrays [k, low, high] (epoch seconds for rollups; for raw readings epoch microseconds plus
# the whole-second texts that narrow the index scan, as in SERIES). CROSS JOIN: SQLite then
# keeps the pieces as the outer loop, one index range scan per piece, never a device's scan.
PIECE = "SELECT {columns} FROM json_each(:{name})"
RAW_PIECES = PIECE.format(
    name="raw",
    columns="value ->> 0 AS k, value ->> 1 AS lo, value ->> 2 AS hi, value ->> 3 AS lo_text, "
    "value ->> 4 AS hi_text",
)
MINUTE_PIECES, HOUR_PIECES = (
    PIECE.format(name=name, columns="value ->> 0 AS k, value ->> 1 AS lo, value ->> 2 AS hi")
    for name in ("minute", "hour")
)
RAW_US = MICROSECONDS.replace("datetime", "r.datetime")
SERIES_PIECES = f"""
SELECT device_id, k, MIN(low), MAX(high), SUM(total), SUM(n)
FROM (
    SELECT device_id, k, value AS low, value AS high, value / :scale AS total, 1 AS n
    FROM (
        SELECT r.device_id, p.k, r.value, p.lo, p.hi, {RAW_US} AS us
        FROM ({RAW_PIECES}) AS p
        CROSS JOIN readings AS r ON r.device_id IN ({{marks}})
            AND r.datetime >= p.lo_text AND r.datetime < p.hi_text
    )
    WHERE us >= lo AND us < hi
    UNION ALL
    SELECT m.device_id, p.k, m.min, m.max, m.sum, m.count
    FROM ({MINUTE_PIECES}) AS p
    CROSS JOIN rollup_minute AS m
        ON m.device_id IN ({{marks}}) AND m.bucket >= p.lo AND m.bucket < p.hi
    UNION ALL
    SELECT h.device_id, p.k, h.min, h.max, h.sum, h.count
    FROM ({HOUR_PIECES}) AS p
    CROSS JOIN rollup_hour AS h
        ON h.device_id IN ({{marks}}) AND h.bucket >= p.lo AND h.bucket < p.hi
)
GROUP BY device_id, k
ORDER BY device_id, k
"""

RECENT = f"""
SELECT device_id, COUNT(*)
FROM (
    SELECT device_id, {MICROSECONDS} AS us
    FROM readings
    WHERE device_id IN ({{marks}}) AND datetime >= :low AND datetime < :high
)
WHERE us >= :start AND us < :end
GROUP BY device_id
"""

# lower() of SQLite folds ASCII letters only; LOWER_TEXT is Python's, registered per connection
LOWER_TEXT = "pulse_lower"
MATCHING = f"WHERE {LOWER_TEXT}(device_id) LIKE ? ESCAPE '\\'"

# the page's streams, summed up in Python: a sum of seqs near 2**63 overflows in SQL
DEVICE_PAGE = """
SELECT device_id, stream, first_seq, last_seq, count, last_seen
FROM stream_summaries
WHERE device_id IN (
    SELECT device_id FROM stream_summaries {where}
    GROUP BY device_id
    ORDER BY device_id
    LIMIT ? OFFSET ?
)
ORDER BY device_id, stream
"""

DEVICE_TOTAL = "SELECT COUNT(DISTINCT device_id) FROM stream_summaries {where}"

DEVICE = """
SELECT device_id, stream, first_seq, last_seq, count, last_seen
FROM stream_summaries
WHERE device_id = ?
ORDER BY stream
"""

EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
SECOND = dt.timedelta(seconds=1)

# per device, per minute and per hour (bucket: epoch seconds of its start), kept in each
# batch's transaction from the rows it inserted; sum is of value / AVG_SCALE (rollups.py)
ROLLUP_UNITS = (("minute", 60), ("hour", 3600))

ROLLUPS = "".join(
    f"""
CREATE TABLE IF NOT EXISTS rollup_{unit} (
    device_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (device_id, bucket)
) STRICT, WITHOUT ROWID;
"""
    for unit, _ in ROLLUP_UNITS
)

SECONDS = "CAST(strftime('%s', substr(datetime, 1, 19)) AS INTEGER)"

BACKFILL_ROLLUPS = "".join(
    f"""
INSERT INTO rollup_{unit} (device_id, bucket, min, max, sum, count)
SELECT device_id, {SECONDS} / {size} * {size} AS b, MIN(value), MAX(value),
    SUM(value / {AVG_SCALE!r}), COUNT(*)
FROM readings GROUP BY device_id, b;
"""
    for unit, size in ROLLUP_UNITS
)

ROLLUP_UPSERT = """
INSERT INTO rollup_{unit} (device_id, bucket, min, max, sum, count) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id, bucket) DO UPDATE SET
    min = MIN(min, excluded.min), max = MAX(max, excluded.max),
    sum = sum + excluded.sum, count = count + excluded.count
"""

DEVICE_IDS = "SELECT DISTINCT device_id FROM stream_summaries"
SET_HUB = """
INSERT INTO device_hubs (device_id, hub) VALUES (?, ?)
ON CONFLICT (device_id) DO UPDATE SET hub = excluded.hub
"""
EXPIRED = "DELETE FROM readings WHERE device_id = ? AND datetime < ?"
EXPIRED_MINUTES = "DELETE FROM rollup_minute WHERE device_id = ? AND bucket < ?"


def timestamp_text(when: dt.datetime) -> str:
    """Fixed-width UTC text, so that text order is time order (MAX works)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


class SqliteStore:
    """Readings in one SQLite file; writes go through one connection, one batch at a time."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        clock: Clock,
        retention: dt.timedelta | None = None,
    ):
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._retention = retention
        # one transaction at a time on the write connection; aiosqlite would interleave them
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: str | Path, clock: Clock = utc_now, retention: dt.timedelta | None = None
    ) -> SqliteStore:
        """Open or create the database file and bring its schema up to date; `retention`
        is how long readings are kept (None: for ever)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path)
        reader: aiosqlite.Connection | None = None
        try:
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute("PRAGMA synchronous=FULL")
            await writer.execute("PRAGMA busy_timeout=5000")
            await writer.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            await _migrate(writer, path)
            await writer.execute(SERIES_INDEX)
            await writer.execute(HUBS_TABLE)
            await writer.commit()
            # a second connection for queries, so a long read never holds up a batch's commit
            reader = await aiosqlite.connect(path)
            await reader.execute("PRAGMA query_only=ON")
            await reader.execute("PRAGMA busy_timeout=5000")
            await reader.create_function(LOWER_TEXT, 1, _lower, deterministic=True)
        except BaseException:
            if reader is not None:
                await reader.close()
            await writer.close()
            raise
        logger.info("SQLite store open at %s", path)
        return cls(writer, reader, clock, retention)

    def now(self) -> dt.datetime:
        """The store's clock: what receipts are stamped with."""
        return self._clock()

    async def store_batch(self, batch: Batch) -> Ack:
        """Store a batch in one transaction; return the Ack after its commit."""
        return (await self.receive(batch)).ack

    async def receive(self, batch: Batch) -> Receipt:
        """Store a batch and update its stream's summary in one transaction, then commit."""
        now = self._clock()
        good, rejected = split_batch(batch, now)
        cutoff = retention_cutoff(now, self._retention)
        if cutoff is not None:
            good, rejected = refuse_before(batch, good, rejected, cutoff)
        if not good:
            return Receipt(Ack(accepted=0, duplicates=0, rejected=rejected), now)
        received = timestamp_text(now)
        rows = _rows(batch.device_id, batch.stream, good, received)
        async with self._write_lock:
            before = self._writer.total_changes
            try:
                await self._insert(rows)
                accepted = self._writer.total_changes - before
                ack = Ack(accepted=accepted, duplicates=0, rejected=rejected)
                placed = new = good
                if accepted < len(good):
                    stored = await self._stored(batch, good)
                    ack = settle(batch, good, rejected, accepted, stored)
                    placed = in_place(good, stored.ids_by_seq)
                    new = await self._insert_one_by_one(rows, good)
                if accepted:
                    await self._roll_up(batch.device_id, new)
                    seqs = [r.seq for r in placed]
                    summary = (min(seqs), max(seqs), accepted, received)
                    await self._writer.execute(
                        SUMMARY_UPSERT, (batch.device_id, batch.stream, *summary)
                    )
                await self._writer.commit()
            except BaseException:
                await _rollback(self._writer)
                raise
        return Receipt(ack, now)

    async def _insert(self, rows: list[tuple[object, ...]]) -> None:
        """INSERT the rows, ROWS_PER_INSERT to a statement; a clash skips only its row."""
        for start in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[start : start + ROWS_PER_INSERT]
            params = [value for row in chunk for value in row]
            await self._writer.execute(_multi_row_insert(len(chunk)), params)

    async def _insert_one_by_one(
        self, rows: list[tuple[object, ...]], readings: list[Reading]
    ) -> list[Reading]:
        """The readings this batch itself inserted, when some were skipped: the batch's
        inserts are undone and redone row by row, each saying whether it went in. Rare
        (resends), and the count equals the one executemany gave: nothing else writes."""
        await self._writer.rollback()
        new = []
        for row, reading in zip(rows, readings, strict=True):
            cursor = await self._writer.execute(INSERT, row)
            if cursor.rowcount == 1:
                new.append(reading)
        return new

    async def _roll_up(self, device_id: str, readings: list[Reading]) -> None:
        """Add the readings to their minutes' and hours' rollups."""
        minutes: dict[int, list[float]] = {}
        for r in readings:
            second = (r.datetime - EPOCH) // SECOND
            minutes.setdefault(second - second % 60, []).append(float(r.message.value))
        minute_rows = []
        # an hour's figures from its minutes' (a minute lies in one hour): min, max, sum, count
        hours: dict[int, list[float]] = {}
        for start, values in minutes.items():
            low, high = min(values), max(values)
            total, count = sum(v / AVG_SCALE for v in values), len(values)
            minute_rows.append((device_id, start, low, high, total, count))
            hour = hours.get(start - start % 3600)
            if hour is None:
                hours[start - start % 3600] = [low, high, total, count]
            else:
                hour[0], hour[1] = min(hour[0], low), max(hour[1], high)
                hour[2] += total
                hour[3] += count
        hour_rows = [(device_id, h, lo, hi, tot, int(n)) for h, (lo, hi, tot, n) in hours.items()]
        await self._writer.executemany(ROLLUP_UPSERT.format(unit="minute"), minute_rows)
        await self._writer.executemany(ROLLUP_UPSERT.format(unit="hour"), hour_rows)

    async def _stored(self, batch: Batch, readings: list[Reading]) -> Stored:
        """What the writer sees at the readings' seqs, then at their ids where a seq is free."""
        ids_by_seq = await self._ids_by_seq(batch.device_id, batch.stream, readings)
        keys_by_id = await self._keys_by_id(unplaced(readings, ids_by_seq))
        return Stored(ids_by_seq, keys_by_id)

    async def _ids_by_seq(
        self, device_id: str, stream: str, readings: list[Reading]
    ) -> dict[int, uuid.UUID]:
        span = seq_range(readings)
        if span is not None:
            queries = [(IDS_IN_SEQ_RANGE, [device_id, stream, *span])]
        else:
            seqs = sorted({r.seq for r in readings})
            queries = [
                (IDS_AT_SEQS.format(marks=_marks(chunk)), [device_id, stream, *chunk])
                for chunk in _chunks(seqs)
            ]
        ids_by_seq: dict[int, uuid.UUID] = {}
        for sql, params in queries:
            for seq, rid in await self._writer.execute_fetchall(sql, params):
                ids_by_seq[seq] = uuid.UUID(bytes=rid)
        return ids_by_seq

    async def _keys_by_id(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, StoredKey]:
        keys: dict[uuid.UUID, StoredKey] = {}
        for chunk in _chunks([i.bytes for i in ids]):
            sql = KEYS_WITH_IDS.format(marks=_marks(chunk))
            for device_id, stream, seq, rid in await self._writer.execute_fetchall(sql, chunk):
                key = StoredKey(device_id, stream, seq, uuid.UUID(bytes=rid))
                keys[key.id] = key
        return keys

    async def devices(self) -> list[DeviceSummary]:
        """Per device and stream: seq range, count and newest receipt, from the summaries."""
        devices = _summarize(await self._reader.execute_fetchall(DEVICES))
        hubs = await self._reader.execute_fetchall(ALL_HUBS)
        return with_hubs(devices, {device: hub for device, hub in hubs})

    async def device(self, device_id: str) -> DeviceSummary | None:
        """One device's summary from its streams' rows, or None."""
        found = _summarize(await self._reader.execute_fetchall(DEVICE, (device_id,)))
        return (await self._with_hubs(found))[0] if found else None

    async def set_hub(self, device_id: str, hub: str) -> None:
        """Remember the hub a device's readings came through."""
        async with self._write_lock:
            try:
                await self._writer.execute(SET_HUB, (device_id, hub))
                await self._writer.commit()
            except BaseException:
                await _rollback(self._writer)
                raise

    async def _with_hubs(self, devices: list[DeviceSummary]) -> list[DeviceSummary]:
        hubs: dict[str, str] = {}
        for chunk in _chunks([d.device_id for d in devices]):
            sql = f"{ALL_HUBS} WHERE device_id IN ({_marks(chunk)})"
            hubs.update(
                {device: hub for device, hub in await self._reader.execute_fetchall(sql, chunk)}
            )
        return with_hubs(devices, hubs)

    async def device_page(self, search: str | None, offset: int, limit: int) -> DevicePage:
        """A page of devices from the summaries, in SQL: a search scans them, never readings."""
        where, params = ("", []) if search is None else (MATCHING, [like_pattern(search.lower())])
        rows = await self._reader.execute_fetchall(
            DEVICE_PAGE.format(where=where), [*params, limit, offset]
        )
        ((total,),) = await self._reader.execute_fetchall(DEVICE_TOTAL.format(where=where), params)
        return DevicePage(total, await self._with_hubs(_summarize(rows)))

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
        if uses_rollups(width):
            return await self._activity_from_rollups(device_ids, start, end, width, recent)
        params: dict[str, object] = {
            "start": _epoch_us(start),
            "end": _epoch_us(end),
            "recent": _epoch_us(recent),
            "width": width // dt.timedelta(microseconds=1),
            "scale": AVG_SCALE,
            "low": _second_text(start),
            "high": _second_text(end) + "~",
        }
        first = start.astimezone(UTC)
        found: dict[str, Activity] = {}
        for chunk in _chunks(device_ids):
            names = {f"d{i}": device for i, device in enumerate(chunk)}
            sql = ACTIVITY.format(marks=", ".join(f":{name}" for name in names))
            rows = await self._reader.execute_fetchall(sql, {**params, **names})
            for device, bucket, low, high, avg, count, recent_count in rows:
                entry = found.setdefault(device, Activity([], 0))
                entry.points.append(SeriesPoint(first + bucket * width, low, high, avg, count))
                entry.recent += recent_count
        return found

    async def gaps(self, device_id: str, stream: str, limit: int) -> list[tuple[int, int]]:
        """Missing seq runs by a window over the stream's primary key, stopping at `limit`."""
        sql = GAPS.format(device="?", stream="?", limit="?")
        rows = await self._reader.execute_fetchall(sql, (device_id, stream, limit))
        return [(low, high) for low, high in rows]

    async def readings(
        self, device_id: str, since_seq: int | None, limit: int, stream: str | None
    ) -> list[StoredReading]:
        """A device's readings with seq > since_seq, ordered by (stream, seq)."""
        params: list[object] = [device_id, since_seq or 0]
        if stream is not None:
            params.append(stream)
        params.append(limit)
        sql = READINGS.format(stream="AND stream = ?" if stream is not None else "")
        rows = await self._reader.execute_fetchall(sql, params)
        return [
            StoredReading(
                id=uuid.UUID(bytes=rid),
                seq=seq,
                datetime=dt.datetime.fromisoformat(when),
                message=Message(value=value, unit=unit),
                stream=row_stream,
            )
            for row_stream, seq, rid, when, value, unit in rows
        ]

    async def series(
        self, device_id: str, start: dt.datetime, end: dt.datetime, points: int
    ) -> list[SeriesPoint]:
        """A device's readings in [start, end) in at most `points` buckets, by SQL aggregates:
        of the rollups that fit the buckets, and of raw readings only at their edges."""
        width = bucket_width(start, end, points)
        if uses_rollups(width):
            found = await self._from_rollups([device_id], start, end, width)
            return found.get(device_id, [])
        width_us = width // dt.timedelta(microseconds=1)
        start_us = _epoch_us(start)
        params = {
            "device": device_id,
            "start": start_us,
            "end": _epoch_us(end),
            "width": width_us,
            "scale": AVG_SCALE,
            # whole seconds: any text of start's second sorts after its 19-character prefix,
            # any text of end's second before that prefix followed by "~"
            "low": _second_text(start),
            "high": _second_text(end) + "~",
        }
        rows = await self._reader.execute_fetchall(SERIES, params)
        first = start.astimezone(UTC)
        return [
            SeriesPoint(first + bucket * width, low, high, avg, count)
            for bucket, low, high, avg, count in rows
        ]

    async def _from_rollups(
        self, device_ids: list[str], start: dt.datetime, end: dt.datetime, width: dt.timedelta
    ) -> dict[str, list[SeriesPoint]]:
        pieces = plan(start, end, width)
        params: dict[str, object] = {
            "scale": AVG_SCALE,
            "raw": msgspec.json.encode(
                [
                    [k, _epoch_us(lo), _epoch_us(hi), _second_text(lo), _second_text(hi) + "~"]
                    for k, lo, hi in pieces.raw
                ]
            ).decode(),
            "minute": _rollup_pieces(pieces.minute),
            "hour": _rollup_pieces(pieces.hour),
        }
        found: dict[str, list[SeriesPoint]] = {}
        for chunk in _chunks(device_ids):
            names = {f"d{i}": device for i, device in enumerate(chunk)}
            sql = SERIES_PIECES.format(marks=", ".join(f":{name}" for name in names))
            for device, k, low, high, total, count in await self._reader.execute_fetchall(
                sql, {**params, **names}
            ):
                point = SeriesPoint(start + k * width, low, high, total / count * AVG_SCALE, count)
                found.setdefault(device, []).append(point)
        return found

    async def _activity_from_rollups(
        self,
        device_ids: list[str],
        start: dt.datetime,
        end: dt.datetime,
        width: dt.timedelta,
        recent: dt.datetime,
    ) -> dict[str, Activity]:
        buckets = await self._from_rollups(device_ids, start, end, width)
        found = {device: Activity(points, 0) for device, points in buckets.items()}
        params: dict[str, object] = {
            "start": _epoch_us(recent),
            "end": _epoch_us(end),
            "low": _second_text(recent),
            "high": _second_text(end) + "~",
        }
        for chunk in _chunks(device_ids):
            names = {f"d{i}": device for i, device in enumerate(chunk)}
            sql = RECENT.format(marks=", ".join(f":{name}" for name in names))
            for device, count in await self._reader.execute_fetchall(sql, {**params, **names}):
                found.setdefault(device, Activity([], 0)).recent = count
        return found

    async def maintain(self) -> None:
        """Delete readings older than retention keeps, device by device along the series
        index, one transaction per device so that batches get in between."""
        cutoff = retention_cutoff(self._clock(), self._retention)
        if cutoff is None:
            return
        # all-zero microseconds: a reading in the cutoff's own second sorts at or after it
        limit = cutoff.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        devices = [r[0] for r in await self._reader.execute_fetchall(DEVICE_IDS)]
        deleted = 0
        for device in devices:
            async with self._write_lock:
                cursor = await self._writer.execute(EXPIRED, (device, limit))
                deleted += cursor.rowcount
                await self._writer.execute(EXPIRED_MINUTES, (device, _epoch_us(cutoff) // 10**6))
                await self._writer.commit()
        if deleted:
            logger.info("retention: deleted %d readings from before %s", deleted, cutoff.date())

    async def close(self) -> None:
        """Close both connections."""
        await self._reader.close()
        await self._writer.close()


def _rows(
    device_id: str, stream: str, readings: list[Reading], received_at: str
) -> list[tuple[object, ...]]:
    # msgspec renders datetimes to text in C, some forty times faster than isoformat()
    when = msgspec.to_builtins(
        [r.datetime if r.datetime.tzinfo is UTC else r.datetime.astimezone(UTC) for r in readings]
    )
    return [
        (
            device_id,
            stream,
            r.seq,
            r.id.bytes,
            w,
            float(r.message.value),
            r.message.unit,
            received_at,
        )
        for r, w in zip(readings, when, strict=True)
    ]


@functools.lru_cache(maxsize=8)
def _multi_row_insert(count: int) -> str:
    """INSERT with `count` rows of VALUES (cached: a catch-up sends one size again and again)."""
    row = "(" + ", ".join("?" * INSERT_COLUMNS) + ")"
    return INSERT.replace(row, ", ".join([row] * count))


def _summarize(rows: Iterable[Any]) -> list[DeviceSummary]:
    return summarize(
        [
            (device, stream, first, last, count, dt.datetime.fromisoformat(seen))
            for device, stream, first, last, count, seen in rows
        ]
    )


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def _rollup_pieces(ranges: list[tuple[int, dt.datetime, dt.datetime]]) -> str:
    """Rollup pieces as JSON [k, low, high] in epoch seconds."""
    return msgspec.json.encode(
        [[k, (lo - EPOCH) // SECOND, (hi - EPOCH) // SECOND] for k, lo, hi in ranges]
    ).decode()


def _epoch_us(when: dt.datetime) -> int:
    return (when - EPOCH) // dt.timedelta(microseconds=1)


def _second_text(when: dt.datetime) -> str:
    # isoformat, not strftime: %Y does not pad a year before 1000 to four digits
    return when.astimezone(UTC).isoformat(timespec="seconds")[:19]


def _chunks(items: Sequence[object]) -> list[list[object]]:
    return [list(items[i : i + KEY_CHUNK]) for i in range(0, len(items), KEY_CHUNK)]


def _marks(chunk: list[object]) -> str:
    return ", ".join("?" * len(chunk))


async def _rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.rollback()
    except Exception:
        logger.exception("rollback failed")


async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
    """Create the schema in a new file, add the summaries to a version 1 file and the rollups
    to a version 1 or 2 one (both filled from its readings); refuse a newer file."""
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this collector's schema version "
            f"{SCHEMA_VERSION}; run a newer collector"
        )
    if version == SCHEMA_VERSION:
        return
    # one transaction: a crash leaves version 1 with no summaries, and the next open redoes it
    summaries = f"{SUMMARIES} {BACKFILL_SUMMARIES};" if version < 2 else ""
    await conn.executescript(
        f"BEGIN IMMEDIATE; {SCHEMA} {summaries} {ROLLUPS} {BACKFILL_ROLLUPS}"
        f" PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    )
    action = "created" if version == 0 else f"migrated from version {version} to"
    logger.info("%s collector schema version %d in %s", action, SCHEMA_VERSION, path)
