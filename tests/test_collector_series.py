"""GET /api/v1/series and ReadingStore.series() on SQLite and PostgreSQL, against Python.

Every aggregate is checked against one computed here, in Python, from the very readings the
test stored: bucket by bucket, with the width worked out again from the contract.
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

import pulse_wire as wire
from collector.app import create_app
from collector.config import CollectorConfig
from collector.store import ReadingStore, SeriesPoint
from collector.store_sqlite import SqliteStore
from tests.test_collector_postgres import postgres_schema

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
URL = "/api/v1/series"
UTC = dt.UTC
DEVICE = "dev-a"
OTHER = "dev-b"
# well in the past: the store refuses readings more than 24 h ahead of its clock
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
# a whole second, so that its text has no fraction: `...00Z` sorts after `...00.5Z`
SECOND = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

Stored = list[tuple[dt.datetime, float]]


def _batch(device: str, stream: str, stored: Stored, first_seq: int = 1) -> wire.Batch:
    readings = [
        wire.Reading(uuid.uuid4(), seq, when, wire.Message(value))
        for seq, (when, value) in enumerate(stored, start=first_seq)
    ]
    return wire.Batch(device, stream, readings)


async def put(store: ReadingStore, device: str, stream: str, stored: Stored) -> None:
    """Store readings (sorted, seq from 1) and check that every one was accepted."""
    ack = await store.store_batch(_batch(device, stream, sorted(stored)))
    assert ack.accepted == len(stored), ack


def expected(
    stored: Stored, start: dt.datetime, end: dt.datetime, points: int
) -> dict[dt.datetime, tuple[float, float, float, int]]:
    """The contract, worked out in Python: {bucket start: (min, max, avg, count)}."""
    span_ms = (end - start) / dt.timedelta(milliseconds=1)
    width = dt.timedelta(milliseconds=max(1, math.ceil(span_ms / points)))
    buckets: dict[dt.datetime, list[float]] = {}
    for when, value in stored:
        if start <= when < end:
            buckets.setdefault(start + (when - start) // width * width, []).append(value)
    return {
        t: (min(vs), max(vs), math.fsum(vs) / len(vs), len(vs)) for t, vs in sorted(buckets.items())
    }


def as_dict(points: list[SeriesPoint]) -> dict[dt.datetime, tuple[float, float, float, int]]:
    return {p.t: (p.min, p.max, p.avg, p.count) for p in points}


def assert_same(
    got: list[SeriesPoint], want: dict[dt.datetime, tuple[float, float, float, int]]
) -> None:
    assert [p.t for p in got] == list(want), "bucket starts differ"
    for point in got:
        low, high, avg, count = want[point.t]
        assert (point.min, point.max, point.count) == (low, high, count), point
        assert point.avg == pytest.approx(avg, rel=1e-12), point


def spread(rng: random.Random, n: int, span: dt.timedelta) -> Stored:
    """n readings at random microseconds of [T0, T0 + span), some on whole seconds."""
    span_us = span // dt.timedelta(microseconds=1)
    out: Stored = []
    for i in range(n):
        when = T0 + dt.timedelta(microseconds=rng.randrange(span_us))
        if i % 5 == 0:
            when = when.replace(microsecond=0)
        out.append((when, round(rng.uniform(40, 200), 3)))
    return out


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ReadingStore]:
    """A fresh store on each backend."""
    opened: ReadingStore
    if request.param == "sqlite":
        opened = await SqliteStore.open(tmp_path / "collector.db")
        yield opened
        await opened.close()
        return
    from collector.store_postgres import PostgresStore

    async with postgres_schema() as url:
        opened = await PostgresStore.open(url)
        yield opened
        await opened.close()


@pytest.fixture
async def filled(store: ReadingStore) -> tuple[ReadingStore, Stored]:
    """Two streams of DEVICE and readings of OTHER at the same times; DEVICE's returned."""
    rng = random.Random(20261201)
    span = dt.timedelta(hours=6)
    first, second = spread(rng, 1500, span), spread(rng, 700, span)
    await put(store, DEVICE, "s1", first)
    await put(store, DEVICE, "s2", second)
    # another device, with values no DEVICE reading has: any leak shows in min/max/count
    await put(store, OTHER, "s1", [(when, 300.0) for when, _ in first[:400]])
    return store, first + second


@pytest.mark.parametrize("points", [1, 2, 7, 500, 5000])
async def test_buckets_equal_python_aggregates(
    filled: tuple[ReadingStore, Stored], points: int
) -> None:
    store, stored = filled
    start, end = T0 + dt.timedelta(minutes=17, microseconds=3), T0 + dt.timedelta(hours=5)
    got = await store.series(DEVICE, start, end, points)
    want = expected(stored, start, end, points)
    assert len(got) <= points
    assert sum(p.count for p in got) == sum(1 for w, _ in stored if start <= w < end)
    assert_same(got, want)


async def test_streams_are_merged_and_other_devices_left_out(
    filled: tuple[ReadingStore, Stored],
) -> None:
    store, stored = filled
    end = T0 + dt.timedelta(hours=6)
    got = await store.series(DEVICE, T0, end, 3)
    assert sum(p.count for p in got) == 2200 == len(stored)
    assert max(p.max for p in got) < 300.0, "OTHER's readings were counted"
    assert sum(p.count for p in await store.series(OTHER, T0, end, 3)) == 400


async def test_from_is_included_and_to_excluded(store: ReadingStore) -> None:
    start, end = SECOND, SECOND + dt.timedelta(seconds=10)
    before_end = end - dt.timedelta(microseconds=1)
    stored = [
        (start - dt.timedelta(microseconds=1), 1.0),
        (start, 2.0),
        (before_end, 3.0),
        (end, 4.0),
    ]
    await put(store, DEVICE, "s1", stored)
    got = await store.series(DEVICE, start, end, 10)
    assert as_dict(got) == {
        start: (2.0, 2.0, 2.0, 1),
        start + dt.timedelta(seconds=9): (3.0,) * 3 + (1,),
    }


async def test_fractions_of_a_second_are_compared_as_times_not_text(store: ReadingStore) -> None:
    """SQLite's text `...:00Z` sorts after `...:00.500000Z`; the range must not follow it."""
    stored = [(SECOND, 1.0), (SECOND + dt.timedelta(milliseconds=500), 2.0)]
    await put(store, DEVICE, "s1", stored)
    quarter = SECOND + dt.timedelta(milliseconds=250)
    got = await store.series(DEVICE, quarter, quarter + dt.timedelta(seconds=1), 4)
    assert as_dict(got) == {quarter + dt.timedelta(milliseconds=250): (2.0, 2.0, 2.0, 1)}
    got = await store.series(DEVICE, SECOND - dt.timedelta(seconds=1), quarter, 1)
    assert [p.count for p in got] == [1]


async def test_values_near_the_float_limit_average_without_overflow(store: ReadingStore) -> None:
    """Units other than bpm have no plausible range: 1.7e308 is a reading like any other."""
    big = 1.7e308
    readings = [
        wire.Reading(uuid.uuid4(), seq, SECOND, wire.Message(value, unit="W"))
        for seq, value in enumerate([big, big, -big, big], start=1)
    ]
    ack = await store.store_batch(wire.Batch(DEVICE, "s1", readings))
    assert ack.accepted == 4, ack
    got = await store.series(DEVICE, SECOND, SECOND + dt.timedelta(seconds=1), 1)
    assert as_dict(got) == {SECOND: (-big, big, big / 2, 4)}


async def test_a_range_without_readings_is_empty(filled: tuple[ReadingStore, Stored]) -> None:
    store, _ = filled
    later = T0 + dt.timedelta(days=3)
    assert await store.series(DEVICE, later, later + dt.timedelta(days=1), 500) == []
    assert await store.series("nobody", T0, T0 + dt.timedelta(days=1), 500) == []


async def test_widths_round_up_to_whole_milliseconds(store: ReadingStore) -> None:
    """1 s in 3 points is 334 ms wide, so the last bucket starts at 668 ms; 1 ms at least."""
    stored = [(SECOND + dt.timedelta(milliseconds=ms), ms / 10 + 1) for ms in (0, 333, 334, 999)]
    await put(store, DEVICE, "s1", stored)
    got = await store.series(DEVICE, SECOND, SECOND + dt.timedelta(seconds=1), 3)
    ms = dt.timedelta(milliseconds=1)
    assert as_dict(got) == {
        SECOND: (1.0, 34.3, pytest.approx(17.65), 2),
        SECOND + 334 * ms: (34.4, 34.4, 34.4, 1),
        SECOND + 668 * ms: (100.9, 100.9, 100.9, 1),
    }
    tiny = await store.series(DEVICE, SECOND, SECOND + 2 * ms, 5000)
    assert [(p.t, p.count) for p in tiny] == [(SECOND, 1)]


async def test_the_sqlite_query_walks_the_device_time_index(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "collector.db")
    await store.close()
    import sqlite3

    from collector.store_sqlite import SERIES

    with sqlite3.connect(tmp_path / "collector.db") as conn:
        params = dict.fromkeys(["start", "end", "width", "scale", "device", "low", "high"], 1)
        plan = " ".join(str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {SERIES}", params))
    assert (
        "COVERING INDEX readings_device_datetime (device_id=? AND datetime>? AND datetime<?)"
        in plan
    )


async def test_postgres_has_the_device_time_index() -> None:
    from collector.store_postgres import PostgresStore

    async with postgres_schema() as url:
        store = await PostgresStore.open(url)
        try:
            names = [
                r[0]
                for r in await store._pool.fetch(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
                )
            ]
        finally:
            await store.close()
    assert "readings_device_datetime" in names


# over HTTP


@pytest.fixture(params=["sqlite", "postgres"])
async def client(
    request: pytest.FixtureRequest, aiohttp_client: MakeClient, tmp_path: Path
) -> AsyncIterator[Client]:
    """The collector app on each backend."""
    db = str(tmp_path / "collector.db")
    if request.param == "sqlite":
        yield await aiohttp_client(create_app(CollectorConfig(db=db)))
        return
    async with postgres_schema() as url:
        app_client = await aiohttp_client(create_app(CollectorConfig(db=db, database_url=url)))
        yield app_client
        # before the schema is dropped, not after, as aiohttp_client's own teardown would
        await app_client.close()


async def get(client: Client, query: str) -> tuple[int, Any]:
    resp = await client.get(f"{URL}?{query}")
    assert resp.content_type == "application/json"
    return resp.status, await resp.json()


async def test_http_answers_the_documented_shape(client: Client) -> None:
    readings = [
        {"id": str(uuid.uuid4()), "seq": seq, "datetime": when, "message": {"value": value}}
        for seq, (when, value) in enumerate(
            [
                ("2026-01-01T00:00:00Z", 60),
                ("2026-01-01T00:00:30.5Z", 70),
                ("2026-01-01T00:01:00Z", 99),
            ],
            start=1,
        )
    ]
    resp = await client.post(
        "/api/v1/readings", json={"device_id": DEVICE, "stream": "s1", "readings": readings}
    )
    assert resp.status == 200
    # +01:00: the range is 00:00..00:01 UTC, so the reading at 00:01 is left out
    status, answer = await get(
        client,
        f"device_id={DEVICE}&from=2026-01-01T01:00:00%2B01:00&to=2026-01-01T00:01:00Z&points=1",
    )
    assert status == 200
    assert answer == {
        "device_id": DEVICE,
        "points": [
            {"t": "2026-01-01T00:00:00Z", "min": 60.0, "max": 70.0, "avg": 65.0, "count": 2}
        ],
    }
    status, answer = await get(
        client, f"device_id={DEVICE}&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"
    )
    assert status == 200
    assert sum(p["count"] for p in answer["points"]) == 3


GOOD = f"device_id={DEVICE}&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", "device_id"),
        (f"device_id={DEVICE}&to=2026-01-02T00:00:00Z", "from"),
        (f"device_id={DEVICE}&from=2026-01-01T00:00:00Z", "to"),
        (f"{GOOD}&points=", "points"),
        (f"{GOOD.replace('from=2026-01-01T00:00:00Z', 'from=')}", "from"),
        (f"{GOOD}&points=0", "points"),
        (f"{GOOD}&points=5001", "points"),
        (f"{GOOD}&points=ten", "points"),
        (f"{GOOD}&stream=s1", "stream"),
        (f"device_id={DEVICE}&from=2026-01-01T00:00:00&to=2026-01-02T00:00:00Z", "from"),
        (f"device_id={DEVICE}&from=yesterday&to=2026-01-02T00:00:00Z", "from"),
        (f"device_id={DEVICE}&from=0001-01-01T00:00:00%2B01:00&to=2026-01-02T00:00:00Z", "from"),
    ],
)
async def test_http_bad_parameters_are_400_naming_them(
    client: Client, query: str, named: str
) -> None:
    status, answer = await get(client, query)
    assert status == 400, answer
    assert f"`{named}`" in answer["error"] or f"parameter {named}" in answer["error"], answer


@pytest.mark.parametrize("to", ["2026-01-02T00:00:00Z", "2026-01-01T12:00:00Z"])
async def test_http_an_empty_or_reversed_range_is_an_empty_series(client: Client, to: str) -> None:
    # [from, to) holds nothing when to <= from; the document cannot order two parameters,
    # so the answer is the empty series a schema-valid request expects, not a 400
    status, answer = await get(client, f"device_id={DEVICE}&from=2026-01-02T00:00:00Z&to={to}")
    assert (status, answer) == (200, {"device_id": DEVICE, "points": []})


async def test_http_takes_points_up_to_5000(client: Client) -> None:
    status, answer = await get(client, f"{GOOD}&points=5000")
    assert (status, answer) == (200, {"device_id": DEVICE, "points": []})
