"""The hub end to end: ten sources in one agent process, a real collector, the real Mosquitto.

Each source is its own device at the collector, with its own queue file; after the agent
stops, every reading a source stored is at the collector exactly once or still queued.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.config import safe_name
from tests.harness import (
    Proc,
    agent_status,
    collector_readings,
    free_port,
    start_agent,
    start_collector,
    wait_until,
    write_agent_config,
)
from tests.requirements import mosquitto_address

pytestmark = pytest.mark.e2e

HUB = "hub-e2e"
SIMULATED = [
    {"device_id": HUB, "kind": "counter"},
    {"device_id": "counter-2", "kind": "counter"},
    {"device_id": "heart", "kind": "fake_heart_rate", "seed": 3},
    {"device_id": "bulb-power", "kind": "bulb_power", "seed": 4},
    {"device_id": "bulb-state", "kind": "bulb_state", "seed": 4},
    {"device_id": "heater", "kind": "water_heater", "seed": 5},
    {"device_id": "mirror/lux", "kind": "mirror_lux", "seed": 6},
]
MESSAGES = 40
DEADLINE_S = 60.0


def queue_file(agent_dir: Path, device_id: str) -> Path:
    """Where a source's queue lives: the agent's own id in storage.path, the rest beside it."""
    data = agent_dir / "data"
    return (
        data / "queue.db" if device_id == HUB else data / "sources" / f"{safe_name(device_id)}.db"
    )


def queue_state(path: Path) -> tuple[set[int], int]:
    """The seqs still queued in a stopped agent's queue file, and the last seq it handed out."""
    with sqlite3.connect(path) as db:
        queued = {row[0] for row in db.execute("SELECT seq FROM queue")}
        dead = db.execute("SELECT COUNT(*) FROM dead").fetchone()[0]
        (last,) = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
    assert dead == 0, f"{path}: dead letters"
    return queued, int(last)


def assert_exactly_once(collector: Proc, agent_dir: Path, device_id: str) -> list[dict[str, Any]]:
    """Seqs 1..last of a device: each at the collector once, or still queued, none lost."""
    readings = collector_readings(collector, device_id)
    delivered = [int(r["seq"]) for r in readings]
    assert len(delivered) == len(set(delivered)), f"{device_id}: a seq stored twice"
    assert len({r["id"] for r in readings}) == len(readings), f"{device_id}: an id stored twice"
    queued, last = queue_state(queue_file(agent_dir, device_id))
    # a seq may be both stored and queued: a batch in flight when the agent stopped reached
    # the server but not its ack; it goes again at the next start and counts as a duplicate
    assert set(delivered) | queued == set(range(1, last + 1)), f"{device_id}: lost readings"
    return readings


async def publish(host: str, port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client(host, port, identifier=f"test-pub-{uuid.uuid4().hex[:8]}") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def sources_by_id(agent: Proc) -> dict[str, dict[str, Any]]:
    return {s["device_id"]: s for s in agent_status(agent)["sources"]}


def test_ten_sources_each_arrive_exactly_once(tmp_path: Path, procs: list[Proc]) -> None:
    host, port = mosquitto_address()
    prefix = f"pulse-test/{uuid.uuid4().hex[:10]}"
    mqtt = [
        {"device_id": "mqtt-plain", "kind": "mqtt", "topic": f"{prefix}/plain", "unit": "W"},
        {
            "device_id": "mqtt-json",
            "kind": "mqtt",
            "topic": f"{prefix}/json",
            "value_path": "sensors.power",
            "unit": "W",
        },
        {"device_id": "mqtt-temp", "kind": "mqtt", "topic": f"{prefix}/temp", "unit": "°C"},
    ]
    sources = [{**s, "interval_s": 0.1} for s in SIMULATED] + mqtt
    collector = start_collector(tmp_path / "collector")
    procs.append(collector)
    agent_dir = tmp_path / "agent"
    config = write_agent_config(agent_dir, collector.port, free_port(), device_id=HUB)
    raw = json.loads(config.read_text())
    del raw["sensor"]
    raw.update(sources=sources, mqtt={"host": host, "port": port})
    config.write_text(json.dumps(raw))
    agent = start_agent(agent_dir, config)
    procs.append(agent)
    try:
        wait_until(lambda: len(sources_by_id(agent)) == 10, DEADLINE_S)
        wait_until(
            lambda: all(sources_by_id(agent)[s["device_id"]]["state"] == "ok" for s in mqtt),
            DEADLINE_S,
        )
        messages = []
        for n in range(1, MESSAGES + 1):
            messages.append((f"{prefix}/plain", str(n).encode()))
            messages.append((f"{prefix}/json", json.dumps({"sensors": {"power": n}}).encode()))
            messages.append((f"{prefix}/temp", f"{n}.5".encode()))
        # a bad payload is counted on its source and stops nothing
        messages.append((f"{prefix}/plain", b"not a number"))
        asyncio.run(publish(host, port, messages))
        for s in mqtt:
            wait_until(
                lambda s=s: len(collector_readings(collector, s["device_id"])) == MESSAGES,
                DEADLINE_S,
            )
        for s in SIMULATED:
            wait_until(
                lambda s=s: len(collector_readings(collector, s["device_id"])) >= 10, DEADLINE_S
            )
        status = agent_status(agent)
        assert sources_by_id(agent)["mqtt-plain"]["errors_total"] == 1
        assert len(status["sources"]) == 10
    finally:
        assert agent.stop() == 0, agent.output()

    for s in SIMULATED + mqtt:
        readings = assert_exactly_once(collector, agent_dir, str(s["device_id"]))
        assert readings, s["device_id"]
    for device_id in ("mqtt-plain", "mqtt-json"):
        values = [r["message"]["value"] for r in collector_readings(collector, device_id)]
        assert sorted(values) == list(range(1, MESSAGES + 1)), device_id
    temps = sorted(r["message"]["value"] for r in collector_readings(collector, "mqtt-temp"))
    assert temps == [n + 0.5 for n in range(1, MESSAGES + 1)]
    for device_id in (HUB, "counter-2"):
        # a counter's values are its seqs: 1..N with neither gap nor repeat
        readings = collector_readings(collector, device_id)
        assert all(r["message"]["value"] == r["seq"] for r in readings)
    units = {r["message"]["unit"] for r in collector_readings(collector, "heater")}
    assert units == {"°C"}


def test_a_dead_broker_does_not_delay_the_other_sources(tmp_path: Path, procs: list[Proc]) -> None:
    dead_port = free_port()
    collector = start_collector(tmp_path / "collector")
    procs.append(collector)
    agent_dir = tmp_path / "agent"
    config = write_agent_config(agent_dir, collector.port, free_port(), device_id=HUB)
    raw = json.loads(config.read_text())
    del raw["sensor"]
    raw.update(
        mqtt={"host": "127.0.0.1", "port": dead_port},
        sources=[
            {"device_id": "gone", "kind": "mqtt", "topic": "x/y", "unit": "W"},
            {"device_id": HUB, "kind": "counter", "interval_s": 0.1},
        ],
    )
    config.write_text(json.dumps(raw))
    agent = start_agent(agent_dir, config)
    procs.append(agent)
    try:
        wait_until(lambda: len(collector_readings(collector, HUB)) >= 30, DEADLINE_S)
        gone = wait_until(
            lambda: (s := sources_by_id(agent)["gone"])["state"] == "reconnecting" and s,
            DEADLINE_S,
        )
        assert "cannot connect" in gone["detail"]
        assert sources_by_id(agent)[HUB]["state"] == "ok"
    finally:
        assert agent.stop() == 0, agent.output()
    assert_exactly_once(collector, agent_dir, HUB)
