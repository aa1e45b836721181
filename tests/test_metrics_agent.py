"""GET /metrics on the agent's dashboard: the hub's counts at scrape time, no unlock needed."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from agent.app import create_app
from agent.config import LiveConfig, load_config
from agent.keys import HUB
from agent.metrics import METRICS, AgentMetrics, SourceCount
from agent.sources import Sample
from agent.status import State, StatusHub
from collector.app import create_app as create_collector
from collector.config import CollectorConfig
from tests.dashboard_client import app_of, wait_for, write_config
from tests.harness import free_port

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ListSource:
    """Gives its values one per read, then waits (for the cancel at shutdown)."""

    def __init__(self, values: list[float]):
        self._values = list(values)

    async def read(self) -> Sample:
        if not self._values:
            await asyncio.Event().wait()
        return Sample(self._values.pop(0), "bpm")


def parse(text: str) -> Samples:
    """The exposition as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(client: Client) -> Samples:
    """GET /metrics with no session at all."""
    resp = await client.get("/metrics")
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == CONTENT_TYPE
    return parse(await resp.text())


def states(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["state"]: v
        for (name, labels), v in samples.items()
        if name == "pulse_agent_delivery_state"
    }


async def start_agent(aiohttp_client: MakeClient, tmp_path: Path, port: int) -> Client:
    """The agent's app with three good values and one NaN, sending to 127.0.0.1:`port`."""
    config = write_config(tmp_path, server={"port": port})
    app = create_app(LiveConfig(load_config(config)), source=ListSource([61, 62, math.nan, 63]))
    client: Client = await aiohttp_client(app)
    return client


async def test_an_offline_agent_shows_its_queue_and_state(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start_agent(aiohttp_client, tmp_path, free_port())  # nothing listens
    hub = app_of(client)[HUB]
    await wait_for(lambda: hub.status.pending == 3 and hub.status.state is State.OFFLINE)
    await wait_for(lambda: hub.status.invalid_total == 1)
    samples = await scrape(client)
    assert value(samples, "pulse_agent_pending_readings") == 3
    assert value(samples, "pulse_agent_sent_readings_total") == 0
    assert value(samples, "pulse_agent_invalid_values_total") == 1
    assert value(samples, "pulse_agent_dropped_readings") == 0
    assert value(samples, "pulse_agent_dead_letters") == 0
    assert states(samples) == {s.value: float(s is State.OFFLINE) for s in State}
    # never acknowledged: no time to show
    assert not any(name == "pulse_agent_last_send_timestamp_seconds" for name, _ in samples)


async def test_a_delivering_agent_shows_what_was_sent(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    port = free_port()
    collector = create_collector(CollectorConfig(db=str(tmp_path / "collector.db")))
    async with TestServer(collector, host="127.0.0.1", port=port):
        client = await start_agent(aiohttp_client, tmp_path, port)
        hub = app_of(client)[HUB]
        await wait_for(lambda: hub.status.sent_total == 3 and hub.status.invalid_total == 1)
        samples = await scrape(client)
    assert value(samples, "pulse_agent_sent_readings_total") == 3
    assert value(samples, "pulse_agent_pending_readings") == 0
    assert value(samples, "pulse_agent_delivery_state", state="sending") == 1
    assert hub.status.last_send_at is not None
    last_send = value(samples, "pulse_agent_last_send_timestamp_seconds")
    assert last_send == pytest.approx(hub.status.last_send_at)


async def test_per_source_counts_are_read_at_each_scrape(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start_agent(aiohttp_client, tmp_path, free_port())
    counts = [SourceCount("kitchen", 5, 1)]
    app_of(client)[METRICS].sources = lambda: counts
    samples = await scrape(client)
    assert value(samples, "pulse_agent_source_readings_total", device_id="kitchen") == 5
    assert value(samples, "pulse_agent_source_errors_total", device_id="kitchen") == 1
    counts.append(SourceCount("hall", 2, 0))
    samples = await scrape(client)
    assert value(samples, "pulse_agent_source_readings_total", device_id="hall") == 2


async def test_no_unlock_is_needed_but_a_foreign_host_is_refused(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await start_agent(aiohttp_client, tmp_path, free_port())
    # no session cookie, no token: like /api/status, a read
    assert (await client.get("/metrics")).status == 200
    for host in (f"evil.example:{client.port}", "localhost.evil.example", "127.0.0.1:1"):
        resp = await client.get("/metrics", headers={"Host": host})
        assert resp.status == 403, host
        assert "pulse_agent" not in await resp.text()


def test_send_durations_fill_the_histogram() -> None:
    hub = StatusHub()
    metrics = AgentMetrics(hub)
    for seconds in (0.02, 0.3, 0.4, 12.0):
        hub.observe_send(seconds)
    samples = parse(metrics.render().decode())
    name = "pulse_agent_send_duration_seconds"
    assert value(samples, f"{name}_count") == 4
    assert value(samples, f"{name}_sum") == pytest.approx(12.72)
    assert value(samples, f"{name}_bucket", le="0.025") == 1
    assert value(samples, f"{name}_bucket", le="0.5") == 3
    assert value(samples, f"{name}_bucket", le="10.0") == 3
    assert value(samples, f"{name}_bucket", le="+Inf") == 4


def test_two_agents_in_one_process_keep_their_own_registries() -> None:
    first, second = StatusHub(), StatusHub()
    first_metrics, second_metrics = AgentMetrics(first), AgentMetrics(second)
    first.observe_send(0.1)
    count = "pulse_agent_send_duration_seconds_count"
    assert value(parse(first_metrics.render().decode()), count) == 1
    assert value(parse(second_metrics.render().decode()), count) == 0
