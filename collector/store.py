"""The reading store's interface and result types; SQLite and PostgreSQL implement it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Protocol

import msgspec

from pulse_wire import Ack, Batch, Reading, Rejection

# SQLite's (PostgreSQL's is store_postgres.SCHEMA_VERSION)
# 2: stream_summaries, kept in each batch's transaction, so devices() reads one row per stream
# 3: per-minute and per-hour rollups, kept the same way, so long series read no raw readings
SCHEMA_VERSION = 3

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The current time, timezone-aware in UTC; the stores' default clock."""
    return dt.datetime.now(dt.UTC)


class StoreError(RuntimeError):
    """The database cannot be used, e.g. its schema is newer than this program."""


class StoredReading(Reading):
    """A reading as the collector returns it: the wire Reading plus its stream."""

    stream: str


class StreamSummary(msgspec.Struct):
    """One stream of a device.

    `missing` is `last_seq - count`: the number of seqs in 1..last_seq never received.
    It assumes that a stream's seq starts at 1, as the agent's queue does, and counts
    seqs before `first_seq` as missing too.
    """

    stream: str
    first_seq: int
    last_seq: int
    count: int
    missing: int


class DeviceSummary(msgspec.Struct):
    """What the collector holds for one device; last_seen is the newest receipt, and `hub` the
    agent its readings last came through when that is not the device itself."""

    device_id: str
    count: int
    last_seen: dt.datetime
    streams: list[StreamSummary]
    hub: str | None = None


class Receipt(msgspec.Struct):
    """A stored batch's Ack and when it was received (the accepted readings' last_seen)."""

    ack: Ack
    received_at: dt.datetime


class DevicePage(msgspec.Struct):
    """A page of devices, ordered by device id, and how many match in all."""

    total: int
    devices: list[DeviceSummary]


class SeriesPoint(msgspec.Struct):
    """One time bucket of a device's readings: its start and the values' aggregates."""

    t: dt.datetime
    min: float
    max: float
    avg: float
    count: int


# avg() sums in float: a bucket of values near float's limit (other units than bpm have no
# plausible range) would overflow, an error on PostgreSQL and `inf` on SQLite. Scaling by a
# power of two is exact, so the average is the same to the bit, unless a value is below
# 2**-990, which then loses some digits; overflow would need 2**32 values near the limit.
AVG_SCALE = 2.0**32


def bucket_width(start: dt.datetime, end: dt.datetime, points: int) -> dt.timedelta:
    """ceil((end - start) / points) in whole milliseconds, at least 1 ms."""
    span_us = (end - start) // dt.timedelta(microseconds=1)
    # whole milliseconds, so that every bucket start is a round time a chart can label
    width_ms = max(1, -(-span_us // (1000 * points)))
    return dt.timedelta(milliseconds=width_ms)


DAY = dt.timedelta(days=1)


def day_of(when: dt.datetime) -> dt.date:
    """The UTC day a datetime falls in."""
    return when.astimezone(dt.UTC).date()


def day_start(day: dt.date) -> dt.datetime:
    """Midnight UTC at the start of a day."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def retention_cutoff(now: dt.datetime, retention: dt.timedelta | None) -> dt.datetime | None:
    """The start of the oldest day still kept: readings before it are dropped and refused."""
    if retention is None:
        return None
    return day_start(day_of(now - retention))


def refuse_before(
    batch: Batch, good: list[Reading], rejected: list[Rejection], cutoff: dt.datetime
) -> tuple[list[Reading], list[Rejection]]:
    """`good` without the readings older than retention keeps, which join `rejected`.

    A reading before the cutoff would land where retention has already dropped its day:
    refused, so the client's dead letters hold it rather than it vanishing here.
    """
    if all(r.datetime >= cutoff for r in good):
        return good, rejected
    kept = [r for r in good if r.datetime >= cutoff]
    too_old = {
        r.id: Rejection(
            id=str(r.id),
            error=f"datetime {r.datetime.isoformat()} is before {cutoff.date()}, the oldest "
            "day this server keeps (retention_days)",
        )
        for r in good
        if r.datetime < cutoff
    }
    refused = {rejection.id: rejection for rejection in rejected}
    # in batch order, as split_batch gives them
    ordered = [
        too_old.get(r.id) or refused[str(r.id)]
        for r in batch.readings
        if r.id in too_old or str(r.id) in refused
    ]
    return kept, ordered


class Activity(msgspec.Struct):
    """A device's recent readings: a sparkline's buckets and how many are newer than a time."""

    points: list[SeriesPoint]
    recent: int


class ReadingStore(Protocol):
    """Durable storage of readings; every batch is one transaction, acked after commit."""

    def now(self) -> dt.datetime:
        """The store's clock: what receipts are stamped with, and what "recent" is measured by."""
        ...

    async def store_batch(self, batch: Batch) -> Ack:
        """Store a batch; count what was new, what was already there and what was refused."""
        ...

    async def receive(self, batch: Batch) -> Receipt:
        """`store_batch`, also saying when the batch was received."""
        ...

    async def devices(self) -> list[DeviceSummary]:
        """Summaries of every device, ordered by device id."""
        ...

    async def device(self, device_id: str) -> DeviceSummary | None:
        """One device's summary, or None if it has no reading."""
        ...

    async def device_page(self, search: str | None, offset: int, limit: int) -> DevicePage:
        """Devices ordered by id, `limit` from `offset`; `search`: a case-insensitive substring."""
        ...

    async def activity(
        self,
        device_ids: list[str],
        start: dt.datetime,
        end: dt.datetime,
        points: int,
        recent: dt.datetime,
    ) -> dict[str, Activity]:
        """Each device's readings in [start, end) in `points` buckets as series() cuts them,
        and how many of them lie in [recent, end); a device without any is left out."""
        ...

    async def gaps(self, device_id: str, stream: str, limit: int) -> list[tuple[int, int]]:
        """The first `limit` runs of missing seqs (from 1 on) of a stream, inclusive ranges."""
        ...

    async def readings(
        self, device_id: str, since_seq: int | None, limit: int, stream: str | None
    ) -> list[StoredReading]:
        """A device's readings with seq > since_seq, ordered by (stream, seq)."""
        ...

    async def series(
        self, device_id: str, start: dt.datetime, end: dt.datetime, points: int
    ) -> list[SeriesPoint]:
        """A device's readings in [start, end) aggregated into at most `points` time buckets.

        The buckets are `bucket_width(start, end, points)` wide from `start`; an empty one
        is left out. Computed by the database, so a long range is never loaded into Python.
        """
        ...

    async def set_hub(self, device_id: str, hub: str) -> None:
        """Remember the hub (an agent relaying several devices) a device's readings came by."""
        ...

    async def maintain(self) -> None:
        """Periodic upkeep: partitions for the coming days, and retention; idempotent."""
        ...

    async def close(self) -> None:
        """Release the connection(s); the store cannot be used afterwards."""
        ...


def summarize(rows: list[tuple[str, str, int, int, int, dt.datetime]]) -> list[DeviceSummary]:
    """Group (device, stream, first, last, count, last_seen) rows, ordered by device."""
    devices: list[DeviceSummary] = []
    for device_id, stream, first_seq, last_seq, count, last_seen in rows:
        if not devices or devices[-1].device_id != device_id:
            devices.append(DeviceSummary(device_id, 0, last_seen, []))
        device = devices[-1]
        device.count += count
        device.last_seen = max(device.last_seen, last_seen)
        device.streams.append(
            StreamSummary(stream, first_seq, last_seq, count, missing=last_seq - count)
        )
    return devices


def in_place(readings: list[Reading], ids_by_seq: dict[int, uuid.UUID]) -> list[Reading]:
    """The readings whose seq holds their own id after an insert: accepted or duplicates.

    Their seqs bound what the batch added to its stream's seq range: a duplicate's seq lies
    in the range already.
    """
    return [r for r in readings if ids_by_seq.get(r.seq) == r.id]


def like_pattern(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching any text that contains `text` as it is."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# The same SQL on both backends below; SQLite's `?` and PostgreSQL's `$n` are filled in by
# each store where they differ.

# per-stream aggregates over every reading: what stream_summaries holds, computed the slow
# way. It fills the table when a database without it is opened, and bench/overview.py and the
# tests compare the two.
DEVICES_FROM_READINGS = """
SELECT device_id, stream, MIN(seq), MAX(seq), COUNT(*), MAX(received_at)
FROM readings
GROUP BY device_id, stream
ORDER BY device_id, stream
"""

DEVICES = """
SELECT device_id, stream, first_seq, last_seq, count, last_seen
FROM stream_summaries
ORDER BY device_id, stream
"""

BACKFILL_SUMMARIES = """
INSERT INTO stream_summaries (device_id, stream, first_seq, last_seq, count, last_seen)
SELECT device_id, stream, MIN(seq), MAX(seq), COUNT(*), MAX(received_at)
FROM readings
GROUP BY device_id, stream
"""

# the hub each relayed device last came through (created at every open, on both backends)
HUBS_TABLE = """
CREATE TABLE IF NOT EXISTS device_hubs (
    device_id TEXT PRIMARY KEY,
    hub TEXT NOT NULL
)
"""

ALL_HUBS = "SELECT device_id, hub FROM device_hubs"


def with_hubs(devices: list[DeviceSummary], hubs: dict[str, str]) -> list[DeviceSummary]:
    """The summaries with their hubs filled in."""
    for device in devices:
        device.hub = hubs.get(device.device_id)
    return devices


# a seq run is missing where a seq follows its predecessor (0 before the first) by more than 1
GAPS = """
SELECT prev + 1, seq - 1
FROM (
    SELECT seq, LAG(seq, 1, 0) OVER (ORDER BY seq) AS prev
    FROM readings
    WHERE device_id = {device} AND stream = {stream}
) AS runs
WHERE seq - prev > 1
ORDER BY seq
LIMIT {limit}
"""
