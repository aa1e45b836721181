"""Rollups: the plan that cuts buckets into pieces, and series from rollups equal to raw ones."""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

import pulse_wire as wire
from collector.rollups import HOUR, MINUTE, ORIGIN, plan
from collector.store import AVG_SCALE, ReadingStore, SeriesPoint, bucket_width
from collector.store_postgres import PostgresStore
from collector.store_sqlite import SqliteStore
from tests.test_collector_postgres import postgres_schema

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)


def aligned(when: dt.datetime, unit: dt.timedelta) -> bool:
    return (when - ORIGIN) % unit == dt.timedelta(0)


@pytest.mark.parametrize(
    ("span", "points"),
    [
        (dt.timedelta(seconds=90), 500),
        (dt.timedelta(hours=6), 500),
        (dt.timedelta(days=30), 500),
        (dt.timedelta(days=30, seconds=7), 37),
        (dt.timedelta(days=365), 5000),
        (dt.timedelta(minutes=59, seconds=59), 1),
    ],
)
def test_the_pieces_tile_every_bucket_exactly_and_sit_on_their_grid(
    span: dt.timedelta, points: int
) -> None:
    start = NOW - span
    width = bucket_width(start, NOW, points)
    pieces = plan(start, NOW, width)
    everything = sorted(
        [(k, lo, hi, "raw") for k, lo, hi in pieces.raw]
        + [(k, lo, hi, "minute") for k, lo, hi in pieces.minute]
        + [(k, lo, hi, "hour") for k, lo, hi in pieces.hour],
        key=lambda p: p[1],
    )
    # no gap and no overlap from start to end
    assert everything[0][1] == start
    assert everything[-1][2] == NOW
    for before, after in zip(everything, everything[1:], strict=False):
        assert before[2] == after[1]
    for k, lo, hi, kind in everything:
        bucket_low = start + k * width
        assert bucket_low <= lo < hi <= min(bucket_low + width, NOW)
        if kind != "raw":
            unit = MINUTE if kind == "minute" else HOUR
            assert aligned(lo, unit)
            assert aligned(hi, unit)
        else:
            # raw readings only where no whole minute fits
            assert hi - lo < MINUTE or (not aligned(lo, MINUTE) and hi - lo < 2 * MINUTE)
    if width >= 2 * HOUR:
        # a month's buckets read at most two minutes of raw readings each
        raw = sum((hi - lo for _, lo, hi in pieces.raw), dt.timedelta())
        assert raw <= 2 * MINUTE * (math.ceil(span / width))


def brute(
    readings: list[wire.Reading], start: dt.datetime, end: dt.datetime, points: int
) -> tuple[list[tuple[dt.datetime, float, float, int]], list[float]]:
    """What series() must answer, from the readings sent, and the averages apart."""
    width = bucket_width(start, end, points)
    buckets: dict[int, list[float]] = {}
    for r in readings:
        if start <= r.datetime < end:
            buckets.setdefault((r.datetime - start) // width, []).append(float(r.message.value))
    found = sorted(buckets.items())
    return (
        [(start + k * width, min(vs), max(vs), len(vs)) for k, vs in found],
        [sum(v / AVG_SCALE for v in vs) / len(vs) * AVG_SCALE for _, vs in found],
    )


def shape(points: list[SeriesPoint]) -> list[tuple[dt.datetime, float, float, int]]:
    return [(p.t, p.min, p.max, p.count) for p in points]


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ReadingStore]:
    clock = lambda: NOW  # noqa: E731
    if request.param == "sqlite":
        s: ReadingStore = await SqliteStore.open(tmp_path / "collector.db", clock=clock)
        try:
            yield s
        finally:
            await s.close()
        return
    async with postgres_schema() as url:
        s = await PostgresStore.open(url, clock=clock)
        request.node.pg_url = url
        try:
            yield s
        finally:
            await s.close()


def spread(count: int, days: float, seed: int) -> list[wire.Reading]:
    """Readings at irregular times over the last `days`, with irregular values."""
    rng = random.Random(seed)
    span = dt.timedelta(days=days).total_seconds()
    times = sorted(NOW - dt.timedelta(seconds=rng.uniform(0, span)) for _ in range(count))
    return [
        wire.Reading(
            id=uuid.uuid4(),
            seq=i + 1,
            datetime=when,
            message=wire.Message(value=round(rng.uniform(40, 180), 3), unit="bpm"),
        )
        for i, when in enumerate(times)
    ]


RANGES = [
    (dt.timedelta(days=3, hours=1), 500),
    (dt.timedelta(days=2, seconds=13), 40),
    (dt.timedelta(hours=5, milliseconds=7), 100),
    (dt.timedelta(minutes=20), 500),
    (dt.timedelta(days=3), 1),
]


async def test_series_from_rollups_equal_a_scan_of_every_reading(store: ReadingStore) -> None:
    sent = spread(6000, 3, seed=7)
    # in batches of several minutes' and hours' readings, so rollup rows are updated in place
    for i in range(0, len(sent), 700):
        ack = await store.store_batch(
            wire.Batch(device_id="d", stream="s", readings=sent[i : i + 700])
        )
        assert ack.accepted == len(sent[i : i + 700])
    # another device in the same minutes must not leak into this one's buckets
    other = spread(500, 3, seed=8)
    await store.store_batch(wire.Batch(device_id="e", stream="s", readings=other))
    end = NOW + dt.timedelta(seconds=1)
    for span, points in RANGES:
        start = end - span
        got = await store.series("d", start, end, points)
        want, averages = brute(sent, start, end, points)
        assert shape(got) == want
        for point, avg in zip(got, averages, strict=True):
            assert point.avg == pytest.approx(avg, rel=1e-12)


async def test_a_long_range_reads_the_rollups_not_the_readings(
    store: ReadingStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sent = spread(3000, 2, seed=9)
    await store.store_batch(wire.Batch(device_id="d", stream="s", readings=sent))
    end = NOW + dt.timedelta(seconds=1)
    start = end - dt.timedelta(days=2, hours=1)
    before = await store.series("d", start, end, 48)
    # take away the raw readings that lie inside whole hours: the answer must not change,
    # because those hours come from the hour rollups
    width = bucket_width(start, end, 48)
    hours = plan(start, end, width).hour
    assert hours
    if isinstance(store, PostgresStore):
        conn = await asyncpg.connect(request.node.pg_url)
        try:
            for _, lo, hi in hours:
                await conn.execute(
                    "DELETE FROM readings WHERE datetime >= $1 AND datetime < $2", lo, hi
                )
        finally:
            await conn.close()
    else:
        import sqlite3

        db = sqlite3.connect(tmp_path / "collector.db")
        try:
            ids = [r.id.bytes for r in sent if any(lo <= r.datetime < hi for _, lo, hi in hours)]
            db.executemany("DELETE FROM readings WHERE id = ?", [(i,) for i in ids])
            db.commit()
        finally:
            db.close()
    after = await store.series("d", start, end, 48)
    assert after == before
    # and a short range, read raw, sees them gone
    short = await store.series("d", hours[0][1], hours[0][1] + dt.timedelta(minutes=30), 500)
    assert short == []
