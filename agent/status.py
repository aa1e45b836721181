"""One status model, and the subscribers (websocket, tray) that follow its changes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# A slow subscriber loses its oldest events rather than holding the agent back.
SUBSCRIBER_BUFFER = 1000


class State(enum.StrEnum):
    """Where delivery stands, in the words the dashboard and tray show."""

    STARTING = "starting"
    SENDING = "sending"
    CATCHING_UP = "catching_up"
    RETRYING = "retrying"
    OFFLINE = "offline"
    UNAUTHORIZED = "unauthorized"
    REJECTED = "rejected"
    PAUSED = "paused"


@dataclass
class Status:
    """Everything a user needs to see whether readings get through, and why not."""

    state: State = State.STARTING
    state_since: float = field(default_factory=time.time)
    detail: str = ""
    pending: int = 0
    sent_total: int = 0
    dropped_total: int = 0
    dead_total: int = 0
    # values a source gave that cannot be sent (NaN, ±Inf): refused, never stored
    invalid_total: int = 0
    last_send_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_reading: dict[str, Any] | None = None
    catchup_rate: float | None = None
    storage_problem: str | None = None
    started_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)


Event = dict[str, Any]
Listener = Callable[[Event], None]


class StatusHub:
    """Holds the status and fans out each change as a numbered event.

    Events: {"type": "reading"|"batch"|"status", "seq": n, ...}. Listeners are plain
    callbacks on the event loop (the tray bridges its thread itself); subscribers get
    an asyncio queue each.
    """

    def __init__(self) -> None:
        self.status = Status()
        self._seq = 0
        self._queues: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Listener] = []

    @property
    def seq(self) -> int:
        """The number of the last event published."""
        return self._seq

    def snapshot(self) -> Event:
        """The whole status as one event, for a new subscriber."""
        return {"type": "snapshot", "seq": self._seq, "status": self.status.to_dict()}

    def update(self, **changes: Any) -> None:
        """Change status fields and publish the changed ones, if any changed."""
        changed = {k: v for k, v in changes.items() if getattr(self.status, k) != v}
        if not changed:
            return
        for key, value in changed.items():
            setattr(self.status, key, value)
        self.publish("status", changes=changed)

    def set_state(self, state: State, detail: str = "") -> bool:
        """Move to a new state; return True if it changed."""
        if self.status.state == state and self.status.detail == detail:
            return False
        since = self.status.state_since if self.status.state == state else time.time()
        self.update(state=state, detail=detail, state_since=since)
        return True

    def publish(self, kind: str, **payload: Any) -> None:
        """Number an event and hand it to every listener and subscriber."""
        self._seq += 1
        event: Event = {"type": kind, "seq": self._seq, **payload}
        for listener in list(self._listeners):
            listener(event)
        for q in self._queues:
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on every event; return a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @contextlib.contextmanager
    def _queue(self) -> Iterator[asyncio.Queue[Event]]:
        q: asyncio.Queue[Event] = asyncio.Queue(SUBSCRIBER_BUFFER)
        self._queues.add(q)
        try:
            yield q
        finally:
            self._queues.discard(q)

    async def subscribe(self) -> AsyncIterator[Event]:
        """Yield a snapshot, then every event after it, until the caller stops."""
        with self._queue() as q:
            yield self.snapshot()
            while True:
                yield await q.get()
