"""GET /api/v1/overview and GET /api/v1/devices/{device_id} over HTTP, on SQLite and PostgreSQL.

The collector runs with a settable clock, so "live", the sparkline's hour and the last five
minutes are known to the test; every figure is worked out again here from what was posted.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from collector.app import create_app
from collector.config import CollectorConfig
from tests.test_collector_postgres import postgres_schema

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    """The collector's clock, set by the test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres"])
async def client(
    request: pytest.FixtureRequest, aiohttp_client: MakeClient, tmp_path: Path, clock: Clock
) -> AsyncIterator[Client]:
    """The collector, in process, on each backend."""
    db = str(tmp_path / "collector.db")
    if request.param == "sqlite":
        yield await aiohttp_client(create_app(CollectorConfig(db=db), clock=clock))
        return
    async with postgres_schema() as url:
        config = CollectorConfig(db=db, database_url=url)
        yield await aiohttp_client(create_app(config, clock=clock))


def reading(seq: int, when: dt.datetime, value: float) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "seq": seq,
        "datetime": when.isoformat(),
        "message": {"value": value, "unit": "bpm"},
    }


async def post(
    client: Client, device: str, readings: list[dict[str, Any]], stream: str = "s1"
) -> None:
    body = {"device_id": device, "stream": stream, "readings": readings}
    response = await client.post("/api/v1/readings", json=body)
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"] == len(readings)


async def get(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json()


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


async def test_overview_figures_reading_by_reading(client: Client, clock: Clock) -> None:
    rng = random.Random(11)
    posted: list[tuple[dt.datetime, float]] = []
    for _ in range(400):
        # the last 70 minutes, a few minutes ahead too; values to a hundredth
        when = NOW - dt.timedelta(seconds=rng.uniform(-120, 4200))
        posted.append((when, round(rng.uniform(50, 150), 2)))
    # seqs 1..400 with 3 left out: 3 missing
    readings = [reading(seq, w, v) for seq, (w, v) in enumerate(posted, start=1)]
    kept = [r for r in readings if r["seq"] not in (5, 6, 200)]
    clock.now = NOW - dt.timedelta(seconds=130)
    await post(client, "heart", kept)
    clock.now = NOW - dt.timedelta(seconds=10)
    await post(client, "quiet-but-live", [reading(1, NOW - dt.timedelta(hours=3), 70.0)])
    clock.now = NOW
    got = await get(client, "/api/v1/overview")
    assert (got["total"], got["offset"], got["limit"]) == (2, 0, 50)
    assert at(got["now"]) == NOW
    heart, quiet = got["devices"]
    assert heart["device_id"] == "heart"
    assert (heart["count"], heart["missing"], heart["open_alerts"]) == (397, 3, 0)
    assert at(heart["last_seen"]) == NOW - dt.timedelta(seconds=130)
    assert heart["live"] is False, "received 130 s ago: not live"
    assert quiet["live"] is True
    assert (quiet["spark"], quiet["readings_per_min"]) == ([], 0.0)

    stored = [(at(r["datetime"]), r["message"]["value"]) for r in kept]
    start = NOW - dt.timedelta(hours=1)
    recent = [w for w, _ in stored if NOW - dt.timedelta(minutes=5) <= w < NOW]
    assert heart["readings_per_min"] == pytest.approx(len(recent) / 5)
    buckets: dict[dt.datetime, list[float]] = {}
    for when, value in stored:
        if start <= when < NOW:
            buckets.setdefault(
                start + (when - start) // dt.timedelta(minutes=2) * dt.timedelta(minutes=2), []
            ).append(value)
    assert len(buckets) <= 30
    assert [at(p["t"]) for p in heart["spark"]] == sorted(buckets)
    for point in heart["spark"]:
        values = buckets[at(point["t"])]
        assert (point["min"], point["max"], point["count"]) == (
            min(values),
            max(values),
            len(values),
        )
        assert point["avg"] == pytest.approx(math.fsum(values) / len(values), rel=1e-12)


async def test_overview_pages_and_searches(client: Client) -> None:
    names = [f"sensor-{i:03}" for i in range(120)] + ["Kitchen_1", "Kitchen%2", "kitchenX3"]
    for name in names:
        await post(client, name, [reading(1, NOW - dt.timedelta(minutes=1), 70.0)])
    ordered = sorted(names)
    first = await get(client, "/api/v1/overview?limit=200")
    assert first["total"] == 123
    assert [d["device_id"] for d in first["devices"]] == ordered
    middle = await get(client, "/api/v1/overview?offset=60&limit=25")
    assert [d["device_id"] for d in middle["devices"]] == ordered[60:85]
    past = await get(client, "/api/v1/overview?offset=500")
    assert (past["total"], past["devices"]) == (123, [])
    found = await get(client, "/api/v1/overview?q=KITCHEN")
    assert [d["device_id"] for d in found["devices"]] == ["Kitchen%2", "Kitchen_1", "kitchenX3"]
    found = await get(client, "/api/v1/overview?q=n_")
    assert [d["device_id"] for d in found["devices"]] == ["Kitchen_1"]
    found = await get(client, "/api/v1/overview?q=%25")
    assert [d["device_id"] for d in found["devices"]] == ["Kitchen%2"]
    found = await get(client, "/api/v1/overview?q=sensor-11&limit=3&offset=2")
    assert found["total"] == 10
    assert [d["device_id"] for d in found["devices"]] == ["sensor-112", "sensor-113", "sensor-114"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("q=", "q"),
        ("q=" + "x" * 129, "q"),
        ("page=2", "page"),
    ],
)
async def test_bad_overview_parameters_are_named(client: Client, query: str, named: str) -> None:
    body = await get(client, f"/api/v1/overview?{query}", 400)
    assert body["error"].startswith(f"query parameter {named}"), body


async def test_device_detail_with_streams_and_gaps(client: Client, clock: Clock) -> None:
    when = NOW - dt.timedelta(minutes=1)
    seqs = [3, 4, 9, *range(20, 30)] + list(range(31, 400, 2))
    await post(client, "dev", [reading(s, when, 70.0) for s in seqs])
    await post(client, "dev", [reading(s, when, 71.0) for s in (1, 2, 3)], stream="s2")
    clock.now = NOW + dt.timedelta(seconds=100)
    got = await get(client, "/api/v1/devices/dev")
    assert (got["device_id"], got["count"], got["live"]) == ("dev", len(seqs) + 3, True)
    assert at(got["last_seen"]) == NOW
    s1, s2 = got["streams"]
    assert (s1["stream"], s1["first_seq"], s1["last_seq"], s1["count"]) == ("s1", 3, 399, len(seqs))
    assert s1["missing"] == 399 - len(seqs)
    # the odd seqs from 31 leave the even ones between them missing; only the first 100 listed
    expected = [[1, 2], [5, 8], [10, 19], [30, 30]] + [[n, n] for n in range(32, 400, 2)]
    assert s1["gaps"] == expected[:100]
    assert s2 == {
        "stream": "s2",
        "first_seq": 1,
        "last_seq": 3,
        "count": 3,
        "missing": 0,
        "gaps": [],
    }
    clock.now = NOW + dt.timedelta(seconds=121)
    assert (await get(client, "/api/v1/devices/dev"))["live"] is False


async def test_device_detail_refuses_unknown_and_invalid_ids(client: Client) -> None:
    body = await get(client, "/api/v1/devices/nobody", 404)
    assert "nobody" in body["error"]
    body = await get(client, f"/api/v1/devices/{'x' * 129}", 400)
    assert body["error"].startswith("path parameter device_id"), body


async def test_missing_seqs_near_the_limit_add_up_without_overflow(client: Client) -> None:
    """Two streams whose last seq is near 2**63: their sum is beyond any SQL integer."""
    top = 2**63 - 1
    when = NOW - dt.timedelta(minutes=1)
    await post(client, "far", [reading(top, when, 70.0)], stream="a")
    await post(client, "far", [reading(top - 1, when, 70.0)], stream="b")
    (device,) = (await get(client, "/api/v1/overview"))["devices"]
    assert (device["count"], device["missing"]) == (2, (top - 1) + (top - 2))
    detail = await get(client, "/api/v1/devices/far")
    assert [s["gaps"] for s in detail["streams"]] == [[[1, top - 1]], [[1, top - 2]]]
