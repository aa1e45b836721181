"""One SQL interface over SQLite and PostgreSQL, for the alert and account stores.

A store writes its SQL once, with `?` placeholders and `{ts}`/`{id}` in its DDL;
this module runs it on either backend. SQLite holds times as the fixed-width UTC text the
reading store uses (so text order is time order); PostgreSQL as timestamptz.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import aiosqlite

from collector.store_sqlite import timestamp_text

Dialect = Literal["sqlite", "postgres"]
Row = tuple[Any, ...]

# DDL words that differ between the backends
_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"ts": "TEXT", "id": "INTEGER PRIMARY KEY"},
    "postgres": {"ts": "timestamptz", "id": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
}
# any number fits; distinct from the reading store's, so the two migrations never wait
MIGRATION_LOCK = 0x50554C5346


class Connection(Protocol):
    """What a statement runs on inside a transaction."""

    async def execute(self, sql: str, args: Sequence[object] = ()) -> None:
        """Run one statement."""
        ...

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run one statement once per row of arguments."""
        ...

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Run a query and return its rows."""
        ...


class Database(Protocol):
    """A connection (or pool) to one database, for the alert store."""

    dialect: Dialect

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Run a query outside any transaction and return its rows."""
        ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        ...

    async def close(self) -> None:
        """Release the connection(s)."""
        ...


def ddl(sql: str, dialect: Dialect) -> str:
    """`sql` with its `{ts}` and `{id}` column types spelled for `dialect`."""
    return sql.format(**_TYPES[dialect])


def as_time(value: object) -> dt.datetime:
    """A time as either backend returns it (text from SQLite), as an aware datetime."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def maybe_time(value: object) -> dt.datetime | None:
    """`as_time`, or None for NULL."""
    return None if value is None else as_time(value)


def _sqlite_args(args: Sequence[object]) -> list[object]:
    return [timestamp_text(a) if isinstance(a, dt.datetime) else a for a in args]


class _SqliteConnection:
    def __init__(self, conn: aiosqlite.Connection):
        self._conn = conn

    async def execute(self, sql: str, args: Sequence[object] = ()) -> None:
        await self._conn.execute(sql, _sqlite_args(args))

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._conn.executemany(sql, [_sqlite_args(r) for r in rows])

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        return [tuple(r) for r in await self._conn.execute_fetchall(sql, _sqlite_args(args))]


class SqliteDatabase:
    """One aiosqlite connection of its own to the collector's file, one transaction at a time."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection):
        self._conn = _SqliteConnection(conn)
        self._raw = conn
        # aiosqlite would interleave two coroutines' statements on the one connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, schema: str) -> SqliteDatabase:
        """Connect to `path` (its reading store already open) and run `schema`'s DDL."""
        # autocommit mode: transactions are the explicit BEGIN IMMEDIATE of transaction()
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA busy_timeout=5000")
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.executescript(f"BEGIN IMMEDIATE; {ddl(schema, 'sqlite')} COMMIT;")
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Run a query and return its rows."""
        async with self._lock:
            return await self._conn.fetch(sql, args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back if the block raises."""
        async with self._lock:
            await self._raw.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._raw.execute("ROLLBACK")
                raise
            await self._raw.execute("COMMIT")

    async def close(self) -> None:
        """Close the connection."""
        await self._raw.close()


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1`, `$2`, … (the store's SQL has no `?` in text)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class _PostgresConnection:
    def __init__(self, conn: Any):
        self._conn = conn

    async def execute(self, sql: str, args: Sequence[object] = ()) -> None:
        await self._conn.execute(numbered(sql), *args)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        rows = list(rows)
        if rows:
            await self._conn.executemany(numbered(sql), rows)

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        return [tuple(r) for r in await self._conn.fetch(numbered(sql), *args)]


class PostgresDatabase:
    """A small asyncpg pool of its own, in the schema the URL's search_path names."""

    dialect: Dialect = "postgres"

    def __init__(self, pool: Any):
        self._pool = pool

    @classmethod
    async def open(cls, url: str, schema: str) -> PostgresDatabase:
        """Connect and run `schema`'s DDL under an advisory lock (replicas may start at once)."""
        import asyncpg  # a SQLite-only install has no PostgreSQL driver

        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await conn.execute(ddl(schema, "postgres"))
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def fetch(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Run a query and return its rows."""
        return [tuple(r) for r in await self._pool.fetch(numbered(sql), *args)]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One pooled connection in a transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PostgresConnection(conn)

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()
