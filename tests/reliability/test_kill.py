"""kill -9 torture: SIGKILL the agent, then the collector, at random moments, and restart."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from tests.harness import get_json
from tests.reliability.figures import Scenario, scaled
from tests.reliability.pipeline import Pipeline, drain_and_check, kill9, wait_drained

KILLS = 100
# a share of the agent's kills lands while it starts up: opening the queue, creating it
STARTUP_KILL_SHARE = 0.15


def test_kill_9_agent_at_random_moments(
    tmp_path: Path, figures: Scenario, collector_db: str | None
) -> None:
    """kill -9 of the agent while it reads and sends, each kill followed by a restart"""
    rng = random.Random(1)
    pipe = Pipeline(tmp_path, collector_db)
    pipe.start_collector()
    try:
        for _ in range(scaled(KILLS)):
            if rng.random() < STARTUP_KILL_SHARE:
                agent = pipe.spawn_agent()
                time.sleep(rng.uniform(0.0, 0.3))
                figures.notes["kills_during_startup"] = (
                    figures.notes.get("kills_during_startup", 0) + 1
                )
            else:
                agent = pipe.start_agent()
                time.sleep(rng.uniform(0.0, 0.3))
            assert kill9(agent), f"the agent ended before the kill:\n{agent.output()[-3000:]}"
            figures.kills["agent"] += 1
        delivery = drain_and_check(pipe, figures)
        assert "moved aside" not in pipe.agent_log(), "a kill made a queue file look unusable"
        # the kills landed while readings flowed, not on an idle agent
        assert delivery.highest_seq > scaled(KILLS) * 5
    finally:
        pipe.stop()


def test_kill_9_collector_at_random_moments(
    tmp_path: Path, figures: Scenario, collector_db: str | None
) -> None:
    """kill -9 of the collector while batches arrive, each kill followed by a restart"""
    rng = random.Random(2)
    pipe = Pipeline(tmp_path, collector_db)
    pipe.settings["sensor"]["interval_s"] = 0.005
    pipe.settings["sender"]["max_backoff_s"] = 0.2
    pipe.start_collector()
    pipe.start_agent()
    try:
        for _ in range(scaled(KILLS)):
            time.sleep(rng.uniform(0.0, 0.3))
            assert pipe.collector is not None
            assert kill9(pipe.collector), pipe.collector.output()[-3000:]
            figures.kills["collector"] += 1
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0.0, 0.2))  # stay down for a while
            pipe.start_collector()
        figures.recovered(wait_drained(pipe, below=pipe.settings["sender"]["batch_size"]))
        assert pipe.agent is not None
        assert pipe.agent.popen.poll() is None
        devices = get_json(f"{pipe.collector.url}/api/v1/devices")
        assert devices, "nothing arrived during the torture"
        drain_and_check(pipe, figures)
        assert pipe.collector is not None
        pipe.collector.stop()
        if collector_db is None:
            with sqlite3.connect(pipe.collector_dir / "collector.db") as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            db.close()
    finally:
        pipe.stop()
