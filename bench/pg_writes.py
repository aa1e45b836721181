"""PostgreSQL write strategies for the collector, side by side: one run, same machine, same data.

    .venv/bin/python bench/pg_writes.py [--producers 50] [--batches 8000] [--big-batches 200]
        [--rounds 3] [--server-url postgresql://postgres@127.0.0.1:5432/postgres]

Each strategy stores the same batches (each one device's consecutive seqs, UUIDv7-style ids,
1 % of batches sent a second time) from C producer tasks at once, in two sizes: 10 readings
(the fleet's batch) and 1,000 (an agent catching up). Every strategy keeps the store's
semantics: the ledger decides dedup, only readings whose key went in are stored, rolled up
and counted, and the ack is computed after the commit.

  unnest       PostgresStore.receive: the collector's one-statement CTE, implicit transaction
  executemany  BEGIN, keys by executemany ON CONFLICT DO NOTHING, the keys this transaction
               inserted (xmin), readings and rollups by executemany, the summary, COMMIT
  copy         BEGIN, COPY into a per-connection temp table (ON COMMIT DELETE ROWS), the
               store's CTE reading from it, COMMIT
  group        group commit (collector/group_commit.py): one writer task takes every waiting
               batch (up to 200 batches or 10,000 readings), writes them with one
               multi-batch statement (implicit transaction), then resolves each producer's
               future with its own accepted count
  group2       the same with 2 writer tasks

Rounds alternate the order of the strategies (the machine is noisy). Each run gets a fresh
schema of a scratch database `pulse_bench_<random>` (dropped at the end), made by
`PostgresStore.open`. After each run: every reading sent is in `readings` exactly once
(ids compared in PostgreSQL), the ledger, rollups and summaries agree with the readings,
and the acks add up. PostgreSQL's side: commits, WAL bytes and WAL syncs per batch
(pg_stat_database, pg_stat_wal: the latter is cluster-wide and counts other work too), and
EXPLAIN (ANALYZE, BUFFERS, WAL) plus a serial statement/commit split for unnest and group.

The last line is one JSON object with the medians and the ratios to unnest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.conflicts import settle
from collector.group_commit import (
    GROUP_STORE,
    GroupStats,
    Limits,
    Pending,
    create_group_commit,
    group_arrays,
)
from collector.rollups import HOUR, MINUTE, ORIGIN, floor_to
from collector.store import AVG_SCALE, utc_now
from collector.store_postgres import PostgresStore, _stored
from pulse_wire import Ack, Batch, Message, Reading, split_batch

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STRATEGIES = ("unnest", "executemany", "copy", "group", "group2")
SIZES = {"small": 10, "big": 1000}
POOL_SIZE = 10
RESEND_SHARE = 0.01
# a device sends this many batches in a run, round after round, as the fleet's agents do
ROUNDS_PER_DEVICE = 4
READING_GAP_S = 0.5
# 1 µs .. 10 min, 3 significant digits
HISTOGRAM = (1, 600_000_000, 3)
PROBE_BATCHES = 100
PROBE_GROUP = 50
PROBE_GROUPS = 10

# --- executemany: one statement per row, pipelined by asyncpg, in one transaction ---------

KEY_ROW = """
INSERT INTO reading_keys (device_id, stream, seq, id, datetime) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
"""

# the keys that this transaction inserted: xmin is ours only for rows we wrote
KEYS_OF_THIS_XACT = """
SELECT k.seq, k.id
FROM unnest($3::bigint[]) AS s(seq)
JOIN reading_keys AS k ON k.device_id = $1 AND k.stream = $2 AND k.seq = s.seq
WHERE k.xmin = pg_current_xact_id()::xid
"""

READING_ROW = """
INSERT INTO readings (device_id, stream, seq, id, datetime, value, unit, received_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

ROLLUP_ROW = """
INSERT INTO rollup_{unit} AS u (device_id, bucket, min, max, sum, count)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (device_id, bucket) DO UPDATE SET
    min = LEAST(u.min, EXCLUDED.min), max = GREATEST(u.max, EXCLUDED.max),
    sum = u.sum + EXCLUDED.sum, count = u.count + EXCLUDED.count
"""

SUMMARY_ROW = """
INSERT INTO stream_summaries AS s (device_id, stream, first_seq, last_seq, count, last_seen)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (device_id, stream) DO UPDATE SET
    first_seq = LEAST(s.first_seq, EXCLUDED.first_seq),
    last_seq = GREATEST(s.last_seq, EXCLUDED.last_seq),
    count = s.count + EXCLUDED.count,
    last_seen = GREATEST(s.last_seen, EXCLUDED.last_seen)
"""

# --- copy: the store's CTE over a temp table that COPY filled -------------------------------

INCOMING = """
CREATE TEMP TABLE incoming (
    seq bigint, id uuid, datetime timestamptz, value float8, unit text, n bigint
) ON COMMIT DELETE ROWS
"""
INCOMING_COLUMNS = ("seq", "id", "datetime", "value", "unit", "n")

ROLLUP_CTE = """
), {unit}s AS (
    INSERT INTO rollup_{unit} AS u (device_id, bucket, min, max, sum, count)
    SELECT device_id, date_bin('1 {unit}', datetime, ${origin}), min(value), max(value),
        sum(value / ${scale}::float8), count(*)
    FROM stored GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (device_id, bucket) DO UPDATE SET
        min = LEAST(u.min, EXCLUDED.min), max = GREATEST(u.max, EXCLUDED.max),
        sum = u.sum + EXCLUDED.sum, count = u.count + EXCLUDED.count
"""


def rollup_ctes(origin: int, scale: int) -> str:
    """The minute and hour rollup upserts over the CTE `stored` (device_id, datetime, value)."""
    return "".join(
        ROLLUP_CTE.format(unit=unit, origin=origin, scale=scale).strip("\n") + "\n"
        for unit in ("minute", "hour")
    )


SUMMARY_CTE = """
), summary AS (
    INSERT INTO stream_summaries AS s (device_id, stream, first_seq, last_seq, count, last_seen)
    SELECT device_id, stream, min(seq), max(seq), count(*), ${now} FROM accepted
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (device_id, stream) DO UPDATE SET
        first_seq = LEAST(s.first_seq, EXCLUDED.first_seq),
        last_seq = GREATEST(s.last_seq, EXCLUDED.last_seq),
        count = s.count + EXCLUDED.count,
        last_seen = GREATEST(s.last_seen, EXCLUDED.last_seen)
)
"""

# $1 device, $2 stream, $3 now, $4 origin, $5 scale
COPY_STORE = (
    """
WITH batch AS (
    SELECT DISTINCT ON (seq, id) $1::text AS device_id, $2::text AS stream, *
    FROM incoming ORDER BY seq, id, n
), keys AS (
    INSERT INTO reading_keys (device_id, stream, seq, id, datetime)
    SELECT device_id, stream, seq, id, datetime FROM batch ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING device_id, stream, seq, id
), accepted AS (
    SELECT r.* FROM batch AS r JOIN keys AS k USING (device_id, stream, seq, id)
), stored AS (
    INSERT INTO readings (device_id, stream, seq, id, datetime, value, unit, received_at)
    SELECT device_id, stream, seq, id, datetime, value, unit, $3 FROM accepted
    RETURNING device_id, datetime, value
"""
    + rollup_ctes(4, 5)
    + SUMMARY_CTE.format(now=3)
    + "SELECT count(*) FROM accepted\n"
)


class Writer(Protocol):
    """One strategy: store a batch, return its Ack after the commit."""

    steps: dict[str, float]

    async def store(self, batch: Batch) -> Ack: ...

    async def close(self) -> None: ...


async def _no_reset(conn: Any) -> None:
    """As the store's pool: no reset query on release (no session state is left behind)."""


async def _classified(conn: Any, batch: Batch, good: list[Reading], rejected: Any, n: int) -> Ack:
    """The Ack, reading back what is stored only when fewer went in than were sent."""
    if n == len(good):
        return Ack(accepted=n, duplicates=0, rejected=rejected)
    return settle(batch, good, rejected, n, await _stored(conn, batch, good))


@contextlib.contextmanager
def timed(steps: dict[str, float], name: str) -> Any:
    """Add the block's wall time to steps[name] (client side, round trip included)."""
    began = time.perf_counter()
    try:
        yield
    finally:
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - began


class UnnestWriter:
    """The current path: PostgresStore.receive."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self.steps: dict[str, float] = {}

    @classmethod
    async def open(cls, url: str) -> UnnestWriter:
        """Open the collector's own store on the schema."""
        return cls(await PostgresStore.open(url, max_connections=POOL_SIZE))

    async def store(self, batch: Batch) -> Ack:
        """One statement, one round trip."""
        with timed(self.steps, "receive"):
            return (await self._store.receive(batch)).ack

    async def close(self) -> None:
        """Close the store's pool."""
        await self._store.close()


class ExecutemanyWriter:
    """Keys, readings and rollups by executemany, in one explicit transaction."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.steps: dict[str, float] = {}

    @classmethod
    async def open(cls, url: str) -> ExecutemanyWriter:
        """A pool like the store's."""
        return cls(await _pool(url, POOL_SIZE))

    async def store(self, batch: Batch) -> Ack:
        """BEGIN, keys, which went in, readings, rollups, summary, COMMIT; then the Ack."""
        now = utc_now()
        good, rejected = split_batch(batch, now)
        if not good:
            return Ack(accepted=0, duplicates=0, rejected=rejected)
        device, stream, steps = batch.device_id, batch.stream, self.steps
        async with self._pool.acquire() as conn:
            with timed(steps, "begin"):
                tx = conn.transaction()
                await tx.start()
            try:
                with timed(steps, "keys"):
                    rows = [(device, stream, r.seq, r.id, r.datetime) for r in good]
                    await conn.executemany(KEY_ROW, rows)
                with timed(steps, "find_inserted"):
                    found = await conn.fetch(
                        KEYS_OF_THIS_XACT, device, stream, [r[2] for r in rows]
                    )
                inserted = {(seq, rid) for seq, rid in found}
                # the first of exact copies within the batch, as the CTE's DISTINCT ON
                fresh = list({(r.seq, r.id): r for r in reversed(good)}.values())
                fresh = [r for r in fresh if (r.seq, r.id) in inserted]
                if fresh:
                    await self._write(conn, device, stream, fresh, now)
            except BaseException:
                await tx.rollback()
                raise
            with timed(steps, "commit"):
                await tx.commit()
            return await _classified(conn, batch, good, rejected, len(fresh))

    async def _write(
        self, conn: Any, device: str, stream: str, fresh: list[Reading], now: dt.datetime
    ) -> None:
        with timed(self.steps, "readings"):
            await conn.executemany(
                READING_ROW,
                [
                    (device, stream, r.seq, r.id, r.datetime, r.message.value, r.message.unit, now)
                    for r in fresh
                ],
            )
        with timed(self.steps, "rollups"):
            for unit, width in (("minute", MINUTE), ("hour", HOUR)):
                await conn.executemany(
                    ROLLUP_ROW.format(unit=unit), _rollup_rows(device, fresh, width)
                )
        with timed(self.steps, "summary"):
            seqs = [r.seq for r in fresh]
            await conn.execute(SUMMARY_ROW, device, stream, min(seqs), max(seqs), len(seqs), now)

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()


def _rollup_rows(device: str, fresh: list[Reading], width: dt.timedelta) -> list[tuple[Any, ...]]:
    """(device, bucket, min, max, sum of value/AVG_SCALE, count) per bucket, in bucket order."""
    buckets: dict[dt.datetime, list[float]] = {}
    for r in fresh:
        buckets.setdefault(floor_to(r.datetime, width), []).append(float(r.message.value))
    return [
        (device, bucket, min(v), max(v), sum(x / AVG_SCALE for x in v), len(v))
        for bucket, v in sorted(buckets.items())
    ]


class CopyWriter:
    """COPY into a temp table, then the store's CTE over it, in one explicit transaction."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.steps: dict[str, float] = {}

    @classmethod
    async def open(cls, url: str) -> CopyWriter:
        """A pool like the store's, each connection with its own temp table."""
        return cls(await _pool(url, POOL_SIZE, init=_create_incoming))

    async def store(self, batch: Batch) -> Ack:
        """BEGIN, COPY, INSERT ... SELECT ... ON CONFLICT (one CTE), COMMIT; then the Ack."""
        now = utc_now()
        good, rejected = split_batch(batch, now)
        if not good:
            return Ack(accepted=0, duplicates=0, rejected=rejected)
        steps = self.steps
        records = [
            (r.seq, r.id, r.datetime, float(r.message.value), r.message.unit, n)
            for n, r in enumerate(good)
        ]
        async with self._pool.acquire() as conn:
            with timed(steps, "begin"):
                tx = conn.transaction()
                await tx.start()
            try:
                with timed(steps, "copy"):
                    await conn.copy_records_to_table(
                        "incoming", records=records, columns=INCOMING_COLUMNS
                    )
                with timed(steps, "insert_select"):
                    accepted = int(
                        await conn.fetchval(
                            COPY_STORE, batch.device_id, batch.stream, now, ORIGIN, AVG_SCALE
                        )
                    )
            except BaseException:
                await tx.rollback()
                raise
            with timed(steps, "commit"):
                await tx.commit()
            return await _classified(conn, batch, good, rejected, accepted)

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()


async def _create_incoming(conn: Any) -> None:
    await conn.execute(INCOMING)


class GroupWriter:
    """Group commit (collector/group_commit.py): writer tasks store the waiting batches
    together; short batches are classified afterwards, as the store does."""

    def __init__(self, pool: Any, writers: int) -> None:
        self._pool = pool
        self._group_commit = create_group_commit(pool, Limits(writers=writers))
        self.steps: dict[str, float] = {}

    @classmethod
    async def open(cls, url: str, writers: int) -> GroupWriter:
        """A connection per writer, and one to classify short batches."""
        return cls(await _pool(url, writers + 1), writers)

    @property
    def stats(self) -> GroupStats:
        """How many groups, batches and readings were written."""
        return self._group_commit.stats

    async def store(self, batch: Batch) -> Ack:
        """Queue the batch, wait for its group's commit, then the Ack."""
        now = utc_now()
        good, rejected = split_batch(batch, now)
        if not good:
            return Ack(accepted=0, duplicates=0, rejected=rejected)
        accepted = await self._group_commit.write(batch.device_id, batch.stream, good, now)
        if accepted == len(good):
            return Ack(accepted=accepted, duplicates=0, rejected=rejected)
        async with self._pool.acquire() as conn:
            return await _classified(conn, batch, good, rejected, accepted)

    async def close(self) -> None:
        """Stop the writers, then the pool."""
        await self._group_commit.close()
        await self._pool.close()


async def _pool(url: str, size: int, init: Callable[[Any], Awaitable[None]] | None = None) -> Any:
    return await asyncpg.create_pool(url, min_size=size, max_size=size, reset=_no_reset, init=init)


async def open_writer(strategy: str, url: str) -> Writer:
    """The strategy's writer on the schema at `url`."""
    if strategy == "unnest":
        return await UnnestWriter.open(url)
    if strategy == "executemany":
        return await ExecutemanyWriter.open(url)
    if strategy == "copy":
        return await CopyWriter.open(url)
    if strategy == "group":
        return await GroupWriter.open(url, 1)
    if strategy == "group2":
        return await GroupWriter.open(url, 2)
    raise ValueError(f"unknown strategy {strategy!r}")


# --- the data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The batches to send, in order (resends included), and the warm-up batches."""

    warm: list[Batch]
    batches: list[Batch]
    unique_readings: int
    resent_readings: int


def make_workload(count: int, size: int, producers: int, seed: int) -> Workload:
    """`count` batches of `size` readings: devices send ROUNDS_PER_DEVICE batches of
    consecutive seqs, round after round, so batches in flight are of different devices."""
    rng = random.Random(seed)
    devices = max(1, count // ROUNDS_PER_DEVICE)
    span = dt.timedelta(seconds=ROUNDS_PER_DEVICE * size * READING_GAP_S)
    start = utc_now().replace(microsecond=0) - span - dt.timedelta(minutes=1)
    batches = [
        _batch(f"bench-{size}-{k % devices:06d}", k // devices, size, start, rng)
        for k in range(count)
    ]
    warm = [_batch(f"warm-{size}-{k:06d}", 0, size, start, rng) for k in range(producers)]
    sent = list(batches)
    resent = 0
    for k, batch in enumerate(batches):
        if rng.random() < RESEND_SHARE:
            sent.insert(min(len(sent), k + rng.randint(1, 200)), batch)
            resent += len(batch.readings)
    unique = sum(len(b.readings) for b in batches) + sum(len(b.readings) for b in warm)
    return Workload(warm, sent, unique, resent)


def _batch(device: str, round_no: int, size: int, start: dt.datetime, rng: random.Random) -> Batch:
    first = round_no * size
    readings = [
        Reading(
            id=_uuid7(rng, start + dt.timedelta(seconds=(first + i) * READING_GAP_S)),
            seq=first + i + 1,
            datetime=start + dt.timedelta(seconds=(first + i) * READING_GAP_S),
            message=Message(value=float(rng.randint(50, 150)), unit="bpm"),
        )
        for i in range(size)
    ]
    return Batch(device_id=device, stream=f"s-{device}", readings=readings)


def _uuid7(rng: random.Random, when: dt.datetime) -> uuid.UUID:
    """A UUIDv7 for `when` from the seeded generator, so every run sends the same ids."""
    ms = int(when.timestamp() * 1000)
    bits = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    return uuid.UUID(int=bits | rng.getrandbits(62))


# --- one run -------------------------------------------------------------------------------


@dataclass
class Run:
    """What one strategy did on one workload."""

    strategy: str
    size: str
    seconds: float
    batches: int
    readings: int
    p50_ms: float
    p99_ms: float
    check: dict[str, int]
    pg: dict[str, float]
    steps_ms: dict[str, float]
    group: dict[str, float] = field(default_factory=dict)

    @property
    def readings_per_s(self) -> float:
        """Readings sent (resends included) per second."""
        return self.readings / self.seconds

    @property
    def batches_per_s(self) -> float:
        """Batches sent per second."""
        return self.batches / self.seconds


async def produce(
    writer: Writer, batches: Sequence[Batch], producers: int, histogram: Any
) -> list[Ack]:
    """Send every batch from `producers` tasks at once; latency from call to ack."""
    acks: list[Ack] = []
    work = iter(batches)

    async def run_producer() -> None:
        for batch in work:
            began = time.perf_counter()
            acks.append(await writer.store(batch))
            if histogram is not None:
                histogram.record_value(max(1, int((time.perf_counter() - began) * 1e6)))

    async with asyncio.TaskGroup() as tasks:
        for _ in range(producers):
            tasks.create_task(run_producer())
    return acks


async def run_once(strategy: str, size: str, url: str, workload: Workload, producers: int) -> Run:
    """One strategy over the workload, on a fresh schema; checked and counted."""
    async with fresh_schema(url, f"{strategy}_{size}") as schema:
        store = await PostgresStore.open(schema, max_connections=1)  # the collector's DDL
        await store.close()
        writer = await open_writer(strategy, schema)
        try:
            warm_acks = await produce(writer, workload.warm, producers, None)
            writer.steps.clear()
            before = await pg_counters(url)
            histogram = HdrHistogram(*HISTOGRAM)
            began = time.perf_counter()
            acks = await produce(writer, workload.batches, producers, histogram)
            seconds = time.perf_counter() - began
        finally:
            await writer.close()
        after = await pg_counters(url)  # the pool is closed: its backends flushed their stats
        batches = len(workload.batches)
        check = await check_stored(schema, workload)
        check.update(check_acks(warm_acks + acks, workload))
        readings = sum(len(b.readings) for b in workload.batches)
        group = {}
        if isinstance(writer, GroupWriter) and writer.stats.groups:
            group = {
                "groups": writer.stats.groups,
                "batches_per_group": round(writer.stats.batches / writer.stats.groups, 1),
            }
        return Run(
            strategy=strategy,
            size=size,
            seconds=seconds,
            batches=batches,
            readings=readings,
            p50_ms=histogram.get_value_at_percentile(50) / 1000,
            p99_ms=histogram.get_value_at_percentile(99) / 1000,
            check=check,
            pg={k: (after[k] - before[k]) / batches for k in after},
            steps_ms={k: round(v / batches * 1000, 3) for k, v in writer.steps.items()},
            group=group,
        )


@contextlib.asynccontextmanager
async def fresh_schema(url: str, prefix: str) -> AsyncIterator[str]:
    """A new schema, dropped afterwards; yields a URL that uses it."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await _execute(url, f"CREATE SCHEMA {name}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}search_path={name}"
    finally:
        await _execute(url, f"DROP SCHEMA {name} CASCADE")


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


PG_COUNTERS = """
SELECT d.xact_commit, d.xact_rollback, d.blks_hit + d.blks_read,
    w.wal_records, w.wal_bytes, w.wal_write, w.wal_sync
FROM pg_stat_database AS d, pg_stat_wal AS w
WHERE d.datname = current_database()
"""
PG_COUNTER_NAMES = (
    "commits",
    "rollbacks",
    "blocks",
    "wal_records_cluster",
    "wal_bytes_cluster",
    "wal_writes_cluster",
    "wal_syncs_cluster",
)


async def pg_counters(url: str) -> dict[str, float]:
    """The bench database's commits and blocks, and the cluster's WAL counters."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(PG_COUNTERS)
    finally:
        await conn.close()
    return {name: float(value) for name, value in zip(PG_COUNTER_NAMES, row, strict=True)}


SENT_TABLE = "CREATE TEMP TABLE sent (device_id text, stream text, seq bigint, id uuid)"
KEY = "device_id, stream, seq, id"
CHECKS = {
    "lost": f"SELECT count(*) FROM (SELECT {KEY} FROM sent EXCEPT SELECT {KEY} FROM readings) x",
    "extra": f"SELECT count(*) FROM (SELECT {KEY} FROM readings EXCEPT SELECT {KEY} FROM sent) x",
    "stored_twice": "SELECT count(*) - count(DISTINCT id) FROM readings",
    "ledger_mismatch": f"""SELECT count(*) FROM (
        (SELECT {KEY} FROM reading_keys EXCEPT ALL SELECT {KEY} FROM readings)
        UNION ALL (SELECT {KEY} FROM readings EXCEPT ALL SELECT {KEY} FROM reading_keys)) x""",
    "summary_mismatch": """SELECT count(*) FROM (
        (SELECT device_id, stream, first_seq, last_seq, count FROM stream_summaries
         EXCEPT SELECT device_id, stream, min(seq), max(seq), count(*) FROM readings GROUP BY 1, 2)
        UNION ALL
        (SELECT device_id, stream, min(seq), max(seq), count(*) FROM readings GROUP BY 1, 2
         EXCEPT SELECT device_id, stream, first_seq, last_seq, count FROM stream_summaries)) x""",
    **{
        f"rollup_{unit}_mismatch": f"""SELECT count(*) FROM (
        (SELECT device_id, bucket, min, max, sum, count FROM rollup_{unit}
         EXCEPT {{computed}})
        UNION ALL ({{computed}} EXCEPT
         SELECT device_id, bucket, min, max, sum, count FROM rollup_{unit})) x""".format(
            computed=f"SELECT device_id, date_bin('1 {unit}', datetime, $1), min(value), "
            f"max(value), sum(value / $2::float8), count(*) FROM readings GROUP BY 1, 2"
        )
        for unit in ("minute", "hour")
    },
}


async def check_stored(url: str, workload: Workload) -> dict[str, int]:
    """Sent and stored compared reading by reading, and the derived tables with the readings."""
    records = {
        (b.device_id, b.stream, r.seq, r.id)
        for b in workload.warm + workload.batches
        for r in b.readings
    }
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SENT_TABLE)
        await conn.copy_records_to_table("sent", records=list(records))
        await conn.execute("ANALYZE sent")
        found: dict[str, int] = {}
        for name, sql in CHECKS.items():
            args = (ORIGIN, AVG_SCALE) if "$1" in sql else ()
            found[name] = int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()
    return found


def check_acks(acks: Sequence[Ack], workload: Workload) -> dict[str, int]:
    """How far the acks are from what was sent: every reading accepted once, resends dups."""
    accepted = sum(a.accepted for a in acks)
    duplicates = sum(a.duplicates for a in acks)
    rejected = sum(len(a.rejected) for a in acks)
    return {
        "ack_accepted_off": accepted - workload.unique_readings,
        "ack_duplicates_off": duplicates - workload.resent_readings,
        "ack_rejected": rejected,
    }


# --- where the time goes -------------------------------------------------------------------


async def profile(url: str, producers: int, seed: int) -> dict[str, Any]:
    """On one connection, serially: the unnest statement and a group of PROBE_GROUP batches,
    each as sent (implicit commit), then inside BEGIN/COMMIT with the COMMIT timed alone,
    and one EXPLAIN (ANALYZE, BUFFERS, WAL) of each (rolled back)."""
    singles, groups_of = PROBE_BATCHES * 2 + 1, PROBE_GROUP * (PROBE_GROUPS * 2 + 1)
    work = make_workload(singles + groups_of, SIZES["small"], producers, seed)
    # resends are the same objects: each batch once, all of them new to the database
    fresh = list({id(b): b for b in work.batches}.values())
    batches = iter(fresh[:singles])
    found: dict[str, Any] = {}
    async with fresh_schema(url, "profile") as schema:
        store = await PostgresStore.open(schema, max_connections=1)
        await store.close()
        conn = await asyncpg.connect(schema)
        try:
            found["unnest"] = await _probe(conn, lambda: _unnest_args(next(batches)), _unnest_sql())
            groups = iter(_chunks(fresh[singles:], PROBE_GROUP))
            found["group"] = await _probe(
                conn, lambda: _group_args(next(groups)), GROUP_STORE, repeats=PROBE_GROUPS
            )
        finally:
            await conn.close()
    return found


def _unnest_sql() -> str:
    from collector.store_postgres import STORE

    return STORE


def _unnest_args(batch: Batch) -> list[Any]:
    good = batch.readings
    return [
        batch.device_id,
        batch.stream,
        utc_now(),
        [r.seq for r in good],
        [r.id for r in good],
        [r.datetime for r in good],
        [float(r.message.value) for r in good],
        [r.message.unit for r in good],
        ORIGIN,
        AVG_SCALE,
    ]


def _group_args(batches: list[Batch]) -> list[Any]:
    loop = asyncio.get_running_loop()
    now = utc_now()
    group = [Pending(b.device_id, b.stream, b.readings, now, loop.create_future()) for b in batches]
    return [*group_arrays(group), ORIGIN, AVG_SCALE]


def _chunks(batches: list[Batch], size: int) -> list[list[Batch]]:
    return [batches[k : k + size] for k in range(0, len(batches), size)]


async def _probe(
    conn: Any, next_args: Callable[[], list[Any]], sql: str, repeats: int = PROBE_BATCHES
) -> dict[str, Any]:
    """Median ms of the statement with its implicit commit, of the statement alone inside a
    transaction and of its COMMIT; one EXPLAIN's times and its writes, table by table."""
    implicit, inside, commit = [], [], []
    for _ in range(repeats):
        args = next_args()
        began = time.perf_counter()
        await conn.fetch(sql, *args)
        implicit.append(time.perf_counter() - began)
    for _ in range(repeats):
        args = next_args()
        await conn.execute("BEGIN")
        began = time.perf_counter()
        await conn.fetch(sql, *args)
        middle = time.perf_counter()
        await conn.execute("COMMIT")
        inside.append(middle - began)
        commit.append(time.perf_counter() - middle)
    args = next_args()
    await conn.execute("BEGIN")
    try:
        plan = json.loads(
            await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + sql, *args)
        )[0]
    finally:
        await conn.execute("ROLLBACK")
    return {
        "statement_with_commit_ms": _median_ms(implicit),
        "statement_in_transaction_ms": _median_ms(inside),
        "commit_ms": _median_ms(commit),
        "explain_planning_ms": round(plan["Planning Time"], 3),
        "explain_execution_ms": round(plan["Execution Time"], 3),
        "writes": _writes(plan["Plan"]),
    }


def _writes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's ModifyTable nodes (one per table written): time and WAL, both inclusive
    of whatever CTE they were the first to pull, so read them as rough shares."""
    found = []
    if node["Node Type"] == "ModifyTable":
        found.append(
            {
                "table": node.get("Relation Name"),
                "ms": round(node.get("Actual Total Time", 0.0), 3),
                "rows": node.get("Actual Rows", 0),
                "wal_bytes": node.get("WAL Bytes", 0),
                "buffers_hit": node.get("Shared Hit Blocks", 0),
            }
        )
    for child in node.get("Plans", []):
        found.extend(_writes(child))
    return found


def _median_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 3)


# --- the whole bench -----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server-url", default=DEFAULT_SERVER_URL)
    parser.add_argument("--producers", type=int, default=50)
    parser.add_argument("--batches", type=int, default=8000, help="10-reading batches per run")
    parser.add_argument("--big-batches", type=int, default=200, help="1,000-reading batches")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--seed", type=int, default=11)
    return parser.parse_args(argv)


@contextlib.asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A new database `pulse_bench_<random>` on the server, dropped at the end."""
    parts = urlsplit(server_url)
    name = f"pulse_bench_{uuid.uuid4().hex[:10]}"
    admin = urlunsplit(parts._replace(path="/postgres", query=""))
    await _execute(admin, f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await _execute(admin, f"DROP DATABASE {name} WITH (FORCE)")


def summarize(runs: list[Run], strategies: Sequence[str]) -> dict[str, Any]:
    """Medians per strategy and size, ratios to unnest, worst correctness figures."""
    table: dict[str, Any] = {}
    for size in SIZES:
        per: dict[str, Any] = {}
        for strategy in strategies:
            mine = [r for r in runs if r.strategy == strategy and r.size == size]
            if not mine:
                continue
            per[strategy] = _medians(mine)
        base = per.get("unnest")
        for figures in per.values():
            if base is not None:
                figures["readings_per_s_vs_unnest"] = round(
                    figures["readings_per_s"] / base["readings_per_s"], 2
                )
                figures["p99_vs_unnest"] = round(figures["p99_ms"] / base["p99_ms"], 2)
        table[size] = per
    return table


def _medians(runs: list[Run]) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        return float(statistics.median(values))

    pg_keys = runs[0].pg.keys()
    step_keys = runs[0].steps_ms.keys()
    found: dict[str, Any] = {
        "readings_per_s": round(median([r.readings_per_s for r in runs])),
        "batches_per_s": round(median([r.batches_per_s for r in runs])),
        "p50_ms": round(median([r.p50_ms for r in runs]), 2),
        "p99_ms": round(median([r.p99_ms for r in runs]), 2),
        "runs": len(runs),
        "lost": max(r.check["lost"] for r in runs),
        "duplicated": max(r.check["stored_twice"] + r.check["extra"] for r in runs),
        "mismatches": max(
            sum(v for k, v in r.check.items() if k not in ("lost", "stored_twice", "extra"))
            for r in runs
        ),
        "per_batch": {k: round(median([r.pg[k] for r in runs]), 2) for k in pg_keys},
        "client_steps_ms_per_batch": {
            k: round(median([r.steps_ms.get(k, 0.0) for r in runs]), 3) for k in step_keys
        },
    }
    if runs[0].group:
        found["batches_per_group"] = median([r.group["batches_per_group"] for r in runs])
    return found


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every round, every size, every strategy; the summary."""
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise SystemExit(f"--strategies: unknown {', '.join(sorted(unknown))}")
    counts = {"small": args.batches, "big": args.big_batches}
    runs: list[Run] = []
    async with scratch_database(args.server_url) as url:
        workloads = {
            size: make_workload(counts[size], SIZES[size], args.producers, args.seed)
            for size in SIZES
            if counts[size] > 0
        }
        for round_no in range(args.rounds):
            order = strategies if round_no % 2 == 0 else strategies[::-1]
            for size, workload in workloads.items():
                for strategy in order:
                    run = await run_once(strategy, size, url, workload, args.producers)
                    runs.append(run)
                    print(json.dumps({"round": round_no, **_line(run)}), flush=True)
        profiled = {} if args.no_profile else await profile(url, args.producers, args.seed + 1)
    if profiled:
        print(json.dumps({"profile": profiled}), flush=True)
    return {
        "producers": args.producers,
        "batches": args.batches,
        "big_batches": args.big_batches,
        "rounds": args.rounds,
        "strategies": summarize(runs, strategies),
        "profile": {
            name: {k: v for k, v in p.items() if k != "writes"} for name, p in profiled.items()
        },
    }


def _line(run: Run) -> dict[str, Any]:
    return {
        "strategy": run.strategy,
        "size": run.size,
        "readings_per_s": round(run.readings_per_s),
        "batches_per_s": round(run.batches_per_s),
        "p50_ms": round(run.p50_ms, 2),
        "p99_ms": round(run.p99_ms, 2),
        "check": run.check,
        "per_batch": {k: round(v, 2) for k, v in run.pg.items()},
        "steps_ms": run.steps_ms,
        **run.group,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; the last line printed is the JSON summary."""
    args = parse_args(argv)
    print(json.dumps(asyncio.run(run_bench(args))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
