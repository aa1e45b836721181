"""The status hub: changed fields only, numbered events, snapshot-first subscriptions."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import cast

import pytest

from agent import status as status_mod
from agent.status import Event, State, StatusHub


def subscribe(hub: StatusHub) -> AsyncGenerator[Event, None]:
    """hub.subscribe() is an async generator; say so, so the test can close it."""
    return cast(AsyncGenerator[Event, None], hub.subscribe())


def test_update_publishes_only_the_changed_fields() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    hub.update(pending=0, sent_total=5, last_error=None)
    assert events == [{"type": "status", "seq": 1, "changes": {"sent_total": 5}}]
    assert hub.status.sent_total == 5
    assert hub.seq == 1


def test_an_update_that_changes_nothing_publishes_nothing() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    hub.update(pending=4)
    hub.update(pending=4)
    hub.update()
    assert len(events) == 1
    assert hub.seq == 1


def test_event_numbers_increase() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    hub.update(pending=1)
    hub.publish("reading", reading={"value": 70})
    hub.update(pending=2)
    hub.publish("batch", sent=2)
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert [e["type"] for e in events] == ["status", "reading", "status", "batch"]
    assert events[1]["reading"] == {"value": 70}
    assert hub.seq == 4


def test_set_state_reports_a_change_once() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    assert hub.set_state(State.OFFLINE, "refused") is True
    assert hub.set_state(State.OFFLINE, "refused") is False
    assert len(events) == 1
    changes = events[0]["changes"]
    assert changes["state"] is State.OFFLINE
    assert changes["detail"] == "refused"
    since = hub.status.state_since
    # a new detail in the same state keeps the time the state began
    assert hub.set_state(State.OFFLINE, "timed out") is True
    assert hub.status.state_since == since
    assert events[-1]["changes"] == {"detail": "timed out"}


def test_removed_listener_hears_nothing_more() -> None:
    hub = StatusHub()
    events: list[Event] = []
    remove = hub.add_listener(events.append)
    hub.update(pending=1)
    remove()
    hub.update(pending=2)
    assert len(events) == 1


def test_snapshot_is_json_ready() -> None:
    hub = StatusHub()
    hub.update(pending=3, last_reading={"seq": 1, "value": 70})
    snap = hub.snapshot()
    assert snap["type"] == "snapshot"
    assert snap["seq"] == 1
    assert snap["status"]["pending"] == 3
    decoded = json.loads(json.dumps(snap))
    assert decoded["status"]["state"] == "starting"
    assert decoded["status"]["last_reading"] == {"seq": 1, "value": 70}


async def test_subscribe_yields_a_snapshot_then_the_events() -> None:
    hub = StatusHub()
    hub.update(pending=7)
    events = subscribe(hub)
    first = await anext(events)
    assert first["type"] == "snapshot"
    assert first["seq"] == 1
    assert first["status"]["pending"] == 7
    hub.update(pending=8)
    hub.publish("reading", reading={"seq": 9})
    second = await anext(events)
    third = await anext(events)
    assert second == {"type": "status", "seq": 2, "changes": {"pending": 8}}
    assert third["type"] == "reading"
    assert third["seq"] == 3
    await events.aclose()
    # a closed subscription leaves nothing behind to feed
    assert hub._queues == set()
    hub.update(pending=9)


async def test_each_subscriber_gets_every_event() -> None:
    hub = StatusHub()
    a, b = subscribe(hub), subscribe(hub)
    await anext(a)
    await anext(b)
    hub.publish("batch", sent=5)
    assert (await anext(a))["sent"] == 5
    assert (await anext(b))["sent"] == 5
    await a.aclose()
    await b.aclose()


async def test_a_full_subscriber_queue_drops_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_mod, "SUBSCRIBER_BUFFER", 3)
    hub = StatusHub()
    events = subscribe(hub)
    await anext(events)
    for i in range(1, 6):
        hub.publish("reading", n=i)
    got = [await anext(events) for _ in range(3)]
    assert [e["n"] for e in got] == [3, 4, 5]
    assert [e["seq"] for e in got] == [3, 4, 5]
    hub.publish("reading", n=6)
    assert (await anext(events))["n"] == 6
    await events.aclose()


def test_states_read_as_plain_words() -> None:
    assert str(State.CATCHING_UP) == "catching_up"
    assert json.dumps({"s": State.UNAUTHORIZED}) == '{"s": "unauthorized"}'
