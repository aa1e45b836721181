"""End to end: a seq the collector already holds under another id becomes a dead letter.

This is what a rolled-back commit, or a queue restored from an old copy, leads to: the
agent's reading and the collector's stored one share (device, stream, seq) but not the id.
The collector must refuse it as a conflict, and the agent must keep it, visibly, instead
of deleting it as if it had been delivered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.request
from pathlib import Path

import pytest

from agent.store import open_store
from tests.harness import (
    agent_status,
    collector_readings,
    free_port,
    get_json,
    start_agent,
    start_collector,
    wait_until,
    write_agent_config,
)

pytestmark = pytest.mark.e2e
DEVICE = "test-device"
SQUATTER = "01900000-0000-7000-8000-00000000abcd"


async def _stream_of_new_queue(path: Path) -> str:
    async with open_store(path, 1000) as store:
        return store.stream_id


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        answer: dict[str, object] = json.loads(resp.read())
    return answer


def test_a_seq_conflict_is_kept_as_a_dead_letter_with_both_ids(tmp_path: Path) -> None:
    agent_dir = tmp_path / "agent"
    stream = asyncio.run(_stream_of_new_queue(agent_dir / "data" / "queue.db"))
    collector = start_collector(tmp_path / "collector")
    try:
        # another reading already sits at seq 2 of the agent's stream
        squatter = {
            "id": SQUATTER,
            "seq": 2,
            "datetime": dt.datetime.now(dt.UTC).isoformat(),
            "message": {"value": 60, "unit": "bpm"},
        }
        ack = _post(
            f"{collector.url}/api/v1/readings",
            {"device_id": DEVICE, "stream": stream, "readings": [squatter]},
        )
        assert ack["accepted"] == 1
        config = write_agent_config(agent_dir, collector.port, free_port())
        agent = start_agent(agent_dir, config)
        try:
            wait_until(lambda: agent_status(agent)["dead_total"] == 1)
            dead = get_json(f"{agent.url}/api/dead-letters")["dead"]
            assert [d["seq"] for d in dead] == [2]
            assert "seq conflict" in dead[0]["error"]
            assert SQUATTER in dead[0]["error"]
            assert dead[0]["id"] in dead[0]["error"]
            wait_until(lambda: agent_status(agent)["sent_total"] >= 5)
        finally:
            assert agent.stop() == 0
        stored = {r["seq"]: r["id"] for r in collector_readings(collector, DEVICE)}
        assert stored[2] == SQUATTER  # the stored reading is never overwritten
        assert stored[1] != SQUATTER
    finally:
        collector.stop()
