"""retention_days end to end: the collector refuses readings it would not keep, its worker
deletes what ages out, and a failed pass does not stop the worker."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import pulse_wire as wire
from collector.app import create_app
from collector.config import CollectorConfig
from collector.maintenance import run_maintenance
from collector.store import ReadingStore
from collector.store_postgres import PostgresStore
from collector.store_sqlite import SqliteStore
from tests.test_collector_postgres import postgres_schema

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


def body(readings: list[tuple[int, dt.datetime]]) -> dict[str, object]:
    return {
        "device_id": "old-dev",
        "stream": "s",
        "readings": [
            {
                "id": str(uuid.uuid4()),
                "seq": seq,
                "datetime": when.isoformat(),
                "message": {"value": 70, "unit": "bpm"},
            }
            for seq, when in readings
        ],
    }


@pytest.fixture(params=["sqlite", "postgres"])
async def config(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CollectorConfig]:
    if request.param == "sqlite":
        yield CollectorConfig(db=str(tmp_path / "c.db"), retention_days=7)
        return
    async with postgres_schema() as url:
        yield CollectorConfig(database_url=url, retention_days=7)


async def test_a_reading_older_than_retention_is_refused_by_name(
    aiohttp_client: MakeClient, config: CollectorConfig
) -> None:
    client = await aiohttp_client(create_app(config))
    now = dt.datetime.now(dt.UTC)
    sent = body([(1, now - dt.timedelta(days=9)), (2, now - dt.timedelta(minutes=1))])
    resp = await client.post("/api/v1/readings", json=sent)
    assert resp.status == 200
    ack = await resp.json()
    assert ack["accepted"] == 1
    readings = sent["readings"]
    assert isinstance(readings, list)
    assert [r["id"] for r in ack["rejected"]] == [readings[0]["id"]]
    assert "retention_days" in ack["rejected"][0]["error"]
    resp = await client.get("/api/v1/readings", params={"device_id": "old-dev"})
    stored = await resp.json()
    assert [r["id"] for r in stored] == [readings[1]["id"]]


@pytest.fixture(params=["sqlite", "postgres"])
async def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_the_maintenance_pass_deletes_what_ages_out(kind: str, tmp_path: Path) -> None:
    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    ages = [0, 2, 6, 8, 30]
    sent = [
        wire.Reading(
            id=uuid.uuid4(),
            seq=i + 1,
            datetime=now - dt.timedelta(days=d, minutes=5),
            message=wire.Message(value=60 + i, unit="bpm"),
        )
        for i, d in enumerate(ages)
    ]
    keep = dt.timedelta(days=7)
    cutoff = dt.datetime.combine((now - keep).date(), dt.time(), tzinfo=dt.UTC)

    async def check(open_store: Callable[..., Awaitable[ReadingStore]]) -> None:
        store = await open_store(clock=lambda: now)
        await store.store_batch(wire.Batch(device_id="d", stream="s", readings=sent))
        await store.close()
        store = await open_store(clock=lambda: now, retention=keep)
        try:
            await store.maintain()
            left = await store.readings("d", None, 100, None)
            assert [r.id for r in left] == [r.id for r in sent if r.datetime >= cutoff]
            # the hourly rollups keep the history; the per-minute ones went with the readings
            month = await store.series("d", now - dt.timedelta(days=40), now, 10)
            assert sum(p.count for p in month) == len(sent)
        finally:
            await store.close()

    if kind == "sqlite":
        path = tmp_path / "c.db"
        await check(lambda **kw: SqliteStore.open(path, **kw))
    else:
        async with postgres_schema() as url:
            await check(lambda **kw: PostgresStore.open(url, **kw))


class Flaky:
    """A store whose first maintenance pass fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def maintain(self) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("disk on fire")


async def test_a_failed_pass_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Flaky()
    passes = asyncio.Event()

    async def sleep(_: float) -> None:
        if store.calls >= 3:
            passes.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run_maintenance(store, 1.0, sleep))  # type: ignore[arg-type]
    await asyncio.wait_for(passes.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.calls == 3
    assert "store maintenance failed" in caplog.text
    assert "disk on fire" in caplog.text
