"""Overview benchmark: 10,000 devices with an hour of readings each, on SQLite and PostgreSQL.

    .venv/bin/python bench/overview.py [--devices 10000] [--per-minute 3] [--repeat 5]
        [--database-url postgresql://postgres@127.0.0.1:5432/test] [--no-postgres]

Fills a SQLite file and a fresh PostgreSQL schema (dropped afterwards) through the store, one
batch per device (an hour of readings ending now, `--per-minute` a minute), then serves the
collector in process and times, side by side in one run, the median of `--repeat` requests:
  first     GET /api/v1/overview (the first page of 50)
  middle    GET /api/v1/overview?offset=<half the devices>
  search    GET /api/v1/overview?q=<a part of 10 devices' ids>
  detail    GET /api/v1/devices/{id} of a device with gaps
  devices   GET /api/v1/devices: every device, from the summaries
  aggregate the old devices(): per-stream aggregates over every reading
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.app import create_app
from collector.config import CollectorConfig
from collector.store import DEVICES_FROM_READINGS, ReadingStore
from collector.store_sqlite import SqliteStore
from pulse_wire import Batch, Message, Reading

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
# stores in flight while filling: enough to keep PostgreSQL's pool busy
FILL_CONCURRENCY = 8


def device_batch(n: int, per_minute: int, now: dt.datetime) -> Batch:
    """Device n's hour of readings; every tenth device skips a few seqs (gaps)."""
    count = 60 * per_minute
    step = dt.timedelta(minutes=1) / per_minute
    seqs = [s for s in range(1, count + 1) if n % 10 or s % 37]
    readings = [
        Reading(uuid.uuid4(), seq, now - (count - seq) * step, Message(60.0 + (seq + n) % 60))
        for seq in seqs
    ]
    return Batch(f"device-{n:05}", "heart_rate", readings)


async def fill(store: ReadingStore, devices: int, per_minute: int) -> float:
    """Store every device's batch; returns the seconds it took."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    start = time.perf_counter()
    queue = iter(range(devices))

    async def worker() -> None:
        for n in queue:
            await store.store_batch(device_batch(n, per_minute, now))

    await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
    return time.perf_counter() - start


async def median_s(call: Callable[[], Awaitable[object]], repeat: int) -> float:
    """The median wall time of `repeat` calls, after one unmeasured warm-up."""
    await call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


@contextlib.asynccontextmanager
async def serve(config: CollectorConfig) -> AsyncIterator[str]:
    """The collector in process on a free loopback port; yields its URL."""
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def measure(
    config: CollectorConfig, aggregate: Callable[[], Awaitable[object]], devices: int, repeat: int
) -> dict[str, float]:
    """Time each request against the collector, and the old aggregate beside them."""
    figures: dict[str, float] = {}
    paths = {
        "first": "/api/v1/overview",
        "middle": f"/api/v1/overview?offset={devices // 2}",
        "search": f"/api/v1/overview?q=DEVICE-0{devices // 20:03}",
        "detail": "/api/v1/devices/device-00010",
        "devices": "/api/v1/devices",
    }
    async with serve(config) as url, aiohttp.ClientSession() as session:

        async def get(path: str) -> Any:
            async with session.get(url + path) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        for name, path in paths.items():
            figures[f"{name}_s"] = await median_s(functools.partial(get, path), repeat)
        figures["search_matches"] = (await get(paths["search"]))["total"]
        first = (await get(paths["first"]))["devices"]
        # a figure for an empty page would mean nothing
        assert all(d["spark"] and d["readings_per_min"] for d in first), first[0]
    figures["aggregate_s"] = await median_s(aggregate, repeat)
    return figures


async def run_sqlite(workdir: Path, devices: int, per_minute: int, repeat: int) -> dict[str, Any]:
    path = workdir / "collector.db"
    store = await SqliteStore.open(path)
    try:
        fill_s = await fill(store, devices, per_minute)
    finally:
        await store.close()

    async def aggregate() -> object:
        async with aiosqlite_connect(path) as conn:
            return await conn.execute_fetchall(DEVICES_FROM_READINGS)

    config = CollectorConfig(db=str(path), logs_dir=str(workdir / "logs"))
    figures = await measure(config, aggregate, devices, repeat)
    return {"fill_s": round(fill_s, 1), "db_mb": round(path.stat().st_size / 2**20), **figures}


@contextlib.asynccontextmanager
async def aiosqlite_connect(path: Path) -> AsyncIterator[Any]:
    import aiosqlite

    conn = await aiosqlite.connect(path)
    try:
        yield conn
    finally:
        await conn.close()


async def run_postgres(
    url: str, workdir: Path, devices: int, per_minute: int, repeat: int
) -> dict[str, Any]:
    import asyncpg

    from collector.store_postgres import PostgresStore

    schema = f"pulse_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    scoped = f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    try:
        store = await PostgresStore.open(scoped)
        try:
            fill_s = await fill(store, devices, per_minute)
        finally:
            await store.close()
        conn = await asyncpg.connect(scoped)
        try:
            await conn.execute("ANALYZE")

            async def aggregate() -> object:
                return await conn.fetch(DEVICES_FROM_READINGS)

            config = CollectorConfig(
                db=str(workdir / "unused.db"), database_url=scoped, logs_dir=str(workdir / "logs")
            )
            figures = await measure(config, aggregate, devices, repeat)
        finally:
            await conn.close()
        return {"fill_s": round(fill_s, 1), **figures}
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--per-minute", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "devices": args.devices,
        "readings": args.devices * 60 * args.per_minute,
        "per_minute": args.per_minute,
    }
    with tempfile.TemporaryDirectory(prefix="pulse-overview-") as tmp:
        workdir = Path(tmp)
        result["sqlite"] = await run_sqlite(workdir, args.devices, args.per_minute, args.repeat)
        if not args.no_postgres:
            result["postgres"] = await run_postgres(
                args.database_url, workdir, args.devices, args.per_minute, args.repeat
            )
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
