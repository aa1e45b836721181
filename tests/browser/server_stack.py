"""A collector for the server UI's browser tests: SQLite or PostgreSQL, a config, seeded readings.

Shared by the devices pages' tests and the alerts pages' tests. A test module makes its own
fixture from `open_server` (parametrized over `BACKENDS`), posts readings over HTTP as an
agent would (`post`, or `seed` for thousands of batches at once), and points the browser at
`server.url`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import math
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.harness import Proc, start_collector, wait_until
from tests.requirements import postgres_schema_url

BACKENDS = ("sqlite", "postgres")
UTC = dt.UTC
T = TypeVar("T")

Points = Sequence[tuple[dt.datetime, float]]


@dataclass(frozen=True)
class Batch:
    """Readings of one device's stream, oldest first, with seqs from `first_seq` on."""

    device_id: str
    points: Points
    stream: str = "s1"
    first_seq: int = 1
    unit: str = "bpm"

    def body(self) -> bytes:
        """The POST /api/v1/readings body, as the agent sends it."""
        readings = [
            {
                "id": str(uuid.uuid4()),
                "seq": seq,
                "datetime": when.isoformat(),
                "message": {"value": value, "unit": self.unit},
            }
            for seq, (when, value) in enumerate(self.points, start=self.first_seq)
        ]
        return json.dumps(
            {"device_id": self.device_id, "stream": self.stream, "readings": readings}
        ).encode()


@dataclass
class Server:
    """A running collector and how it was started."""

    proc: Proc
    backend: str
    config_path: Path

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return self.proc.url

    def post(self, batch: Batch, hub: str | None = None) -> dict[str, Any]:
        """POST one batch (relayed by `hub`, if given) and return the ack; fails the test
        unless every reading was new."""
        headers = {"Content-Type": "application/json"}
        if hub is not None:
            headers["Pulse-Hub"] = hub
        request = urllib.request.Request(
            f"{self.url}/api/v1/readings", data=batch.body(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            ack: dict[str, Any] = json.loads(resp.read())
        assert ack["accepted"] == len(batch.points), ack
        return ack

    def get(self, path: str) -> Any:
        """GET a JSON path (open mode, or with no auth needed) and decode it."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
            return json.loads(resp.read())

    def seed(self, batches: Iterable[Batch], concurrency: int = 32) -> float:
        """POST many batches over concurrent connections; return the seconds it took."""
        started = time.monotonic()
        # a thread of its own: Playwright's sync API keeps an event loop on this one
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _post_all(self.url, list(batches), concurrency)).result()
        return time.monotonic() - started

    def create_user(self, name: str, password: str) -> None:
        """`python -m collector create-user NAME --password-stdin` on this server's database."""
        done = subprocess.run(
            [sys.executable, "-m", "collector", "create-user", name, "--password-stdin"]
            + ["--config", str(self.config_path)],
            input=f"{password}\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # the server looks for users at most once a second: wait until it has seen this one
        wait_until(lambda: not self.get("/api/v1/session")["open_mode"], timeout=10)

    def output(self) -> str:
        """The collector's log so far."""
        return self.proc.output()


async def _post_all(url: str, batches: list[Batch], concurrency: int) -> None:
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                async with session.post(
                    f"{url}/api/v1/readings",
                    data=batch.body(),
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    ack = await resp.json()
                    assert resp.status == 200, ack
                    assert ack["accepted"] == len(batch.points), ack

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def heart_rate(
    end: dt.datetime, count: int, step_s: float = 10.0, seed: int = 1, base: float = 72.0
) -> list[tuple[dt.datetime, float]]:
    """`count` plausible bpm readings every `step_s` seconds, the last at `end`."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        when = end - dt.timedelta(seconds=step_s * (count - 1 - i))
        hours = when.timestamp() / 3600 + seed
        # a swell over hours, another over minutes, and noise for the min-max band to show
        value = (
            base
            + 10 * math.sin(hours * 2 * math.pi / 7)
            + 5 * math.sin(hours * 2 * math.pi * 3.3)
            + rng.gauss(0, 2.5)
        )
        out.append((when, round(min(max(value, 35.0), 200.0), 1)))
    return out


def now() -> dt.datetime:
    """The current time in UTC, to the millisecond (as the store keeps it)."""
    moment = dt.datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@contextlib.contextmanager
def _in_thread(context: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """Enter and leave `context` on a worker thread: it may call asyncio.run(), which
    Playwright's sync API forbids on the main thread (it keeps an event loop there)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        value = pool.submit(context.__enter__).result()
        try:
            yield value
        finally:
            pool.submit(context.__exit__, None, None, None).result()


@contextlib.contextmanager
def open_server(
    workdir: Path, backend: str = "sqlite", config: dict[str, Any] | None = None
) -> Iterator[Server]:
    """A collector on loopback with `config` (merged into a config file) on `backend`.

    "postgres" gets a fresh schema on the test server (skipped, or failed under
    PULSE_STRICT=1, when it is down); "sqlite" a file in `workdir`.
    """
    with contextlib.ExitStack() as stack:
        settings: dict[str, Any] = {"db": str(workdir / "collector.db"), **(config or {})}
        if backend == "postgres":
            settings["database_url"] = stack.enter_context(_in_thread(postgres_schema_url("ui")))
        elif backend != "sqlite":
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "collector.json"
        path.write_text(json.dumps(settings, indent=2))
        proc = start_collector(workdir, None, "--config", str(path))
        try:
            yield Server(proc, backend, path)
        finally:
            proc.stop()
