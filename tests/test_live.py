"""Live updates: the LiveHub's queues, and GET /api/v1/live against a real collector process.

The websocket tests post batches to a `python -m collector` on SQLite and on PostgreSQL and
read what arrives on the socket; a message that must not arrive is proven absent by a later
one that must (the server keeps order), never by waiting.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import pulse_wire as wire
from collector.handlers import batch_event
from collector.live import LAGGED, LiveHub
from collector.store import Receipt
from tests.harness import Proc, get_json, start_collector, wait_until
from tests.requirements import postgres_schema_url

UTC = dt.UTC
RECEIVE_TIMEOUT_S = 20.0


# --- the hub ----------------------------------------------------------------------------


def test_a_slow_subscriber_is_told_it_lagged_and_never_blocks_the_publisher() -> None:
    hub = LiveHub()
    with hub.subscribe(size=4) as slow, hub.subscribe(size=100) as fast:
        for n in range(10):
            hub.publish({"type": "batch", "device_id": "d", "n": n})
        events = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        # what it had not read is dropped: "lagged" (refetch), then only what came after
        # full at n=4 and again at n=7: each time the backlog goes and "lagged" leads
        assert events[0] == LAGGED
        assert [e["n"] for e in events[1:]] == [7, 8, 9]
        assert [e["n"] for e in (fast.queue.get_nowait() for _ in range(10))] == list(range(10))
    assert hub.subscribers == 0


def test_an_event_is_wanted_only_by_a_subscriber_or_a_relay() -> None:
    """The handler builds a batch's event only when it is wanted."""
    hub = LiveHub()
    assert not hub.wanted
    with hub.subscribe():
        assert hub.wanted
    assert not hub.wanted
    relayed: list[object] = []
    hub.relay = relayed.append
    assert hub.wanted
    hub.publish({"type": "alerts"})
    assert relayed == [{"type": "alerts"}]


async def test_the_filter_applies_to_queued_events_and_spares_alerts() -> None:
    hub = LiveHub()
    with hub.subscribe() as subscription:
        hub.publish({"type": "batch", "device_id": "a"})
        subscription.devices = {"b"}
        hub.publish({"type": "batch", "device_id": "a"})
        hub.publish({"type": "alerts"})
        hub.publish({"type": "batch", "device_id": "b"})
        # the first "a" was queued before the filter changed, and is skipped all the same
        assert await subscription.next() == {"type": "alerts"}
        assert await subscription.next() == {"type": "batch", "device_id": "b"}
        assert subscription.queue.empty()


def _reading(seq: int, value: float) -> wire.Reading:
    when = dt.datetime(2026, 6, 1, 12, 0, seq, tzinfo=UTC)
    return wire.Reading(uuid.uuid4(), seq, when, wire.Message(value))


def test_batch_event_lists_the_accepted_readings_or_none_when_unknowable() -> None:
    readings = [_reading(1, 60.0), _reading(2, 61.5), _reading(3, 62.0)]
    batch = wire.Batch("dev", "s1", readings)
    received = dt.datetime(2026, 6, 1, 12, 1, tzinfo=UTC)
    refused = wire.Rejection(id=str(readings[1].id), error="seq conflict")
    event = batch_event(batch, Receipt(wire.Ack(2, 0, [refused]), received))
    assert event == {
        "type": "batch",
        "device_id": "dev",
        "stream": "s1",
        "accepted": 2,
        "last_seen": "2026-06-01T12:01:00Z",
        "points": [
            {"t": "2026-06-01T12:00:01Z", "v": 60.0},
            {"t": "2026-06-01T12:00:03Z", "v": 62.0},
        ],
    }
    mixed = batch_event(batch, Receipt(wire.Ack(2, 1, []), received))
    assert (mixed["accepted"], mixed["points"]) == (2, [])


# --- the websocket, against a real process ----------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def collector(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proc]:
    """A collector process on each backend."""
    if request.param == "sqlite":
        proc = start_collector(tmp_path)
        yield proc
        proc.stop()
        return
    with postgres_schema_url("pulse_live") as url:
        proc = start_collector(tmp_path, None, "--database-url", url)
        yield proc
        proc.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def body(device: str, seqs: list[int], value: float = 70.0) -> dict[str, Any]:
    now = dt.datetime.now(UTC)
    readings = [
        {
            "id": str(uuid.uuid4()),
            "seq": seq,
            "datetime": (now - dt.timedelta(seconds=100 - seq)).isoformat(),
            "message": {"value": value + seq / 4, "unit": "bpm"},
        }
        for seq in seqs
    ]
    return {"device_id": device, "stream": "s1", "readings": readings}


async def post(session: aiohttp.ClientSession, proc: Proc, payload: dict[str, Any]) -> Any:
    async with session.post(f"{proc.url}/api/v1/readings", json=payload) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=RECEIVE_TIMEOUT_S)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    event: dict[str, Any] = json.loads(message.data)
    return event


async def test_a_posted_batch_arrives_with_its_points(
    collector: Proc, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{collector.url}/api/v1/live") as ws:
        payload = body("kitchen", [1, 2, 3, 4])
        await post(session, collector, payload)
        event = await receive(ws)
        assert {k: event[k] for k in ("type", "device_id", "stream", "accepted")} == {
            "type": "batch",
            "device_id": "kitchen",
            "stream": "s1",
            "accepted": 4,
        }
        sent = [(r["datetime"], r["message"]["value"]) for r in payload["readings"]]
        got = [(p["t"], p["v"]) for p in event["points"]]
        assert [(dt.datetime.fromisoformat(t), v) for t, v in got] == [
            (dt.datetime.fromisoformat(t), v) for t, v in sent
        ]
        (device,) = get_json(f"{collector.url}/api/v1/devices")
        assert dt.datetime.fromisoformat(event["last_seen"]) == dt.datetime.fromisoformat(
            device["last_seen"]
        )
        # a batch resent whole stores nothing: no event; one with duplicates mixed in has
        # no points (which readings were new cannot be told)
        await post(session, collector, payload)
        again = {**payload, "readings": [*payload["readings"], *body("kitchen", [5])["readings"]]}
        await post(session, collector, again)
        event = await receive(ws)
        assert (event["accepted"], event["points"]) == (1, [])


async def test_a_filter_is_answered_once_in_force(
    collector: Proc, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{collector.url}/api/v1/live") as ws:
        await ws.send_str(json.dumps({"devices": ["b", "c"]}))
        # the answer echoes the list; nothing is posted before it, and nothing is waited for
        # after it: from the answer on, the filter is in force
        assert await receive(ws) == {"type": "watching", "devices": ["b", "c"]}
        await post(session, collector, body("a", [1]))
        await post(session, collector, body("b", [1]))
        # "a" was posted first: had it been sent, it would have come first
        event = await receive(ws)
        assert (event["type"], event["device_id"]) == ("batch", "b")
        await ws.send_str(json.dumps({"devices": None}))
        assert await receive(ws) == {"type": "watching", "devices": None}
        await post(session, collector, body("a", [2]))
        event = await receive(ws)
        assert (event["type"], event["device_id"]) == ("batch", "a")


async def test_a_bad_message_gets_an_error_and_changes_nothing(
    collector: Proc, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{collector.url}/api/v1/live") as ws:
        await ws.send_str(json.dumps({"devices": ["b"]}))
        assert await receive(ws) == {"type": "watching", "devices": ["b"]}
        await ws.send_str("not json")
        error = await receive(ws)
        assert error["type"] == "error"
        assert "devices" in error["error"]
        for bad in ('{"devices": "b"}', '{"devices": ["b"], "x": 1}', "[]", '{"devices": [""]}'):
            await ws.send_str(bad)
            assert (await receive(ws))["type"] == "error", bad
        await ws.send_bytes(b"{}")
        assert (await receive(ws))["type"] == "error"
        # an answer sent after an error would come before these events; and the filter
        # is still ["b"]: "a" (posted first) does not come at all
        await post(session, collector, body("a", [1]))
        await post(session, collector, body("b", [1]))
        event = await receive(ws)
        assert (event["type"], event["device_id"]) == ("batch", "b")
        await ws.send_str(json.dumps({"devices": ["a"]}))
        assert await receive(ws) == {"type": "watching", "devices": ["a"]}


async def test_shutdown_closes_open_sockets(
    collector: Proc, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{collector.url}/api/v1/live") as ws:
        await ws.send_str("hello")
        assert (await receive(ws))["type"] == "error"
        assert collector.stop() == 0
        message = await ws.receive(timeout=RECEIVE_TIMEOUT_S)
        # 1001 going away: the server closed it on shutdown, rather than dropping it
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        assert message.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_open_alerts_are_counted_per_device(tmp_path: Path) -> None:
    config = tmp_path / "collector.json"
    rule = {"name": "High", "device": "*", "when": "above", "threshold": 100, "for_s": 0}
    config.write_text(json.dumps({"alerts": {"rules": [rule], "interval_s": 0.05}}))
    proc = start_collector(tmp_path, None, "--config", str(config))
    try:
        async with aiohttp.ClientSession() as session:
            await post(session, proc, body("hot", [1, 2], value=150.0))
            await post(session, proc, body("calm", [1, 2], value=60.0))

        def counts() -> dict[str, int] | None:
            page = get_json(f"{proc.url}/api/v1/overview")
            found = {d["device_id"]: d["open_alerts"] for d in page["devices"]}
            return found if found.get("hot") else None

        assert wait_until(counts) == {"calm": 0, "hot": 1}
    finally:
        proc.stop()
