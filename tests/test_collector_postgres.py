"""The collector on PostgreSQL: reachability, schema handling, and the HTTP API end to end.

The store behaviour tests in test_collector_store.py run against PostgreSQL too, through the
helpers here. The server is postgresql://postgres@127.0.0.1:5432/test unless
PULSE_TEST_DATABASE_URL says otherwise. An unreachable server skips these tests, unless
PULSE_REQUIRE_POSTGRES=1 (as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from agent import wire
from collector.app import create_app
from collector.config import CollectorConfig
from collector.store import SCHEMA_VERSION, StoreError
from collector.store_postgres import PostgresStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@functools.cache
def _unreachable(url: str) -> str | None:
    """Why the server cannot be reached, or None; asked once per test run."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as err:
        return f"PostgreSQL at {host}:{port} is unreachable ({err}); set PULSE_TEST_DATABASE_URL"


def postgres_url() -> str:
    """The test server's URL; skips the test if it is unreachable (fails if it is required)."""
    url = os.environ.get("PULSE_TEST_DATABASE_URL") or DEFAULT_URL
    reason = _unreachable(url)
    if reason is not None:
        if os.environ.get("PULSE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason}, and PULSE_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    return url


def with_search_path(url: str, schema: str) -> str:
    """The URL with a search_path setting, which asyncpg passes to the server."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh schema for one test, dropped afterwards; yields a URL that uses it."""
    url = postgres_url()
    schema = f"pulse_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        try:
            yield with_search_path(url, schema)
        finally:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_schema() as url:
        yield url


def reading(seq: int, value: float = 72) -> dict[str, Any]:
    when = dt.datetime.now(dt.UTC).isoformat()
    return {
        "id": f"01900000-0000-7000-8000-{seq:012x}",
        "seq": seq,
        "datetime": when,
        "message": {"value": value, "unit": "bpm"},
    }


async def test_schema_is_created_once_and_reopened(pg_url: str) -> None:
    first = await PostgresStore.open(pg_url)
    try:
        batch = wire.decode_batch(
            wire.encode({"device_id": "dev", "stream": "s", "readings": [reading(1)]})
        )
        assert (await first.store_batch(batch)).accepted == 1
    finally:
        await first.close()
    second = await PostgresStore.open(pg_url)
    try:
        devices = await second.devices()
        assert [(d.device_id, d.count) for d in devices] == [("dev", 1)]
    finally:
        await second.close()
    conn = await asyncpg.connect(pg_url)
    try:
        versions = await conn.fetch("SELECT version FROM collector_schema")
    finally:
        await conn.close()
    assert [r["version"] for r in versions] == [SCHEMA_VERSION]


async def test_newer_schema_is_refused(pg_url: str) -> None:
    await (await PostgresStore.open(pg_url)).close()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("UPDATE collector_schema SET version = $1", SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="schema version 2"):
        await PostgresStore.open(pg_url)


async def test_api_on_postgres(pg_url: str, aiohttp_client: Any, tmp_path: Any) -> None:
    config = CollectorConfig(db=str(tmp_path / "unused.db"), database_url=pg_url)
    client = await aiohttp_client(create_app(config))
    body = {"device_id": "dev", "stream": "s", "readings": [reading(1), reading(2), reading(3)]}
    first = await client.post("/api/v1/readings", json=body)
    assert first.status == 200
    assert await first.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    again = await client.post("/api/v1/readings", json=body)
    assert await again.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    got = await (await client.get("/api/v1/readings?device_id=dev&since=1")).json()
    assert [r["seq"] for r in got] == [2, 3]
    assert not (tmp_path / "unused.db").exists(), "SQLite was opened although PostgreSQL is set"
