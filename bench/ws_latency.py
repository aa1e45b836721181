"""Dashboard latency: time from a stored reading to its websocket message, on a real agent.

    .venv/bin/python bench/ws_latency.py [--readings 3000] [--interval 0.01] [--clients 1 5]

Runs a real collector and a real `python -m agent` process on loopback (log level INFO),
connects websocket clients to /ws the way the page does, and for every "reading" event
measures receive time minus the reading's own timestamp. That timestamp is taken just
before the reading's durable SQLite commit (synchronous=FULL), so each figure is an upper
bound on commit -> message and includes the commit itself; timestamps have millisecond
resolution, so figures may read up to 1 ms high.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import free_port, start_agent, start_collector, write_agent_config

WARMUP = 50


async def listen(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[float]:
    """Latencies (ms) of the next `count` readings after a warm-up."""
    latencies: list[float] = []
    seen = 0
    async for msg in ws:
        received = time.time()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        event = json.loads(msg.data)
        if event["type"] != "reading":
            continue
        seen += 1
        if seen <= WARMUP:
            continue
        stamp = dt.datetime.fromisoformat(event["reading"]["datetime"]).timestamp()
        latencies.append((received - stamp) * 1000)
        if len(latencies) >= count:
            break
    return latencies


async def measure(port: int, count: int, clients: int) -> list[float]:
    """Connect `clients` websockets at once; return every client's latencies together."""
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(f"http://127.0.0.1:{port}/ws") for _ in range(clients)]
        try:
            results = await asyncio.gather(*(listen(ws, count) for ws in sockets))
        finally:
            for ws in sockets:
                await ws.close()
    return [x for r in results for x in r]


def summary(latencies: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max in ms."""
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": q[49], "p90": q[89], "p99": q[98], "max": max(latencies)}


def main() -> int:
    """Run the collector and agent once, then each client count in turn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=3000, help="readings per client count")
    parser.add_argument("--interval", type=float, default=0.01, help="sensor interval (s)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 5])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pulse-ws-bench-") as tmp:
        work = Path(tmp)
        collector = start_collector(work / "collector")
        config = write_agent_config(
            work / "agent",
            collector.port,
            free_port(),
            sensor={"interval_s": args.interval},
            sender={"interval_s": 1.0, "batch_size": 200},
            logs={"level": "INFO"},
        )
        agent = start_agent(work / "agent", config)
        try:
            print(
                f"# {platform.platform()}, Python {platform.python_version()}, "
                f"sensor every {args.interval * 1000:g} ms, {args.readings} readings each"
            )
            print("| clients | messages | p50 ms | p90 ms | p99 ms | max ms |")
            print("|--:|--:|--:|--:|--:|--:|")
            for clients in args.clients:
                latencies = asyncio.run(measure(agent.port, args.readings, clients))
                s = summary(latencies)
                print(
                    f"| {clients} | {len(latencies)} | {s['p50']:.2f} | {s['p90']:.2f} "
                    f"| {s['p99']:.2f} | {s['max']:.2f} |"
                )
        finally:
            code = agent.stop()
            collector.stop()
        return code


if __name__ == "__main__":
    sys.exit(main())
