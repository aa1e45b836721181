"""The status hub: typed events, changed fields only, one owner per field, snapshot first."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import cast

import msgspec
import pytest

from agent import status as status_mod
from agent.status import (
    BatchEvent,
    Event,
    LastReading,
    ReadingEvent,
    SnapshotEvent,
    State,
    StatusChanges,
    StatusEvent,
    StatusHub,
)
from agent.store import Counts


def subscribe(hub: StatusHub) -> AsyncGenerator[Event, None]:
    """hub.subscribe() is an async generator; say so, so the test can close it."""
    return cast(AsyncGenerator[Event, None], hub.subscribe())


def reading(seq: int, value: float = 70.0) -> LastReading:
    return LastReading(seq=seq, datetime="2026-11-26T23:40:16.123Z", value=value, unit="bpm")


def changes(event: Event) -> StatusChanges:
    assert isinstance(event, StatusEvent), event
    return event.changes


def test_set_counts_publishes_only_the_changed_fields() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    hub.set_counts(Counts(pending=0, sent=5, dropped=0, dead=0))
    assert events == [StatusEvent(seq=1, changes=StatusChanges(sent_total=5))]
    assert hub.status.sent_total == 5
    assert hub.seq == 1


def test_a_write_that_changes_nothing_publishes_nothing() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    hub.set_counts(Counts(pending=4, sent=0, dropped=0, dead=0))
    hub.set_counts(Counts(pending=4, sent=0, dropped=0, dead=0))
    hub.set_start_problem(None)
    hub.set_paused(False)
    assert len(events) == 1
    assert hub.seq == 1


def test_event_numbers_increase() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    hub.add_reading(reading(1), Counts(pending=1, sent=0, dropped=0, dead=0))
    hub.add_delivery(Counts(0, 1, 0, 0), at=10.0, catchup_rate=None, sent=1, rejected=0)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [type(e) for e in events] == [StatusEvent, ReadingEvent, StatusEvent, BatchEvent]
    assert events[1] == ReadingEvent(seq=2, reading=reading(1), pending=1)
    assert events[3] == BatchEvent(seq=4, sent=1, rejected=0, pending=0)
    assert hub.seq == 4


def test_set_state_reports_a_change_once() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    assert hub.set_state(State.OFFLINE, "refused") is True
    assert hub.set_state(State.OFFLINE, "refused") is False
    assert len(events) == 1
    assert changes(events[0]).state is State.OFFLINE
    assert changes(events[0]).detail == "refused"
    since = hub.status.state_since
    # a new detail in the same state keeps the time the state began
    assert hub.set_state(State.OFFLINE, "timed out") is True
    assert hub.status.state_since == since
    assert changes(events[-1]) == StatusChanges(detail="timed out")


def test_the_pause_shows_over_the_delivery_state() -> None:
    hub = StatusHub()
    states: list[State] = []
    hub.add_listener(lambda e: states.append(changes(e).state))  # type: ignore[arg-type]
    hub.set_state(State.OFFLINE, "refused")
    assert hub.set_paused(True) is True
    assert (hub.status.state, hub.status.detail) == (State.PAUSED, "")
    # a verdict that lands while paused does not unpause the display
    hub.set_state(State.RETRYING, "HTTP 500")
    assert hub.status.state is State.PAUSED
    assert hub.set_paused(True) is False
    # resuming starts afresh: "sending" until the sender's next verdict
    assert hub.set_paused(False) is True
    assert hub.status.state is State.SENDING
    assert states == [State.OFFLINE, State.PAUSED, State.SENDING]


def test_a_failing_write_replaces_the_start_problem_while_it_lasts() -> None:
    hub = StatusHub()
    hub.set_start_problem("queue.db was damaged; 3 readings recovered")
    hub.set_write_problem("new readings cannot be stored: disk full")
    assert hub.status.storage_problem == "new readings cannot be stored: disk full"
    hub.set_write_problem(None)
    assert hub.status.storage_problem == "queue.db was damaged; 3 readings recovered"


def test_removed_listener_hears_nothing_more() -> None:
    hub = StatusHub()
    events: list[Event] = []
    remove = hub.add_listener(events.append)
    hub.refuse_value()
    remove()
    hub.refuse_value()
    assert len(events) == 1
    assert hub.status.invalid_total == 2


def test_events_encode_to_the_json_the_page_reads() -> None:
    hub = StatusHub()
    events: list[Event] = []
    hub.add_listener(events.append)
    hub.add_reading(reading(1, 72), Counts(pending=3, sent=0, dropped=0, dead=0))
    hub.add_failure("HTTP 503: maintenance", at=12.5)
    decoded = [json.loads(msgspec.json.encode(e)) for e in events]
    assert decoded == [
        {
            "type": "status",
            "seq": 1,
            "changes": {"pending": 3, "last_reading": decoded[1]["reading"]},
        },
        {
            "type": "reading",
            "seq": 2,
            "reading": {
                "seq": 1,
                "datetime": "2026-11-26T23:40:16.123Z",
                "value": 72,
                "unit": "bpm",
            },
            "pending": 3,
        },
        {
            "type": "status",
            "seq": 3,
            "changes": {"last_error": "HTTP 503: maintenance", "last_error_at": 12.5},
        },
    ]


def test_snapshot_is_json_ready_with_every_field_app_js_reads() -> None:
    hub = StatusHub()
    hub.add_reading(reading(1), Counts(pending=3, sent=0, dropped=0, dead=0))
    snap = hub.snapshot()
    assert isinstance(snap, SnapshotEvent)
    assert snap.seq == 2
    decoded = json.loads(msgspec.json.encode(snap))
    assert decoded["type"] == "snapshot"
    assert decoded["status"]["state"] == "starting"
    assert decoded["status"]["last_reading"]["value"] == 70
    # web/static/app.js reads these names; renaming one breaks the page
    assert set(decoded["status"]) == {
        "state",
        "state_since",
        "detail",
        "pending",
        "sent_total",
        "dropped_total",
        "dead_total",
        "invalid_total",
        "last_send_at",
        "last_error",
        "last_error_at",
        "last_reading",
        "catchup_rate",
        "storage_problem",
        "started_at",
        "sources",
    }
    # a snapshot is a copy: later changes do not rewrite what was already taken
    hub.set_counts(Counts(pending=9, sent=0, dropped=0, dead=0))
    assert snap.status.pending == 3


async def test_subscribe_yields_a_snapshot_then_the_events() -> None:
    hub = StatusHub()
    hub.set_counts(Counts(pending=7, sent=0, dropped=0, dead=0))
    events = subscribe(hub)
    first = await anext(events)
    assert isinstance(first, SnapshotEvent)
    assert first.seq == 1
    assert first.status.pending == 7
    hub.set_counts(Counts(pending=8, sent=0, dropped=0, dead=0))
    hub.add_delivery(Counts(8, 0, 0, 0), at=1.0, catchup_rate=None, sent=0, rejected=0)
    second = await anext(events)
    assert second == StatusEvent(seq=2, changes=StatusChanges(pending=8))
    assert (await anext(events)).seq == 3
    await events.aclose()
    # a closed subscription leaves nothing behind to feed
    assert hub._queues == set()
    hub.refuse_value()


async def test_each_subscriber_gets_every_event() -> None:
    hub = StatusHub()
    a, b = subscribe(hub), subscribe(hub)
    await anext(a)
    await anext(b)
    hub.add_delivery(Counts(0, 5, 0, 0), at=1.0, catchup_rate=None, sent=5, rejected=0)
    for sub in (a, b):
        assert isinstance(await anext(sub), StatusEvent)
        assert await anext(sub) == BatchEvent(seq=2, sent=5, rejected=0, pending=0)
    await a.aclose()
    await b.aclose()


async def test_a_full_subscriber_queue_drops_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_mod, "SUBSCRIBER_BUFFER", 3)
    hub = StatusHub()
    events = subscribe(hub)
    await anext(events)
    for i in range(1, 6):
        hub.refuse_value()
        assert hub.seq == i
    got = [await anext(events) for _ in range(3)]
    assert [changes(e).invalid_total for e in got] == [3, 4, 5]
    assert [e.seq for e in got] == [3, 4, 5]
    hub.refuse_value()
    assert changes(await anext(events)).invalid_total == 6
    await events.aclose()


def test_states_read_as_plain_words() -> None:
    assert str(State.CATCHING_UP) == "catching_up"
    assert json.dumps({"s": State.UNAUTHORIZED}) == '{"s": "unauthorized"}'
    assert msgspec.json.encode(State.UNAUTHORIZED) == b'"unauthorized"'
