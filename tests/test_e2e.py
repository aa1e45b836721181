"""End to end: a real collector process and a real agent process on loopback."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

import pulse_wire as wire
from tests.faultproxy import Fault, FaultProxy
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

pytestmark = pytest.mark.e2e
DEVICE = "test-device"


def queued_seqs(agent_dir: Path) -> set[int]:
    """The seqs still in the agent's queue file (read after the agent stopped)."""
    with sqlite3.connect(agent_dir / "data" / "queue.db") as db:
        return {row[0] for row in db.execute("SELECT seq FROM queue")}


def assert_exactly_once(collector: Proc, agent_dir: Path) -> list[dict[str, Any]]:
    """Every seq from 1 to the newest is at the collector once, or still queued; none twice."""
    readings = collector_readings(collector, DEVICE)
    delivered = [int(r["seq"]) for r in readings]
    ids = [r["id"] for r in readings]
    assert len(delivered) == len(set(delivered)), "a seq was stored twice"
    assert len(ids) == len(set(ids)), "an id was stored twice"
    queued = queued_seqs(agent_dir)
    assert not queued & set(delivered), "a reading is both delivered and still queued"
    newest = max(set(delivered) | queued)
    missing = set(range(1, newest + 1)) - set(delivered) - queued
    assert not missing, f"lost readings: {sorted(missing)[:20]}"
    return readings


def wait_delivering_again(agent: Proc, timeout: float = 20.0) -> None:
    """Wait until the agent sends again and its backlog is below one batch."""
    wait_until(lambda: agent_status(agent)["state"] in {"sending", "catching_up"}, timeout)
    wait_until(lambda: agent_status(agent)["pending"] < 10, timeout)


def delivered_count(collector: Proc) -> int:
    return len(collector_readings(collector, DEVICE))


def test_readings_arrive_in_wire_format(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "collector")
    config = write_agent_config(tmp_path / "agent", collector.port, free_port())
    agent = start_agent(tmp_path / "agent", config)
    try:
        wait_until(lambda: delivered_count(collector) >= 10)
        assert agent_status(agent)["state"] in {"sending", "catching_up"}
    finally:
        assert agent.stop() == 0
    try:
        readings = assert_exactly_once(collector, tmp_path / "agent")
    finally:
        collector.stop()
    for raw in readings:
        body = {k: v for k, v in raw.items() if k != "stream"}
        reading = msgspec.convert(body, wire.Reading, strict=False)
        assert reading.id.version == 7
        assert reading.message.unit == "bpm"
        assert 40 <= reading.message.value <= 200
        assert reading.datetime.tzinfo is not None
        assert abs(reading.datetime - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    hour = dt.datetime.now().strftime("%Y-%m-%d_%H")
    log = tmp_path / "agent" / "logs" / f"agent-{hour}.log"
    assert "using config" in log.read_text()


def test_outage_then_everything_arrives_exactly_once(tmp_path: Path) -> None:
    port = free_port()
    collector = start_collector(tmp_path / "collector", port)
    config = write_agent_config(tmp_path / "agent", port, free_port())
    agent = start_agent(tmp_path / "agent", config)
    try:
        wait_until(lambda: delivered_count(collector) >= 5)
        assert collector.stop() == 0
        wait_until(lambda: agent_status(agent)["state"] == "offline")
        wait_until(lambda: agent_status(agent)["pending"] >= 30)
        collector = start_collector(tmp_path / "collector", port)
        wait_delivering_again(agent, timeout=30)
    finally:
        assert agent.stop() == 0
    try:
        assert_exactly_once(collector, tmp_path / "agent")
    finally:
        collector.stop()
    log = "".join(p.read_text() for p in (tmp_path / "agent" / "logs").glob("agent-*.log"))
    assert "failing" in log
    assert "reachable again" in log


def test_kill_9_agent_then_restart_loses_nothing(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "collector")
    config = write_agent_config(tmp_path / "agent", collector.port, free_port())
    try:
        for _ in range(3):
            agent = start_agent(tmp_path / "agent", config)
            seen = delivered_count(collector)
            wait_until(lambda seen=seen: delivered_count(collector) >= seen + 5)
            time.sleep(0.13)  # land the kill at another point of the cycle each round
            agent.kill()
        agent = start_agent(tmp_path / "agent", config)
        seen = delivered_count(collector)
        wait_until(lambda: delivered_count(collector) >= seen + 5)
        assert agent.stop() == 0
        assert_exactly_once(collector, tmp_path / "agent")
    finally:
        collector.stop()


def test_lost_ack_stores_no_duplicate(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "collector")
    with FaultProxy(collector.port) as proxy:
        config = write_agent_config(tmp_path / "agent", proxy.port, free_port())
        agent = start_agent(tmp_path / "agent", config)
        try:
            wait_until(lambda: delivered_count(collector) >= 5)
            proxy.fault = Fault.LOSE_ACK
            before = delivered_count(collector)
            # the collector commits while the agent never hears the ack
            wait_until(lambda: proxy.counts[Fault.LOSE_ACK] >= 3)
            assert delivered_count(collector) > before
            proxy.fault = Fault.PASS
            wait_delivering_again(agent)
        finally:
            assert agent.stop() == 0
    try:
        assert_exactly_once(collector, tmp_path / "agent")
    finally:
        collector.stop()
