"""The durable queue: add, oldest(n), ack, dead-letter, counters; one SQLite file.

A reading's seq is its INTEGER PRIMARY KEY AUTOINCREMENT: assigned in the insert's own
transaction, strictly increasing and never reused, even after the newest row is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from agent import wire

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# With a backlog left, an ack shrinks the file only past this many free pages (16 MiB).
VACUUM_THRESHOLD_PAGES = 4096

_SCHEMA = """
CREATE TABLE queue (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    id    TEXT NOT NULL,
    ts    TEXT NOT NULL,
    value NUMERIC NOT NULL,
    unit  TEXT NOT NULL
);
CREATE TABLE dead (
    seq     INTEGER PRIMARY KEY,
    id      TEXT NOT NULL,
    ts      TEXT NOT NULL,
    value   NUMERIC NOT NULL,
    unit    TEXT NOT NULL,
    error   TEXT NOT NULL,
    dead_at TEXT NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters (name, value) VALUES ('sent', 0), ('dropped', 0), ('dead', 0);
"""

# SQLite builds each reading's wire JSON itself: far cheaper than Python objects per row.
_READING_JSON = (
    "json_object('id', id, 'seq', seq, 'datetime', ts, "
    "'message', json_object('value', value, 'unit', unit))"
)


class StoreError(RuntimeError):
    """The queue file cannot be used."""


@dataclass(frozen=True)
class Counts:
    """The queue's counters; all but pending survive in the file across restarts."""

    pending: int
    sent: int
    dropped: int
    dead: int


@dataclass(frozen=True)
class QueuedBatch:
    """The oldest readings, ready to send: their seq range and their wire JSON."""

    seqs: list[int]
    readings_json: list[str]

    @property
    def first_seq(self) -> int:
        """The oldest seq in the batch."""
        return self.seqs[0]

    @property
    def last_seq(self) -> int:
        """The newest seq in the batch."""
        return self.seqs[-1]

    def __len__(self) -> int:
        return len(self.readings_json)


@dataclass(frozen=True)
class AddResult:
    """What one add did: the reading's seq, and how many old readings it pushed out."""

    seq: int
    dropped: int


@dataclass(frozen=True)
class Quarantine:
    """A queue file that was moved aside at open, and why."""

    moved_to: Path
    reason: str


def _utc_text(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """The queue on one aiosqlite connection; every write goes through one lock."""

    def __init__(self, db: aiosqlite.Connection, path: Path, max_pending: int):
        self._db = db
        self.path = path
        self.max_pending = max_pending
        self.stream_id = ""
        self.quarantined: Quarantine | None = None
        self._pending = 0
        self._counters: Counter[str] = Counter()
        self._write = asyncio.Lock()
        self._dropping = False

    async def _setup(self) -> None:
        (version,) = await self._fetchone("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"schema version {version} is newer than this agent supports ({SCHEMA_VERSION})"
            )
        (check,) = await self._fetchone("PRAGMA quick_check")
        if check != "ok":
            raise StoreError(f"integrity check failed: {check}")
        if version == 0:
            # before WAL: switching the journal mode writes the header, fixing auto_vacuum at 0
            await self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        if version == 0:
            await self._db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    await self._db.execute(statement)
            await self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('stream', ?)", (wire.new_stream_id(),)
            )
            await self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            await self._db.commit()
        (self.stream_id,) = await self._fetchone("SELECT value FROM meta WHERE key='stream'")
        (self._pending,) = await self._fetchone("SELECT COUNT(*) FROM queue")
        async with self._db.execute("SELECT name, value FROM counters") as cur:
            self._counters.update({name: value async for name, value in cur})

    async def _fetchone(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        if row is None:
            raise StoreError(f"no row from {sql!r}")
        return row

    @property
    def pending(self) -> int:
        """How many readings wait to be sent."""
        return self._pending

    async def counts(self) -> Counts:
        """Return pending and the persistent counters (kept in memory after each commit)."""
        c = self._counters
        return Counts(self._pending, c["sent"], c["dropped"], c["dead"])

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Counter[str]]:
        """One write transaction under the writer lock; the caller notes counter changes
        in the yielded Counter ("pending" included), which commit with it or not at all."""
        delta: Counter[str] = Counter()
        async with self._write:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield delta
                for name, by in delta.items():
                    if name != "pending" and by:
                        await self._db.execute(
                            "UPDATE counters SET value = value + ? WHERE name = ?", (by, name)
                        )
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise
            self._pending += delta.pop("pending", 0)
            self._counters.update(delta)

    async def add(self, when: dt.datetime, value: float, unit: str) -> AddResult:
        """Store one reading durably and return its seq; drop the oldest beyond max_pending."""
        results = await self.add_many([(when, value, unit)])
        return results[-1]

    async def add_many(self, samples: Iterable[tuple[dt.datetime, float, str]]) -> list[AddResult]:
        """Store readings in one transaction (the bench fills its backlog this way)."""
        rows = [(str(wire.new_reading_id()), _utc_text(w), v, u) for w, v, u in samples]
        async with self._transaction() as delta:
            await self._db.executemany(
                "INSERT INTO queue (id, ts, value, unit) VALUES (?, ?, ?, ?)", rows
            )
            # inside one write transaction AUTOINCREMENT hands out consecutive seqs
            (last,) = await self._fetchone("SELECT seq FROM sqlite_sequence WHERE name = 'queue'")
            results = [AddResult(seq, 0) for seq in range(last - len(rows) + 1, last + 1)]
            excess = max(0, self._pending + len(rows) - self.max_pending)
            if excess:
                await self._db.execute(
                    "DELETE FROM queue WHERE seq IN (SELECT seq FROM queue ORDER BY seq LIMIT ?)",
                    (excess,),
                )
                results[-1] = AddResult(results[-1].seq, excess)
            delta["pending"] += len(rows) - excess
            delta["dropped"] += excess
        self._note_dropping(excess)
        return results

    def _note_dropping(self, dropped: int) -> None:
        if dropped and not self._dropping:
            self._dropping = True
            logger.warning(
                "queue full at %d readings: dropping the oldest to make room", self.max_pending
            )
        elif not dropped and self._dropping and self._pending < self.max_pending:
            self._dropping = False
            logger.info("queue below its cap again (%d pending)", self._pending)

    async def oldest(self, limit: int, after_seq: int = 0) -> QueuedBatch | None:
        """Return up to `limit` of the oldest readings with seq > after_seq, or None."""
        async with self._db.execute(
            f"SELECT seq, {_READING_JSON} FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ) as cur:
            rows = await cur.fetchall()
        if not rows:
            return None
        return QueuedBatch([r[0] for r in rows], [r[1] for r in rows])

    async def ack(self, batch: QueuedBatch, rejected: Sequence[wire.Rejection] = ()) -> int:
        """Delete an acknowledged batch; move its rejected readings to the dead letters.

        Both happen in one transaction, with the counters. Returns how many were sent.
        """
        async with self._transaction() as delta:
            dead = await self._move_to_dead(batch, rejected) if rejected else 0
            removed = await self._delete(batch)
            # rows the cap dropped while this batch was in flight reached the collector after
            # all: count them as sent, not dropped
            late = len(batch) - removed
            delta.update(sent=removed - dead + late, dead=dead, pending=-removed, dropped=-late)
        await self._maybe_vacuum()
        if self._dropping:
            self._note_dropping(0)
        return removed - dead + late

    async def _delete(self, batch: QueuedBatch) -> int:
        if batch.last_seq - batch.first_seq + 1 == len(batch):
            # contiguous: no other row can sit inside the range
            cur = await self._db.execute(
                "DELETE FROM queue WHERE seq BETWEEN ? AND ?", (batch.first_seq, batch.last_seq)
            )
        else:
            cur = await self._db.executemany(
                "DELETE FROM queue WHERE seq = ?", [(seq,) for seq in batch.seqs]
            )
        return cur.rowcount

    async def _move_to_dead(self, batch: QueuedBatch, rejected: Sequence[wire.Rejection]) -> int:
        now = _utc_text(dt.datetime.now(dt.UTC))
        moved = 0
        for item in rejected:
            cur = await self._db.execute(
                "INSERT OR IGNORE INTO dead (seq, id, ts, value, unit, error, dead_at) "
                "SELECT seq, id, ts, value, unit, ?, ? FROM queue "
                "WHERE seq BETWEEN ? AND ? AND id = ?",
                (item.error[:1000], now, batch.first_seq, batch.last_seq, item.id),
            )
            moved += cur.rowcount
        return moved

    async def dead_letters(self, limit: int = 100) -> list[dict[str, object]]:
        """Return the dead-lettered readings, oldest first, with the server's reason."""
        async with self._db.execute(
            "SELECT seq, id, ts, value, unit, error, dead_at FROM dead ORDER BY seq LIMIT ?",
            (limit,),
        ) as cur:
            names = [c[0] for c in cur.description]
            return [dict(zip(names, row, strict=True)) async for row in cur]

    async def retry_dead(self) -> int:
        """Put every dead letter back in the queue under its original seq."""
        async with self._transaction() as delta:
            cur = await self._db.execute(
                "INSERT OR IGNORE INTO queue (seq, id, ts, value, unit) "
                "SELECT seq, id, ts, value, unit FROM dead"
            )
            moved = cur.rowcount
            await self._db.execute("DELETE FROM dead")
            delta.update(dead=-moved, pending=moved)
        return moved

    async def _maybe_vacuum(self) -> None:
        # while a backlog drains, new readings reuse the free pages; shrink once drained,
        # or when most of the file is free
        free, pages = await self._fetchone("SELECT * FROM pragma_freelist_count, pragma_page_count")
        if (free and self._pending == 0) or free > max(VACUUM_THRESHOLD_PAGES, pages // 2):
            await self.vacuum()

    async def vacuum(self) -> None:
        """Return free pages to the file system.

        The pragma frees one page per step, and its rows have no columns, so a cursor's
        fetchall() stops after the first page; executescript steps it to the end.
        """
        async with self._write:
            await self._db.executescript("PRAGMA incremental_vacuum;")

    async def close(self) -> None:
        """Checkpoint and close the connection."""
        with contextlib.suppress(sqlite3.Error):
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._db.close()


def _quarantine(path: Path, reason: str) -> Quarantine:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "unsupported" if "newer" in reason else "corrupt"
    target = path.with_name(f"{path.name}.{kind}-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.rename(Path(f"{target}{suffix}"))
    logger.error("queue file %s unusable (%s): moved aside to %s", path, reason, target)
    return Quarantine(target, reason)


def _is_unusable(err: Exception) -> bool:
    """True only if the file itself is bad: damaged, not a database, or a newer schema.

    A full disk, a lock or an I/O error passes; moving a healthy queue aside for one of
    those would strand its readings in a file that is never sent.
    """
    if isinstance(err, StoreError):
        return True
    name = getattr(err, "sqlite_errorname", "")
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


async def _connect(path: Path, max_pending: int) -> Store:
    db = await aiosqlite.connect(path, isolation_level=None)
    store = Store(db, path, max_pending)
    try:
        await store._setup()
    except BaseException:
        await db.close()
        raise
    return store


@contextlib.asynccontextmanager
async def open_store(path: Path, max_pending: int) -> AsyncIterator[Store]:
    """Open (or create) the queue; move an unusable file aside and start anew."""
    path.parent.mkdir(parents=True, exist_ok=True)
    quarantined: Quarantine | None = None
    try:
        store = await _connect(path, max_pending)
    except (sqlite3.DatabaseError, StoreError) as err:
        if not _is_unusable(err):
            logger.error("cannot open the queue file %s (%s); leaving it as it is", path, err)
            raise StoreError(f"cannot open the queue file {path}: {err}") from err
        quarantined = _quarantine(path, str(err))
        store = await _connect(path, max_pending)
    store.quarantined = quarantined
    logger.info("queue %s open: %d pending, stream %s", path, store.pending, store.stream_id)
    try:
        yield store
    finally:
        await store.close()
