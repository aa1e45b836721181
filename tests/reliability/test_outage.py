"""A long outage: the collector is down while 100,000 readings pile up, then catch-up."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from agent.store import open_store
from tests.harness import wait_until
from tests.reliability.figures import Scenario, scaled
from tests.reliability.pipeline import Pipeline, drain_and_check

BACKLOG = 100_000
CHUNK = 10_000


def prefill(queue: Path, count: int) -> None:
    """Queue `count` readings with the agent's own Store, as an outage of hours would."""

    async def fill() -> None:
        queue.parent.mkdir(parents=True, exist_ok=True)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=count * 0.01)
        async with open_store(queue, 10**9) as store:
            for first in range(0, count, CHUNK):
                await store.add_many(
                    (start + dt.timedelta(seconds=i * 0.01), 60 + i % 40, "bpm")
                    for i in range(first, min(count, first + CHUNK))
                )

    asyncio.run(fill())


def test_long_outage_then_catch_up(tmp_path: Path, figures: Scenario) -> None:
    """collector down while 100,000 readings pile up; catch-up drains, cadence resumes"""
    pipe = Pipeline(tmp_path)
    pipe.settings["sender"]["catchup_batch_size"] = 1000
    backlog = scaled(BACKLOG)
    prefill(pipe.queue_path, backlog)
    batch = pipe.settings["sender"]["batch_size"]
    try:
        pipe.start_agent()
        wait_until(lambda: pipe.status()["state"] == "offline")
        # the sensor goes on during the outage
        wait_until(lambda: pipe.status()["pending"] >= backlog + 100)
        figures.faults["long outage (collector down)"] += 1
        pipe.start_collector()
        started = time.monotonic()
        wait_until(lambda: pipe.status()["pending"] < batch, 120, 0.02)
        took = time.monotonic() - started
        figures.recovered(took)
        figures.notes["backlog"] = backlog
        figures.notes["catch_up_readings_per_s"] = round(backlog / took)
        # normal cadence again: small batches as readings come, the backlog stays away
        wait_until(lambda: pipe.status()["state"] == "sending")
        sent = pipe.status()["sent_total"]
        for _ in range(10):
            time.sleep(0.1)  # sample the cadence over one second
            assert pipe.status()["pending"] < 3 * batch
        assert pipe.status()["sent_total"] >= sent + 50
        log = pipe.agent_log()
        assert "catching up" in log
        assert "backlog drained" in log
        drain_and_check(pipe, figures)
    finally:
        pipe.stop()
