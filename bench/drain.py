"""Drain benchmark: queue N readings, start a local collector, time the drain end to end.

    .venv/bin/python bench/drain.py [--readings 1000000] [--batch 1000] [--rounds 1]
                                    [--database-url postgresql://postgres@127.0.0.1/test]

Side by side in each round, on copies of one filled queue file:
  raw      the agent's own Store reading `oldest(batch)` and `ack`-ing it, no HTTP: the ceiling
           of the agent's side (the collector's insert is not in it)
  pulse    the agent's Sender against a real collector process (SQLite, synchronous=FULL;
           or PostgreSQL with --database-url, each run in a fresh schema of that database),
           with 1 and with 2 batches in flight

Each pulse line gives its time over the raw drain's time in the same round (the goal: at
most 2.0, i.e. at least half the raw rate). With several rounds, a summary of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.config import Config, LiveConfig, LoadedConfig
from agent.sender import Sender
from agent.status import StatusHub
from agent.store import open_store
from tests.harness import get_json, start_collector

CHUNK = 50_000
RUNS = (("pulse, 1 in flight", 1), ("pulse, 2 in flight", 2))


async def fill(path: Path, count: int) -> None:
    """Queue `count` readings the way the sensor would, in large transactions."""
    now = dt.datetime.now(dt.UTC)
    async with open_store(path, max_pending=count + 1) as store:
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            await store.add_many([(now, 60 + (start + i) % 80, "bpm") for i in range(n)])


async def drain_raw(path: Path, batch: int) -> float:
    """Read and ack every batch with no network: what the agent's store alone allows."""
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


@contextlib.contextmanager
def fresh_schema(url: str | None) -> Iterator[str | None]:
    """A new schema in the database at `url` for one run, dropped afterwards (None: SQLite)."""
    if url is None:
        yield None
        return
    schema = f"pulse_drain_{uuid.uuid4().hex[:12]}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    finally:
        asyncio.run(execute(f"DROP SCHEMA {schema} CASCADE"))


def postgres_cpu() -> float:
    """CPU seconds of every process named postgres: the server's share (others' too)."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "postgres":
            with contextlib.suppress(psutil.Error):
                total += _cpu(proc)
    return total


def run_round(
    work: Path, source: Path, n: int, batch: int, database_url: str | None = None
) -> dict[str, float]:
    """One raw drain and one drain per pulse setting, each on its own copy of `source`."""
    times: dict[str, float] = {}
    copy = work / "raw.db"
    shutil.copy(source, copy)
    cpu = _cpu(psutil.Process())
    times["raw"] = asyncio.run(drain_raw(copy, batch))
    per_k = 1000 / n
    agent_ms = (_cpu(psutil.Process()) - cpu) * 1000 * per_k
    print(
        f"  raw store drain     {times['raw']:6.2f} s  {n / times['raw']:10,.0f} readings/s"
        f"  CPU ms per 1000 readings: agent {agent_ms:.1f}"
    )
    for name, in_flight in RUNS:
        folder = work / f"pulse-{in_flight}"
        folder.mkdir()
        shutil.copy(source, folder / "queue.db")
        with fresh_schema(database_url) as url:
            args = ("--database-url", url) if url else ()
            collector = start_collector(folder / "collector", None, *args)
            try:
                server = psutil.Process(collector.popen.pid)
                before = _cpu(psutil.Process()), _cpu(server), postgres_cpu()
                s, cycles = asyncio.run(
                    drain_pulse(folder / "queue.db", batch, collector.port, in_flight)
                )
                agent_ms = (_cpu(psutil.Process()) - before[0]) * 1000 * per_k
                server_ms = (_cpu(server) - before[1]) * 1000 * per_k
                postgres_ms = (postgres_cpu() - before[2]) * 1000 * per_k
                stored = sum(d["count"] for d in get_json(f"{collector.url}/api/v1/devices"))
                if stored != n:
                    raise SystemExit(f"{name}: the collector holds {stored} of {n} readings")
            finally:
                collector.stop()
        times[name] = s
        print(
            f"  {name}  {s:6.2f} s  {n / s:10,.0f} readings/s  "
            f"end-to-end/raw time {s / times['raw']:.2f}  CPU ms per 1000 readings: "
            f"agent {agent_ms:.1f}, collector {server_ms:.1f}"
            + (f", postgres {postgres_ms:.1f}" if url else "")
        )
        shutil.rmtree(folder)
    copy.unlink()
    return times


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    """Fill one queue, then drain copies of it side by side, `--rounds` times."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument(
        "--batch", type=int, default=Config().sender.catchup_batch_size, help="readings per batch"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--database-url", help="drain into a collector on PostgreSQL (a fresh schema a run)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pulse-drain-"))
    n = args.readings
    try:
        source = work / "filled.db"
        t0 = time.perf_counter()
        asyncio.run(fill(source, n))
        fill_s = time.perf_counter() - t0
        print(f"readings            {n:,} in batches of {args.batch}")
        print(f"fill (add_many)     {fill_s:6.2f} s  {n / fill_s:10,.0f} readings/s")
        rounds = []
        for r in range(args.rounds):
            print(f"round {r + 1}")
            rounds.append(run_round(work, source, n, args.batch, args.database_url))
        if args.rounds > 1:
            print(f"median of {args.rounds} rounds")
            for name in ("raw", *(name for name, _ in RUNS)):
                s = statistics.median(t[name] for t in rounds)
                line = f"  {name:18s}  {s:6.2f} s  {n / s:10,.0f} readings/s"
                if name != "raw":
                    ratio = statistics.median(t[name] / t["raw"] for t in rounds)
                    line += f"  end-to-end/raw time {ratio:.2f}"
                print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
