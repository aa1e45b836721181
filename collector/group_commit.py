"""Group commit for the PostgreSQL store: the batches waiting at one moment, one statement.

A batch's own statement costs a round trip and a WAL flush at its commit, which is most of
its time (bench/pg_writes.py, docs/scale.md "Write strategies, measured"). Here callers
queue their batch's readings and wait; a writer task takes every batch waiting (up to
`max_batches` or `max_readings`), stores them all with one statement (implicit transaction,
as the store's own) and, after the commit, gives each caller its own accepted count. The ack
still follows the commit. The semantics are the store's statement's, batch by batch:

- the ledger decides: a key that clashes on (device, stream, seq) or on its id is skipped,
  and only readings whose key went in are stored, rolled up and counted;
- an exact copy of a reading sent twice within one group goes in once, for the first batch
  that sent it; the later batch gets 0 for it and classifies it (after the commit) as a
  duplicate, as a resend after the commit would be;
- the rollups and summaries are upserted per (device, bucket) and (device, stream) of the
  whole group, in key order, so two groups (two writers, two collectors) take their row
  locks in the same order.

Classifying the skipped readings (duplicates, conflicts) stays the caller's: this module
only says how many of each batch's readings went in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from collector.rollups import ORIGIN
from collector.store import AVG_SCALE, StoreError
from pulse_wire import Reading

logger = logging.getLogger(__name__)

# a group's statement holds row locks in key order; a deadlock needs two groups crossing
# on an id (another stream's key); the statement rolled back whole, so it is simply redone
DEADLOCK_RETRIES = 6
DEADLOCK_BACKOFF_S = 0.005
# what one batch's rows can cause (a value out of range, a constraint): the statement is
# rolled back, or never sent when asyncpg cannot encode an argument
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

ROLLUP = """
), {unit}s AS (
    INSERT INTO rollup_{unit} AS u (device_id, bucket, min, max, sum, count)
    SELECT device_id, date_bin('1 {unit}', datetime, $10), min(value), max(value),
        sum(value / $11::float8), count(*)
    FROM stored GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (device_id, bucket) DO UPDATE SET
        min = LEAST(u.min, EXCLUDED.min), max = GREATEST(u.max, EXCLUDED.max),
        sum = u.sum + EXCLUDED.sum, count = u.count + EXCLUDED.count
"""

# $1..$9 one element per reading: device, stream, seq, id, datetime, value, unit, the
# batch's index in the group and its receipt time; $10 the rollup origin, $11 AVG_SCALE.
# DISTINCT ON keeps the first of exact copies, so the join of the inserted keys back to the
# rows finds each key's one batch. The keys go in by (device, stream) and then arrival.
GROUP_STORE = (
    """
WITH batch AS (
    SELECT DISTINCT ON (device_id, stream, seq, id) *
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::timestamptz[],
        $6::float8[], $7::text[], $8::int[], $9::timestamptz[])
        WITH ORDINALITY AS r(device_id, stream, seq, id, datetime, value, unit, batch_no,
            received_at, n)
    ORDER BY device_id, stream, seq, id, n
), keys AS (
    INSERT INTO reading_keys (device_id, stream, seq, id, datetime)
    SELECT device_id, stream, seq, id, datetime FROM batch ORDER BY device_id, stream, n
    ON CONFLICT DO NOTHING
    RETURNING device_id, stream, seq, id
), accepted AS (
    SELECT r.* FROM batch AS r JOIN keys AS k USING (device_id, stream, seq, id)
), stored AS (
    INSERT INTO readings (device_id, stream, seq, id, datetime, value, unit, received_at)
    SELECT device_id, stream, seq, id, datetime, value, unit, received_at FROM accepted
    RETURNING device_id, datetime, value
"""
    + "".join(ROLLUP.format(unit=unit).strip("\n") + "\n" for unit in ("minute", "hour"))
    + """), summary AS (
    INSERT INTO stream_summaries AS s (device_id, stream, first_seq, last_seq, count, last_seen)
    SELECT device_id, stream, min(seq), max(seq), count(*), max(received_at) FROM accepted
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (device_id, stream) DO UPDATE SET
        first_seq = LEAST(s.first_seq, EXCLUDED.first_seq),
        last_seq = GREATEST(s.last_seq, EXCLUDED.last_seq),
        count = s.count + EXCLUDED.count,
        last_seen = GREATEST(s.last_seen, EXCLUDED.last_seen)
)
SELECT batch_no, count(*) FROM accepted GROUP BY batch_no
"""
)


@dataclass(frozen=True)
class Limits:
    """How much one group may take, and how many writers (connections) commit at once."""

    max_batches: int = 200
    max_readings: int = 10_000
    # one writer makes the biggest groups (1.7x the one-statement path at 50 batches in
    # flight, 2 writers 1.3x) but leaves PostgreSQL idle while its group commits: at 4 in
    # flight it only ties, where 2 writers give 1.4x (docs/scale.md, "Write strategies")
    writers: int = 2


@dataclass
class GroupStats:
    """Groups written so far and what they held, for metrics and tests."""

    groups: int = 0
    batches: int = 0
    readings: int = 0


@dataclass
class Pending:
    """One batch's readings waiting for its group's commit."""

    device_id: str
    stream: str
    readings: list[Reading]
    received_at: dt.datetime
    accepted: asyncio.Future[int] = field(repr=False)


class GroupCommit:
    """Writer tasks that store the waiting batches together; create with create_group_commit."""

    def __init__(self, pool: Any, limits: Limits) -> None:
        self._pool = pool
        self._limits = limits
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._failing = False
        self.stats = GroupStats()

    def _start(self) -> None:
        for _ in range(self._limits.writers):
            task = asyncio.create_task(self._run_writer())
            self._tasks.add(task)
            task.add_done_callback(self._writer_done)

    async def write(
        self, device_id: str, stream: str, readings: list[Reading], received_at: dt.datetime
    ) -> int:
        """Store one batch's (checked) readings with the others waiting; after the commit,
        how many of them went in."""
        if self._closing or not self._tasks:
            raise StoreError("the group commit is closed")
        pending = Pending(
            device_id, stream, readings, received_at, asyncio.get_running_loop().create_future()
        )
        self._queue.put_nowait(pending)
        return await pending.accepted

    async def close(self) -> None:
        """Refuse new batches, let the writers store the ones queued, then stop them."""
        self._closing = True
        if self._tasks:
            await self._queue.join()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        """A writer ends only when cancelled; if the last one ends otherwise, the queued
        batches fail rather than wait for ever."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        logger.error("group commit writer ended", exc_info=task.exception())
        if not self._tasks:
            while not self._queue.empty():
                _settle(self._queue.get_nowait(), StoreError("the group commit stopped"))
                self._queue.task_done()

    async def _run_writer(self) -> None:
        """Take every waiting batch, store them, answer each; until cancelled."""
        carry: Pending | None = None
        while True:
            group, carry = await self._take(carry)
            try:
                await self._answer(group)
            finally:
                for pending in group:
                    _settle(pending, StoreError("the group commit stopped"))
                    self._queue.task_done()

    async def _take(self, carry: Pending | None) -> tuple[list[Pending], Pending | None]:
        """The next group, and the batch that would have made it too big (the next's first)."""
        group = [carry if carry is not None else await self._queue.get()]
        size = len(group[0].readings)
        limits = self._limits
        while len(group) < limits.max_batches and not self._queue.empty():
            pending = self._queue.get_nowait()
            if size + len(pending.readings) > limits.max_readings:
                return group, pending
            group.append(pending)
            size += len(pending.readings)
        return group, None

    async def _answer(self, group: list[Pending]) -> None:
        """Store the group and resolve each future. When the rows were refused, each batch
        alone, so that a batch with data the database refuses fails only its own caller;
        any other error (the connection, the server) fails the whole group at once."""
        try:
            counts = await self._store(group)
        except Exception as err:
            if len(group) > 1 and isinstance(err, DATA_ERRORS):
                for pending in group:
                    await self._answer([pending])
                return
            self._note_failure(err)
            for pending in group:
                _settle(pending, err)
            return
        if self._failing:
            self._failing = False
            logger.info("group commit storing again")
        for index, pending in enumerate(group):
            _settle(pending, counts.get(index, 0))

    def _note_failure(self, err: Exception) -> None:
        if not self._failing:
            self._failing = True
            logger.warning("group commit failing: %s", err)

    async def _store(self, group: list[Pending]) -> dict[int, int]:
        """One statement for the group: accepted count by batch index, after the commit."""
        args = group_arrays(group)
        for attempt in range(DEADLOCK_RETRIES):
            try:
                async with self._pool.acquire() as conn:
                    rows = await conn.fetch(GROUP_STORE, *args, ORIGIN, AVG_SCALE)
            except asyncpg.DeadlockDetectedError:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
                # PostgreSQL rolled this group back; a jittered wait keeps two processes'
                # groups from meeting again in the same order at once
                await asyncio.sleep(random.uniform(0, DEADLOCK_BACKOFF_S * 2**attempt))
                continue
            stats = self.stats
            stats.groups += 1
            stats.batches += len(group)
            stats.readings += len(args[0])
            return {int(index): int(count) for index, count in rows}
        raise AssertionError("unreachable")


def _settle(pending: Pending, outcome: int | Exception) -> None:
    """Answer the caller, unless it has its answer or stopped waiting (cancelled)."""
    if pending.accepted.done():
        return
    if isinstance(outcome, Exception):
        pending.accepted.set_exception(outcome)
    else:
        pending.accepted.set_result(outcome)


def create_group_commit(pool: Any, limits: Limits | None = None) -> GroupCommit:
    """Start the writers on the asyncpg pool (in the running loop); close() stops them."""
    group_commit = GroupCommit(pool, limits or Limits())
    group_commit._start()
    return group_commit


def group_arrays(group: list[Pending]) -> list[list[Any]]:
    """GROUP_STORE's nine arrays, one element per reading: device, stream, seq, id,
    datetime, value, unit, the batch's index in the group and its receipt time."""
    columns: list[list[Any]] = [[] for _ in range(9)]
    device, stream, seq, rid, when, value, unit, index, received = columns
    for number, pending in enumerate(group):
        count = len(pending.readings)
        device.extend([pending.device_id] * count)
        stream.extend([pending.stream] * count)
        index.extend([number] * count)
        received.extend([pending.received_at] * count)
        for r in pending.readings:
            seq.append(r.seq)
            rid.append(r.id)
            when.append(r.datetime)
            value.append(float(r.message.value))
            unit.append(r.message.unit)
    return columns
