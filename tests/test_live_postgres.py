"""Live events between two real collector processes on one PostgreSQL schema.

A batch posted to one process reaches the websockets of both, each exactly once, its points
compared reading by reading; a batch too big for one NOTIFY arrives with its newest points;
and the listening connection, killed from the server's side, comes back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest

from collector.live_postgres import MAX_PAYLOAD, encode
from tests.harness import Proc, start_collector, wait_until
from tests.requirements import postgres_schema_url, postgres_url

pytestmark = pytest.mark.e2e

UTC = dt.UTC
RECEIVE_TIMEOUT_S = 20.0
Point = tuple[dt.datetime, float]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Proc, Proc]]:
    """Two collector processes on one fresh schema."""
    with postgres_schema_url("pulse_live2") as url:
        a = start_collector(tmp_path / "a", None, "--database-url", url)
        try:
            b = start_collector(tmp_path / "b", None, "--database-url", url)
            try:
                yield a, b
            finally:
                assert b.stop() == 0, b.output()
        finally:
            assert a.stop() == 0, a.output()
    for proc in (a, b):
        assert "Traceback" not in proc.output(), proc.output()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def body(device: str, count: int, first_value: float) -> dict[str, Any]:
    """A batch of `count` readings of `device`, values first_value + 1, + 2, …"""
    now = dt.datetime.now(UTC)
    readings = [
        {
            "id": str(uuid.uuid4()),
            "seq": seq,
            "datetime": (now - dt.timedelta(seconds=count - seq)).isoformat(),
            # within the plausible 1..400 bpm
            "message": {"value": first_value + seq % 300, "unit": "bpm"},
        }
        for seq in range(1, count + 1)
    ]
    return {"device_id": device, "stream": "s1", "readings": readings}


def sent_points(payload: dict[str, Any]) -> list[Point]:
    return [
        (dt.datetime.fromisoformat(r["datetime"]), float(r["message"]["value"]))
        for r in payload["readings"]
    ]


def event_points(event: dict[str, Any]) -> list[Point]:
    return [(dt.datetime.fromisoformat(p["t"]), float(p["v"])) for p in event["points"]]


async def post(session: aiohttp.ClientSession, proc: Proc, payload: dict[str, Any]) -> None:
    async with session.post(f"{proc.url}/api/v1/readings", json=payload) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["accepted"] == len(payload["readings"])


async def batches_until(ws: aiohttp.ClientWebSocketResponse, device: str) -> list[dict[str, Any]]:
    """Every batch event received up to and including the first one of `device`."""
    events: list[dict[str, Any]] = []
    while True:
        message = await ws.receive(timeout=RECEIVE_TIMEOUT_S)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        event: dict[str, Any] = json.loads(message.data)
        if event["type"] == "batch":
            events.append(event)
            if event["device_id"] == device:
                return events


async def test_a_batch_posted_to_one_process_reaches_both_processes_sockets_once(
    pair: tuple[Proc, Proc], session: aiohttp.ClientSession
) -> None:
    a, b = pair
    async with (
        session.ws_connect(f"{a.url}/api/v1/live") as ws_a,
        session.ws_connect(f"{b.url}/api/v1/live") as ws_b,
    ):
        # sent to either process, in order; the last one is the end mark on both sockets
        sent = [(a, body(f"ward-{n}", 10, 60 + n * 10)) for n in range(5)]
        sent += [(b, body("from-b", 7, 90)), (a, body("big", 600, 1)), (a, body("end", 1, 1))]
        for proc, payload in sent:
            await post(session, proc, payload)
        for ws in (ws_a, ws_b):
            events = await batches_until(ws, "end")
            # each batch once: neither the local delivery nor the NOTIFY duplicates it
            assert sorted(e["device_id"] for e in events) == sorted(p["device_id"] for _, p in sent)
            by_device = {e["device_id"]: e for e in events}
            for proc, payload in sent:
                event = by_device[payload["device_id"]]
                points = sent_points(payload)
                assert event["accepted"] == len(points)
                if proc is not a or ws is ws_a or payload["device_id"] != "big":
                    assert event_points(event) == points
                    assert "points_dropped" not in event
                    continue
                # 600 points do not fit one NOTIFY: the newest that do, and the count dropped
                kept = event_points(event)
                assert 0 < len(kept) < len(points)
                assert kept == points[len(points) - len(kept) :]
                assert event["points_dropped"] == len(points) - len(kept)


async def test_the_listening_connection_comes_back_after_the_server_drops_it(
    pair: tuple[Proc, Proc], session: aiohttp.ClientSession
) -> None:
    a, b = pair
    async with session.ws_connect(f"{b.url}/api/v1/live") as ws_b:
        conn = await asyncpg.connect(postgres_url())
        try:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                f"pulse live {b.popen.pid}",
            )
        finally:
            await conn.close()
        assert killed == 1
        await asyncio.to_thread(wait_until, lambda: "live: reconnected" in b.output())
        message = await ws_b.receive(timeout=RECEIVE_TIMEOUT_S)
        # what was published elsewhere meanwhile is lost: the page is told to refetch
        assert json.loads(message.data) == {"type": "lagged"}
        payload = body("after", 5, 70)
        await post(session, a, payload)
        (event,) = await batches_until(ws_b, "after")
        assert event_points(event) == sent_points(payload)
    output = b.output()
    assert output.count("live: lost PostgreSQL") == 1, output


def test_an_event_too_big_for_one_notify_keeps_its_newest_points() -> None:
    points = [{"t": f"2026-06-01T12:{n // 60:02d}:{n % 60:02d}Z", "v": n} for n in range(1000)]
    event = {"type": "batch", "device_id": "d", "accepted": 1000, "points": points}
    payload = encode(event, "origin")
    assert payload is not None
    assert len(payload.encode()) <= MAX_PAYLOAD
    sent = json.loads(payload)["e"]
    kept = sent["points"]
    assert kept == points[len(points) - len(kept) :]
    assert sent["points_dropped"] == len(points) - len(kept)
    # one more point would not have fitted
    more = {
        **sent,
        "points": points[-len(kept) - 1 :],
        "points_dropped": sent["points_dropped"] - 1,
    }
    assert len(msgspec.json.encode({"o": "origin", "e": more})) > MAX_PAYLOAD
    small = {**event, "points": points[:3]}
    assert json.loads(encode(small, "origin") or "") == {"o": "origin", "e": small}
    assert encode({"type": "huge", "text": "x" * MAX_PAYLOAD}, "origin") is None
