"""The durable queue: add, oldest(n), ack, dead-letter, counters; one SQLite file.

A reading's seq is its INTEGER PRIMARY KEY AUTOINCREMENT: assigned in the insert's own
transaction, strictly increasing and never reused, even after the newest row is deleted.
A commit that fails rolls the counter back, so the next reading gets the same seq under a
new id: the sender therefore reads only committed rows, and an ack deletes by (seq, id).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import math
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import aiosqlite
import msgspec

import pulse_wire as wire
from agent.salvage import Salvage, peek_user_version, salvage_queue

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
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

# version 2: readings salvaged from a damaged queue file, sent under their own stream; their
# dead letters; and the ledger of every committed reading that the counter source keeps
_SCHEMA_2 = """
CREATE TABLE salvage (
    stream    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    id        TEXT NOT NULL,
    ts        TEXT NOT NULL,
    value     NUMERIC NOT NULL,
    unit      TEXT NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE TABLE dead_salvage (
    stream    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    id        TEXT NOT NULL,
    ts        TEXT NOT NULL,
    value     NUMERIC NOT NULL,
    unit      TEXT NOT NULL,
    device_id TEXT NOT NULL,
    error     TEXT NOT NULL,
    dead_at   TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE TABLE ledger (
    seq     INTEGER PRIMARY KEY,
    id      TEXT NOT NULL,
    value   NUMERIC NOT NULL,
    dropped INTEGER NOT NULL DEFAULT 0
);
"""

# A batch is read as one row of three joined texts, and deleted by one statement: row by
# row, the SQLite thread would take the GIL back for every row, each time waiting while the
# event loop handles an HTTP exchange, and a drain would crawl. json_object never writes a
# raw newline, so one separates the readings' JSON.
OLDEST = f"""
SELECT group_concat(seq), group_concat(id), group_concat(reading, char(10)) FROM (
    SELECT seq, id, {wire.READING_JSON_SQL} AS reading FROM queue
    WHERE seq > ? ORDER BY seq LIMIT ?
)
"""
# the batch's (seq, id) pairs as one JSON array of [seq, id]
DELETE_PAIRS = """
DELETE FROM queue WHERE seq IN (
    SELECT q.seq FROM json_each(?) AS j JOIN queue AS q
    ON q.seq = json_extract(j.value, '$[0]') AND q.id = json_extract(j.value, '$[1]')
)
"""

T = TypeVar("T")
Sample = tuple[dt.datetime, float, str]


class StoreError(RuntimeError):
    """The queue file cannot be used."""


class NewerSchemaError(StoreError):
    """The queue file was written by a newer Pulse; it must be left exactly as it is."""


@dataclass(frozen=True)
class Counts:
    """The queue's counters; all but pending survive in the file across restarts."""

    pending: int
    sent: int
    dropped: int
    dead: int


@dataclass(frozen=True)
class QueuedBatch:
    """The oldest readings of one stream, ready to send: seqs, ids and wire JSON.

    `salvaged` batches come from a damaged queue file and keep its stream and device id
    (an empty device_id means this agent's own).
    """

    seqs: list[int]
    ids: list[str]
    readings_json: list[str]
    stream: str = ""
    salvaged: bool = False
    device_id: str = ""

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

    def split(self) -> tuple[QueuedBatch, QueuedBatch]:
        """The two halves of the batch (the first one larger by at most one reading)."""
        mid = (len(self) + 1) // 2
        return self.slice(0, mid), self.slice(mid, len(self))

    def slice(self, start: int, stop: int) -> QueuedBatch:
        """The readings [start:stop] as a batch of the same stream."""
        return replace(
            self,
            seqs=self.seqs[start:stop],
            ids=self.ids[start:stop],
            readings_json=self.readings_json[start:stop],
        )


@dataclass(frozen=True)
class AddResult:
    """What one add did: the reading's seq and id, and how many old readings it pushed out."""

    seq: int
    dropped: int
    id: str = ""


@dataclass(frozen=True)
class Quarantine:
    """A queue file that was set aside at open, why, and what was recovered from it.

    `kept` is True for a file of a newer Pulse: it stays where it is, untouched, and this
    agent queues in a new file beside it.
    """

    moved_to: Path
    reason: str
    kept: bool = False
    salvage: Salvage | None = None

    def describe(self) -> str:
        """One line for the log and the dashboard."""
        if self.kept:
            return f"{self.reason}; left untouched for that version, queueing in a new file"
        text = f"queue file was unusable ({self.reason}); moved aside to {self.moved_to}"
        if self.salvage is not None:
            text += f"; {self.salvage.describe()}, sent under their original stream"
        return text


def _joined_batch(seqs: str, ids: str, texts: str, stream: str) -> QueuedBatch:
    """The batch from OLDEST's joined texts, in seq order.

    group_concat keeps the order of the rows it is given in practice, but SQLite before
    3.44 does not promise it: the seqs are checked, and sorted if they must be.
    """
    seq_list = [int(seq) for seq in seqs.split(",")]
    id_list = ids.split(",")
    text_list = texts.split("\n")
    if any(a >= b for a, b in itertools.pairwise(seq_list)):
        order = sorted(range(len(seq_list)), key=seq_list.__getitem__)
        seq_list = [seq_list[i] for i in order]
        id_list = [id_list[i] for i in order]
        text_list = [text_list[i] for i in order]
    return QueuedBatch(seq_list, id_list, text_list, stream)


def _json_text(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _utc_text(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_device_id() -> str:
    """The device id an empty `device_id` resolves to on a queue file's first run."""
    return f"pulse-{socket.gethostname()}"


class Store:
    """The queue on one aiosqlite connection; every write goes through one lock.

    Every write transaction runs as its own task, shielded from cancellation: a cancel
    that lands on the caller can never leave the connection inside a transaction, and a
    transaction always ends in COMMIT or ROLLBACK.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path, max_pending: int):
        self._db = db
        self.path = path
        self.max_pending = max_pending
        self.stream_id = ""
        self.device_id = ""
        self.source_state: str | None = None
        self.keep_ledger = False
        self.quarantined: Quarantine | None = None
        self._queued = 0
        self._salvage = 0
        self._counters: Counter[str] = Counter()
        self._write = asyncio.Lock()
        self._transactions: set[asyncio.Task[object]] = set()
        self._dropping = False
        self._dropped_through = 0

    async def _setup(self) -> None:
        (version,) = await self._fetchone("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise NewerSchemaError(
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
        if version < SCHEMA_VERSION:
            await self._migrate(version)
        (self.stream_id,) = await self._fetchone("SELECT value FROM meta WHERE key='stream'")
        (self.device_id,) = await self._fetchone("SELECT value FROM meta WHERE key='device_id'")
        state = await self._db.execute_fetchall("SELECT value FROM meta WHERE key='source_state'")
        self.source_state = next((str(r[0]) for r in state), None)
        (self._queued,) = await self._fetchone("SELECT COUNT(*) FROM queue")
        (self._salvage,) = await self._fetchone("SELECT COUNT(*) FROM salvage")
        async with self._db.execute("SELECT name, value FROM counters") as cur:
            self._counters.update({name: value async for name, value in cur})

    async def _migrate(self, version: int) -> None:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            if version == 0:
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        await self._db.execute(statement)
                await self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('stream', ?)", (wire.new_stream_id(),)
                )
            for statement in _SCHEMA_2.strip().split(";"):
                if statement.strip():
                    await self._db.execute(statement)
            # resolved once and kept: renaming the computer must not split the stream
            await self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('device_id', ?)",
                (default_device_id(),),
            )
            await self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise

    async def _fetchone(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row:
        async with self._db.execute(sql, params) as cur:
            row = await cur.fetchone()
        if row is None:
            raise StoreError(f"no row from {sql!r}")
        return row

    @property
    def pending(self) -> int:
        """How many readings wait to be sent (salvaged ones included)."""
        return self._queued + self._salvage

    @property
    def salvage_pending(self) -> int:
        """How many readings recovered from a damaged queue file wait to be sent."""
        return self._salvage

    def device_for(self, configured: str) -> str:
        """The device id to send as: the configured one, else the one kept in the file."""
        return configured or self.device_id

    async def counts(self) -> Counts:
        """Return pending and the persistent counters (kept in memory after each commit)."""
        c = self._counters
        return Counts(self.pending, c["sent"], c["dropped"], c["dead"])

    async def _transaction(self, work: Callable[[Counter[str]], Awaitable[T]]) -> T:
        """Run `work` in one write transaction, shielded from the caller's cancellation.

        `work` notes counter changes in the Counter it is given ("queued" and "salvage"
        included); they commit with it or not at all.
        """
        task: asyncio.Task[T] = asyncio.create_task(self._run_transaction(work))
        self._transactions.add(task)
        task.add_done_callback(self._transaction_done)
        return await asyncio.shield(task)

    def _transaction_done(self, task: asyncio.Task[T]) -> None:
        self._transactions.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here when the caller was cancelled and cannot

    async def _run_transaction(self, work: Callable[[Counter[str]], Awaitable[T]]) -> T:
        delta: Counter[str] = Counter()
        async with self._write:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                result = await work(delta)
                for name, by in delta.items():
                    if name not in ("queued", "salvage") and by:
                        await self._db.execute(
                            "UPDATE counters SET value = value + ? WHERE name = ?", (by, name)
                        )
                await self._db.commit()
            except BaseException:
                await self._rollback()
                raise
            self._queued += delta.pop("queued", 0)
            self._salvage += delta.pop("salvage", 0)
            self._counters.update(delta)
        return result

    async def _rollback(self) -> None:
        # a no-op when the failure came before BEGIN or SQLite already rolled back
        try:
            await self._db.rollback()
        except sqlite3.Error:
            logger.exception("rollback of the queue failed")

    async def add(
        self, when: dt.datetime, value: float, unit: str, state: str | None = None
    ) -> AddResult:
        """Store one reading durably and return its seq; drop the oldest beyond max_pending.

        `state` is the source's state after this reading; it commits with the reading.
        """
        results = await self.add_many([(when, value, unit)], state)
        return results[-1]

    async def add_many(
        self, samples: Iterable[Sample], state: str | None = None
    ) -> list[AddResult]:
        """Store readings in one transaction (the bench fills its backlog this way)."""
        rows = [(str(wire.new_reading_id()), _utc_text(w), v, u) for w, v, u in samples]
        for _, _, value, _ in rows:
            if not math.isfinite(value):
                raise ValueError(f"value {value!r} is not a finite number; it cannot be sent")

        async def work(delta: Counter[str]) -> list[AddResult]:
            await self._db.executemany(
                "INSERT INTO queue (id, ts, value, unit) VALUES (?, ?, ?, ?)", rows
            )
            # inside one write transaction AUTOINCREMENT hands out consecutive seqs
            (last,) = await self._fetchone("SELECT seq FROM sqlite_sequence WHERE name = 'queue'")
            first = last - len(rows) + 1
            results = [AddResult(first + i, 0, row[0]) for i, row in enumerate(rows)]
            if self.keep_ledger:
                await self._db.executemany(
                    "INSERT INTO ledger (seq, id, value) VALUES (?, ?, ?)",
                    [(r.seq, r.id, row[2]) for r, row in zip(results, rows, strict=True)],
                )
            if state is not None:
                await self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('source_state', ?)", (state,)
                )
            excess = max(0, self._queued + len(rows) - self.max_pending)
            if excess:
                await self._drop_oldest(excess)
                results[-1] = replace(results[-1], dropped=excess)
            delta["queued"] += len(rows) - excess
            delta["dropped"] += excess
            return results

        results = await self._transaction(work)
        if state is not None:
            self.source_state = state
        self._note_dropping(results[-1].dropped if results else 0)
        return results

    async def _drop_oldest(self, count: int) -> None:
        oldest = "SELECT seq FROM queue ORDER BY seq LIMIT ?"
        (through,) = await self._fetchone(f"SELECT MAX(seq) FROM ({oldest})", (count,))
        if self.keep_ledger:
            await self._db.execute(
                f"UPDATE ledger SET dropped = 1 WHERE seq IN ({oldest})", (count,)
            )
        await self._db.execute(f"DELETE FROM queue WHERE seq IN ({oldest})", (count,))
        # only in memory: after a restart no batch read before it can still be in flight
        self._dropped_through = max(self._dropped_through, int(through or 0))

    def _note_dropping(self, dropped: int) -> None:
        if dropped and not self._dropping:
            self._dropping = True
            logger.warning(
                "queue full at %d readings: dropping the oldest to make room", self.max_pending
            )
        elif not dropped and self._dropping and self._queued < self.max_pending:
            self._dropping = False
            logger.info("queue below its cap again (%d pending)", self._queued)

    async def oldest(self, limit: int, after_seq: int = 0) -> QueuedBatch | None:
        """Return up to `limit` of the oldest committed readings with seq > after_seq, or None.

        Under the writer lock: on the shared connection a read between another
        transaction's INSERT and its COMMIT would see rows that may never commit.
        """
        async with self._write:
            seqs, ids, texts = await self._fetchone(OLDEST, (after_seq, limit))
        if seqs is None:
            return None
        return _joined_batch(seqs, ids, texts, self.stream_id)

    async def oldest_salvaged(self, limit: int) -> QueuedBatch | None:
        """The oldest readings recovered from a damaged file, all of one stream, or None."""
        async with self._write:
            rows = await self._db.execute_fetchall(
                f"SELECT seq, id, {wire.READING_JSON_SQL}, stream, device_id FROM salvage "
                "WHERE stream = (SELECT stream FROM salvage ORDER BY rowid LIMIT 1) "
                "ORDER BY seq LIMIT ?",
                (limit,),
            )
        rows = list(rows)
        if not rows:
            return None
        seqs, ids, texts = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
        return QueuedBatch(seqs, ids, texts, rows[0][3], salvaged=True, device_id=rows[0][4])

    async def ack(self, batch: QueuedBatch, rejected: Sequence[wire.Rejection] = ()) -> int:
        """Delete an acknowledged batch by (seq, id); move its rejected readings to the
        dead letters. Both happen in one transaction, with the counters.

        Returns how many were sent.
        """

        async def work(delta: Counter[str]) -> int:
            dead = await self._move_to_dead(batch, rejected) if rejected else 0
            removed, late = await self._delete(batch)
            table = "salvage" if batch.salvaged else "queued"
            delta.update(sent=removed - dead + late, dead=dead, dropped=-late)
            delta[table] -= removed
            return removed - dead + late

        sent = await self._transaction(work)
        await self._maybe_vacuum()
        if self._dropping:
            self._note_dropping(0)
        return sent

    async def _delete(self, batch: QueuedBatch) -> tuple[int, int]:
        """Delete the batch's rows; return how many, and how many the cap had dropped.

        Rows the cap dropped while this batch was in flight reached the collector after
        all: they count as sent, not dropped. A row that is simply not there (a reading
        whose commit failed after it was read) counts as neither.
        """
        pairs = list(zip(batch.seqs, batch.ids, strict=True))
        if batch.salvaged:
            cur = await self._db.executemany(
                "DELETE FROM salvage WHERE stream = ? AND seq = ? AND id = ?",
                [(batch.stream, seq, rid) for seq, rid in pairs],
            )
            return cur.rowcount, 0
        cur = await self._db.execute(DELETE_PAIRS, (_json_text(pairs),))
        removed = cur.rowcount
        late = 0
        if removed < len(batch) and batch.first_seq <= self._dropped_through:
            late = min(len(batch) - removed, sum(s <= self._dropped_through for s in batch.seqs))
        return removed, late

    async def _move_to_dead(self, batch: QueuedBatch, rejected: Sequence[wire.Rejection]) -> int:
        now = _utc_text(dt.datetime.now(dt.UTC))
        moved = 0
        for item in rejected:
            if batch.salvaged:
                cur = await self._db.execute(
                    "INSERT OR IGNORE INTO dead_salvage "
                    "(stream, seq, id, ts, value, unit, device_id, error, dead_at) "
                    "SELECT stream, seq, id, ts, value, unit, device_id, ?, ? FROM salvage "
                    "WHERE stream = ? AND seq BETWEEN ? AND ? AND id = ?",
                    (
                        item.error[:1000],
                        now,
                        batch.stream,
                        batch.first_seq,
                        batch.last_seq,
                        item.id,
                    ),
                )
            else:
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
        rows = await self._db.execute_fetchall(
            "SELECT * FROM ("
            "SELECT ? AS stream, seq, id, ts, value, unit, error, dead_at FROM dead "
            "UNION ALL SELECT stream, seq, id, ts, value, unit, error, dead_at FROM dead_salvage"
            ") ORDER BY dead_at, seq LIMIT ?",
            (self.stream_id, limit),
        )
        names = ("stream", "seq", "id", "ts", "value", "unit", "error", "dead_at")
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def retry_dead(self) -> int:
        """Put every dead letter back in its queue under its original seq."""

        async def work(delta: Counter[str]) -> int:
            cur = await self._db.execute(
                "INSERT OR IGNORE INTO queue (seq, id, ts, value, unit) "
                "SELECT seq, id, ts, value, unit FROM dead"
            )
            moved = cur.rowcount
            cur = await self._db.execute(
                "INSERT OR IGNORE INTO salvage (stream, seq, id, ts, value, unit, device_id) "
                "SELECT stream, seq, id, ts, value, unit, device_id FROM dead_salvage"
            )
            salvaged = cur.rowcount
            await self._db.execute("DELETE FROM dead")
            await self._db.execute("DELETE FROM dead_salvage")
            delta.update(dead=-(moved + salvaged), queued=moved, salvage=salvaged)
            return moved + salvaged

        return await self._transaction(work)

    async def take_salvage(self, salvage: Salvage) -> int:
        """Queue the readings recovered from a damaged file under their original stream."""
        stream = salvage.stream or wire.new_stream_id()
        device = salvage.device_id or ""
        rows = [
            (stream, seq, rid, ts, value, unit, device)
            for seq, rid, ts, value, unit in salvage.rows
        ]

        async def work(delta: Counter[str]) -> int:
            cur = await self._db.executemany(
                "INSERT OR IGNORE INTO salvage (stream, seq, id, ts, value, unit, device_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            delta["salvage"] += cur.rowcount
            return cur.rowcount

        return await self._transaction(work) if rows else 0

    async def _maybe_vacuum(self) -> None:
        # while a backlog drains, new readings reuse the free pages; shrink once drained,
        # or when most of the file is free
        free, pages = await self._fetchone("SELECT * FROM pragma_freelist_count, pragma_page_count")
        if (free and self.pending == 0) or free > max(VACUUM_THRESHOLD_PAGES, pages // 2):
            await self.vacuum()

    async def vacuum(self) -> None:
        """Return free pages to the file system.

        The pragma frees one page per step, and its rows have no columns, so a cursor's
        fetchall() stops after the first page; executescript steps it to the end.
        """
        async with self._write:
            await self._db.executescript("PRAGMA incremental_vacuum;")

    async def close(self) -> None:
        """Let shielded transactions finish, checkpoint and close the connection."""
        if self._transactions:
            await asyncio.gather(*self._transactions, return_exceptions=True)
        with contextlib.suppress(sqlite3.Error):
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._db.close()


def _set_aside_name(path: Path, kind: str) -> Path:
    return path.with_name(f"{path.name}.{kind}-{time.strftime('%Y%m%d-%H%M%S')}")


def _quarantine(path: Path, reason: str) -> Path:
    target = _set_aside_name(path, "corrupt")
    for suffix in ("", "-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            side.rename(Path(f"{target}{suffix}"))
    logger.error("queue file %s unusable (%s): moved aside to %s", path, reason, target)
    return target


def beside_newer(path: Path) -> Path:
    """Where this agent queues while `path` belongs to a newer Pulse."""
    return path.with_name(f"{path.stem}.v{SCHEMA_VERSION}{path.suffix}")


def _is_unusable(err: Exception) -> bool:
    """True only if the file itself is bad: damaged or not a database.

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


async def _open_own(path: Path, max_pending: int) -> tuple[Store, Quarantine | None]:
    """Open the queue at `path`, or beside it when a newer Pulse owns that file."""
    version = peek_user_version(path)
    if version is not None and version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"schema version {version} is newer than this agent supports ({SCHEMA_VERSION})"
        )
    try:
        return await _connect(path, max_pending), None
    except NewerSchemaError:
        raise
    except (sqlite3.DatabaseError, StoreError) as err:
        if not _is_unusable(err):
            logger.error("cannot open the queue file %s (%s); leaving it as it is", path, err)
            raise StoreError(f"cannot open the queue file {path}: {err}") from err
        moved = await asyncio.to_thread(_quarantine, path, str(err))
        salvage = await asyncio.to_thread(salvage_queue, moved)
        store = await _connect(path, max_pending)
        return store, Quarantine(moved, str(err), salvage=salvage)


@contextlib.asynccontextmanager
async def open_store(path: Path, max_pending: int) -> AsyncIterator[Store]:
    """Open (or create) the queue; move a damaged file aside, salvage what it still holds,
    and start anew. A newer Pulse's file is left untouched and a new one used beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        store, quarantined = await _open_own(path, max_pending)
    except NewerSchemaError as err:
        beside = beside_newer(path)
        logger.error(
            "queue file %s was written by a newer Pulse (%s): left untouched; queueing in %s",
            path,
            err,
            beside,
        )
        store, quarantined = await _open_own(beside, max_pending)
        quarantined = Quarantine(path, f"{path} was written by a newer Pulse ({err})", kept=True)
    store.quarantined = quarantined
    if quarantined is not None and quarantined.salvage is not None:
        taken = await store.take_salvage(quarantined.salvage)
        logger.warning("salvage of %s: %s", quarantined.moved_to, quarantined.salvage.describe())
        logger.info(
            "%d recovered readings queued under stream %s", taken, quarantined.salvage.stream
        )
    logger.info("queue %s open: %d pending, stream %s", store.path, store.pending, store.stream_id)
    try:
        yield store
    finally:
        await store.close()
