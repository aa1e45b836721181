"""Drain benchmark: queue N readings, start a local collector, time the drain end to end.

    .venv/bin/python bench/drain.py [--readings 1000000] [--batch 1000]

Side by side in one run, on the same queue file:
  raw      aiosqlite reading and deleting the queue in batches, no HTTP: the ceiling
  pulse    the agent's Sender against a real collector process (SQLite, synchronous=FULL)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import Config, LiveConfig, LoadedConfig
from agent.sender import Sender
from agent.status import StatusHub
from agent.store import open_store
from tests.harness import start_collector

CHUNK = 50_000


async def fill(path: Path, count: int) -> None:
    """Queue `count` readings the way the sensor would, in large transactions."""
    now = dt.datetime.now(dt.UTC)
    async with open_store(path, max_pending=count + 1) as store:
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            await store.add_many([(now, 60 + (start + i) % 80, "bpm") for i in range(n)])


async def drain_raw(path: Path, batch: int) -> float:
    """Read and ack every batch with no network: what SQLite alone allows."""
    async with open_store(path, max_pending=10**9) as store:
        start = time.perf_counter()
        while (queued := await store.oldest(batch)) is not None:
            await store.ack(queued)
        return time.perf_counter() - start


async def drain_pulse(path: Path, batch: int, port: int, in_flight: int) -> tuple[float, int]:
    """The Sender's catch-up against a real collector; returns seconds and cycles."""
    config = Config()
    config.server.port = port
    config.sender.batch_size = batch
    config.sender.catchup_batch_size = batch
    config.device_id = "bench"
    live = LiveConfig(LoadedConfig(config, path.parent / "config.json"))
    async with open_store(path, max_pending=10**9) as store, aiohttp.ClientSession() as session:
        sender = Sender(store, StatusHub(), session, lambda: live.config, in_flight=in_flight)
        cycles = 0
        start = time.perf_counter()
        while store.pending:
            await sender.cycle()
            cycles += 1
        return time.perf_counter() - start, cycles


def main() -> None:
    """Run both drains on copies of one filled queue and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pulse-drain-"))
    try:
        source = work / "filled.db"
        t0 = time.perf_counter()
        asyncio.run(fill(source, args.readings))
        fill_s = time.perf_counter() - t0
        copies = {}
        for name in ("raw", "serial", "pipelined"):
            copies[name] = work / name / "queue.db"
            copies[name].parent.mkdir()
            shutil.copy(source, copies[name])
        n = args.readings
        print(f"readings            {n:,} in batches of {args.batch}")
        print(f"fill (add_many)     {fill_s:6.2f} s  {n / fill_s:10,.0f} readings/s")
        raw_s = asyncio.run(drain_raw(copies["raw"], args.batch))
        print(f"raw SQLite drain    {raw_s:6.2f} s  {n / raw_s:10,.0f} readings/s  (no HTTP)")
        for name, in_flight in (("serial", 1), ("pipelined", 2)):
            collector = start_collector(work / f"collector-{name}")
            try:
                s, cycles = asyncio.run(
                    drain_pulse(copies[name], args.batch, collector.port, in_flight)
                )
            finally:
                collector.stop()
            print(
                f"pulse, {in_flight} in flight  {s:6.2f} s  {n / s:10,.0f} readings/s"
                f"  ({s / raw_s:.1f}x the raw drain time, {cycles} cycle)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
