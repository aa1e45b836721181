"""The collector on PostgreSQL: reachability, schema handling, and the HTTP API end to end.

The store behaviour tests in test_collector_store.py run against PostgreSQL too, through the
helpers here. The server is postgresql://postgres@127.0.0.1:5432/test unless
PULSE_TEST_DATABASE_URL says otherwise. An unreachable server skips these tests, unless
PULSE_STRICT=1 or PULSE_REQUIRE_POSTGRES=1 (as in CI), which turn the skip into a failure
(tests/requirements.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import pulse_wire as wire
from collector.app import create_app
from collector.config import CollectorConfig
from collector.store import StoreError
from collector.store_postgres import SCHEMA_VERSION, PostgresStore
from tests.conftest import reading
from tests.requirements import postgres_url


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
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await PostgresStore.open(pg_url)


async def test_api_on_postgres(pg_url: str, aiohttp_client: Any, tmp_path: Any) -> None:
    config = CollectorConfig(db=str(tmp_path / "unused.db"), database_url=pg_url)
    client = await aiohttp_client(create_app(config))
    body = {"device_id": "dev", "stream": "s", "readings": [reading(1), reading(2), reading(3)]}
    first = await client.post("/api/v1/readings", json=body, headers={"Pulse-Hub": "hub-1"})
    assert first.status == 200
    assert await first.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    again = await client.post("/api/v1/readings", json=body)
    assert await again.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    got = await (await client.get("/api/v1/readings?device_id=dev&since=1")).json()
    assert [r["seq"] for r in got] == [2, 3]
    devices = await (await client.get("/api/v1/devices")).json()
    assert [(d["device_id"], d["hub"]) for d in devices] == [("dev", "hub-1")]
    detail = await (await client.get("/api/v1/devices/dev")).json()
    assert detail["hub"] == "hub-1"
    assert not (tmp_path / "unused.db").exists(), "SQLite was opened although PostgreSQL is set"


async def test_api_on_postgres_rejects_seq_and_id_conflicts(
    pg_url: str, aiohttp_client: Any, tmp_path: Any
) -> None:
    config = CollectorConfig(db=str(tmp_path / "unused.db"), database_url=pg_url)
    client = await aiohttp_client(create_app(config))
    body = {"device_id": "dev", "stream": "s", "readings": [reading(1), reading(2)]}
    assert (await (await client.post("/api/v1/readings", json=body)).json())["accepted"] == 2
    new_id = {**reading(1), "id": "01900000-0000-7000-8000-0000000000ff"}
    moved = {**reading(2), "seq": 5}
    body["readings"] = [reading(2), new_id, moved, reading(3)]
    ack = await (await client.post("/api/v1/readings", json=body)).json()
    assert (ack["accepted"], ack["duplicates"]) == (1, 1)
    assert [r["id"] for r in ack["rejected"]] == [new_id["id"], moved["id"]]
    assert "seq 1 of stream s already holds reading" in ack["rejected"][0]["error"]
    assert ack["rejected"][0]["error"].endswith(f"has id {new_id['id']} (seq conflict)")
    assert "is already stored as seq 2 of stream s of device dev" in ack["rejected"][1]["error"]
    assert ack["rejected"][1]["error"].endswith("has seq 5 (id conflict)")
    got = await (await client.get("/api/v1/readings?device_id=dev")).json()
    assert [(r["seq"], r["id"]) for r in got] == [(s, reading(s)["id"]) for s in (1, 2, 3)]


# each store has one connection, as if each were its own collector process
PROCESSES = 20
WINDOW = 200
STEP = 50


def concurrent_batches(device: str) -> tuple[list[wire.Reading], list[wire.Batch]]:
    """Readings, and one window of them per process: each overlaps its neighbours' windows."""
    # the last window ends at the last reading, so every reading is sent at least once
    count = (PROCESSES - 1) * STEP + WINDOW
    now = dt.datetime.now(dt.UTC)
    readings = [
        wire.Reading(
            id=wire.new_reading_id(),
            seq=seq,
            datetime=now - dt.timedelta(seconds=count - seq),
            message=wire.Message(value=60 + seq % 50),
        )
        for seq in range(1, count + 1)
    ]
    # oldest first within a window, as the agent sends
    batches = [
        wire.Batch(device_id=device, stream="s", readings=readings[i * STEP : i * STEP + WINDOW])
        for i in range(PROCESSES)
    ]
    return readings, batches


async def send_at_once(stores: list[PostgresStore], batches: list[wire.Batch]) -> list[wire.Ack]:
    """Each store stores its batch; all start together, so their transactions overlap."""
    go = asyncio.Event()

    async def send(store: PostgresStore, batch: wire.Batch) -> wire.Ack:
        await go.wait()
        return await store.store_batch(batch)

    tasks = [asyncio.create_task(send(s, b)) for s, b in zip(stores, batches, strict=True)]
    await asyncio.sleep(0)
    go.set()
    return await asyncio.gather(*tasks)


async def test_concurrent_collectors_count_the_same_readings_once(pg_url: str) -> None:
    stores = [await PostgresStore.open(pg_url, max_connections=1) for _ in range(PROCESSES)]
    try:
        for round_ in range(3):
            device = f"dev-{round_}"
            readings, batches = concurrent_batches(device)
            acks = await send_at_once(stores, batches)
            assert [a.rejected for a in acks] == [[]] * PROCESSES, "a concurrent write conflicted"
            assert [a.accepted + a.duplicates for a in acks] == [WINDOW] * PROCESSES
            assert sum(a.accepted for a in acks) == len(readings)
            got = await stores[0].readings(device, None, 10_000, None)
            assert [(r.seq, r.id) for r in got] == [(r.seq, r.id) for r in readings]
            assert [r.message.value for r in got] == [r.message.value for r in readings]
    finally:
        for store in stores:
            await store.close()


async def test_a_new_batch_is_one_statement_and_a_retry_is_still_classified(pg_url: str) -> None:
    """The common case is one round trip: one statement, no BEGIN/COMMIT, no reset query on
    release. A batch with duplicates still gets them told apart, and counted once."""

    def batch_of(*seqs: int) -> wire.Batch:
        body = {"device_id": "dev", "stream": "s", "readings": [reading(s) for s in seqs]}
        return wire.decode_batch(wire.encode(body))

    store = await PostgresStore.open(pg_url, max_connections=1)
    try:
        # the first batch also makes asyncpg look up the array types, once per connection
        assert await store.store_batch(batch_of(1)) == wire.Ack(accepted=1, duplicates=0)
        sent: list[str] = []
        # the pool's one connection: every query the store sends passes its logger
        async with store._pool.acquire() as conn:
            conn.add_query_logger(lambda logged: sent.append(logged.query))
        sent.clear()
        assert await store.store_batch(batch_of(2, 3)) == wire.Ack(accepted=2, duplicates=0)
        assert len(sent) == 1, sent

        assert await store.store_batch(batch_of(3, 4)) == wire.Ack(accepted=1, duplicates=1)
        device = await store.device("dev")
        assert device is not None
        assert [(s.first_seq, s.last_seq, s.count) for s in device.streams] == [(1, 4, 4)]
    finally:
        await store.close()
