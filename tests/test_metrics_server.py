"""GET /metrics on the collector: real batches into a real SQLite file, the text parsed back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from collector.alerts.rules import Rule
from collector.app import create_app
from collector.config import AlertsConfig, CollectorConfig
from tests.conftest import reading

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
DEVICE = "ward-1"
STREAM = "s1"
READ_TOKEN = "read-secret-1"
DEVICE_TOKEN = "device-secret-1"


def body(readings: list[dict[str, Any]], device: str = DEVICE) -> dict[str, Any]:
    return {"device_id": device, "stream": STREAM, "readings": readings}


def config_at(tmp_path: Path, name: str = "collector.db", **fields: Any) -> CollectorConfig:
    return CollectorConfig(db=str(tmp_path / name), **fields)


async def scrape(client: Client, **headers: str) -> Samples:
    """GET /metrics, checked for the Prometheus content type, parsed to {(name, labels): v}."""
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    found: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def post_ok(client: Client, readings: list[dict[str, Any]]) -> dict[str, Any]:
    resp = await client.post("/api/v1/readings", json=body(readings))
    assert resp.status == 200, await resp.text()
    ack: dict[str, Any] = await resp.json()
    return ack


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await aiohttp_client(create_app(config_at(tmp_path)))


async def test_batches_and_readings_are_counted_by_outcome(client: Client) -> None:
    sent = [reading(1), reading(2), reading(3)]
    assert (await post_ok(client, sent))["accepted"] == 3
    assert (await post_ok(client, sent))["duplicates"] == 3  # the resend
    # seq 1 under another id (a conflict), a new one, and an implausible value
    mixed = [reading(1, id_=77), reading(4), reading(5, value=0)]
    ack = await post_ok(client, mixed)
    assert (ack["accepted"], ack["duplicates"], len(ack["rejected"])) == (1, 0, 2)
    samples = await scrape(client)
    assert value(samples, "pulse_collector_batches_total") == 3
    readings = "pulse_collector_readings_total"
    assert value(samples, readings, outcome="accepted") == 4
    assert value(samples, readings, outcome="duplicate") == 3
    assert value(samples, readings, outcome="conflict") == 1
    assert value(samples, readings, outcome="rejected") == 1


async def test_a_refused_batch_is_not_counted_as_a_batch(client: Client) -> None:
    resp = await client.post("/api/v1/readings", json={"device_id": DEVICE})
    assert resp.status == 400
    samples = await scrape(client)
    assert value(samples, "pulse_collector_batches_total") == 0
    assert value(samples, "pulse_collector_readings_total", outcome="accepted") == 0
    requests = "pulse_collector_http_requests_total"
    assert value(samples, requests, method="POST", route="/api/v1/readings", status="400") == 1


async def test_requests_are_counted_by_route_pattern_never_by_raw_path(client: Client) -> None:
    await post_ok(client, [reading(1)])
    for device in ("ward-1", "no-such-device", "another"):
        await client.get(f"/api/v1/devices/{device}")
    assert (await client.get("/no/such/path")).status == 404
    assert (await client.get("/also/missing")).status == 404
    assert (await client.delete("/api/v1/readings")).status == 405
    assert (await client.request("PROPFIND", "/healthz")).status == 405
    await scrape(client)
    samples = await scrape(client)
    requests = "pulse_collector_http_requests_total"
    assert value(samples, requests, method="POST", route="/api/v1/readings", status="200") == 1
    device_route = "/api/v1/devices/{device_id}"
    assert value(samples, requests, method="GET", route=device_route, status="200") == 1
    assert value(samples, requests, method="GET", route=device_route, status="404") == 2
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 2
    assert value(samples, requests, method="DELETE", route="unmatched", status="405") == 1
    assert value(samples, requests, method="other", route="unmatched", status="405") == 1
    # the first scrape, counted once it was answered
    assert value(samples, requests, method="GET", route="/metrics", status="200") == 1
    routes = {dict(labels)["route"] for name, labels in samples if name == requests}
    assert routes == {"/api/v1/readings", device_route, "unmatched", "/metrics"}


async def test_two_apps_in_one_process_count_apart(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    first = await aiohttp_client(create_app(config_at(tmp_path, "a.db")))
    second = await aiohttp_client(create_app(config_at(tmp_path, "b.db")))
    await post_ok(first, [reading(1), reading(2)])
    assert value(await scrape(first), "pulse_collector_batches_total") == 1
    assert value(await scrape(second), "pulse_collector_batches_total") == 0
    accepted = value(await scrape(second), "pulse_collector_readings_total", outcome="accepted")
    assert accepted == 0


async def alert_gauge(client: Client, want: dict[str, float], within_s: float = 20.0) -> Samples:
    """Scrape until the alert gauge shows `want` (state -> count); fail after `within_s`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        samples = await scrape(client)
        shown = {
            dict(labels)["state"]: v
            for (name, labels), v in samples.items()
            if name == "pulse_collector_alerts"
        }
        if shown == want:
            return samples
        assert asyncio.get_running_loop().time() < deadline, shown
        await asyncio.sleep(0.05)


async def test_alert_states_are_read_from_the_database_at_each_scrape(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    rules = [
        Rule(name="High", when="above", threshold=120),
        Rule(name="High for an hour", when="above", threshold=120, for_s=3600),
    ]
    alerts = AlertsConfig(rules=rules, interval_s=0.1)
    client = await aiohttp_client(create_app(config_at(tmp_path, alerts=alerts)))
    await alert_gauge(client, {"pending": 0, "firing": 0, "resolved": 0})
    await post_ok(client, [reading(1, value=130)])
    await alert_gauge(client, {"pending": 1, "firing": 1, "resolved": 0})
    await post_ok(client, [reading(2, value=100)])
    # the firing one resolves; the pending one is dropped, never having fired
    await alert_gauge(client, {"pending": 0, "firing": 0, "resolved": 1})


async def test_metrics_is_a_read_under_the_access_rules(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    config = config_at(tmp_path, read_tokens=[READ_TOKEN], tokens={DEVICE: DEVICE_TOKEN})
    client = await aiohttp_client(create_app(config))
    samples = await scrape(client, Authorization=f"Bearer {READ_TOKEN}")
    assert value(samples, "pulse_collector_batches_total") == 0
    # a device token posts batches, it does not read
    device = await client.get("/metrics", headers={"Authorization": f"Bearer {DEVICE_TOKEN}"})
    assert device.status == 401
    # nothing at all: refused (303 to /login today, as for a page; 401 once
    # collector.accounts.access.is_page leaves /metrics out)
    anonymous = await client.get("/metrics", allow_redirects=False)
    assert anonymous.status == 401
    assert "pulse_collector" not in await anonymous.text()
