"""The typed status feed: one Status, the events that report its changes, and its subscribers.

Each field has one owner, which writes it through its own StatusHub method; nothing else
sets status fields:

- state, detail, state_since: agent.sender's delivery verdicts (`set_state`); while
  agent.control's pause is on (`set_paused`) they show "paused" instead.
- pending, sent_total, dropped_total, dead_total: the queue's own counts, `Store.counts()`,
  copied as they are (never computed) by whoever just changed the queue: the sensor
  (`add_reading`), the sender (`add_delivery`), Control after retry-dead and the app at
  start (`set_counts`).
- last_reading, and the "reading" event: agent.sensor (`add_reading`).
- invalid_total: agent.sensor (`refuse_value`).
- last_send_at, catchup_rate, and the "batch" event: agent.sender (`add_delivery`).
- last_error, last_error_at: agent.sender (`add_failure`).
- storage_problem: agent.app, once at start (`set_start_problem`); while the sensor cannot
  store new readings, its problem shows instead (`set_write_problem`).
- started_at: the hub, when it is created.
- the "config" event: agent.dashboard, after a save (`publish_config`).
- send round trips (no status field, handed to the send observers such as agent.metrics):
  agent.sender (`observe_send`).

With several sources (agent.lanes) each source has a StatusHub of its own, written by the
owners above; the agent's hub then holds their sum, written by agent.lanes alone
(`set_summary`, `set_state`, `set_start_problem`, `add_source_reading`, `add_source_batch`),
and `sources`, one entry per source (`set_source`, the "source" event).

Events encode to the JSON that web/static/app.js reads: {"type": ..., "seq": n, ...}.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import msgspec
from msgspec import UNSET, UnsetType

from agent.sources.base import SourceState

if TYPE_CHECKING:
    from agent.store import Counts

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


class LastReading(msgspec.Struct, kw_only=True):
    """A stored reading as the dashboard shows it."""

    seq: int
    datetime: str  # ISO 8601 UTC with milliseconds and a Z
    value: float
    unit: str


class SourceStatus(msgspec.Struct, kw_only=True):
    """One source as the dashboard lists it: the device, its input and its delivery."""

    device_id: str
    kind: str
    state: SourceState = SourceState.STARTING
    detail: str = ""
    errors_total: int = 0
    last_error: str | None = None
    last_reading: LastReading | None = None
    unit: str = ""
    pending: int = 0
    sent_total: int = 0
    delivery: State = State.STARTING


class Status(msgspec.Struct, kw_only=True):
    """Everything a user needs to see whether readings get through, and why not."""

    state: State = State.STARTING
    state_since: float = msgspec.field(default_factory=time.time)
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
    last_reading: LastReading | None = None
    catchup_rate: float | None = None
    storage_problem: str | None = None
    started_at: float = msgspec.field(default_factory=time.time)
    # one entry per source, in config order (one for the single `sensor`)
    sources: list[SourceStatus] = msgspec.field(default_factory=list)


class StatusChanges(msgspec.Struct, kw_only=True):
    """The fields of one status change; the ones left UNSET did not change (and are not sent)."""

    state: State | UnsetType = UNSET
    state_since: float | UnsetType = UNSET
    detail: str | UnsetType = UNSET
    pending: int | UnsetType = UNSET
    sent_total: int | UnsetType = UNSET
    dropped_total: int | UnsetType = UNSET
    dead_total: int | UnsetType = UNSET
    invalid_total: int | UnsetType = UNSET
    last_send_at: float | None | UnsetType = UNSET
    last_error: str | None | UnsetType = UNSET
    last_error_at: float | None | UnsetType = UNSET
    last_reading: LastReading | None | UnsetType = UNSET
    catchup_rate: float | None | UnsetType = UNSET
    storage_problem: str | None | UnsetType = UNSET


class Info(msgspec.Struct, kw_only=True):
    """The dashboard's fixed facts: what runs, and where its files are."""

    app: str
    version: str
    server_url: str
    device_id: str
    config_path: str
    queue_file: str
    data_dir: str
    logs_dir: str
    readings_per_min: int
    restart_needed: list[str]


class _Event(msgspec.Struct, kw_only=True, tag_field="type"):
    seq: int


class SnapshotEvent(_Event, kw_only=True, tag="snapshot"):
    """The whole status, first thing for every subscriber."""

    status: Status


class StatusEvent(_Event, kw_only=True, tag="status"):
    """Some status fields changed."""

    changes: StatusChanges


class ReadingEvent(_Event, kw_only=True, tag="reading", omit_defaults=True):
    """The sensor stored a reading."""

    reading: LastReading
    pending: int
    # the source's device id; "" (left out of the JSON) from a source's own hub
    device_id: str = ""


class BatchEvent(_Event, kw_only=True, tag="batch"):
    """The collector acknowledged a batch."""

    sent: int
    rejected: int
    pending: int


class ConfigEvent(_Event, kw_only=True, tag="config"):
    """The settings were saved; the page's fixed facts may have changed."""

    info: Info


class SourceEvent(_Event, kw_only=True, tag="source"):
    """One source's entry changed; it replaces status.sources[index]."""

    index: int
    source: SourceStatus


Event = SnapshotEvent | StatusEvent | ReadingEvent | BatchEvent | ConfigEvent | SourceEvent
Listener = Callable[[Event], None]
SendObserver = Callable[[float], None]


class StatusHub:
    """Holds the status and fans out each change as a numbered event.

    Listeners are plain callbacks on the event loop (the tray bridges its thread itself);
    subscribers get an asyncio queue each. Call on the event loop's thread only.
    """

    def __init__(self) -> None:
        self.status = Status()
        self._seq = 0
        self._queues: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Listener] = []
        # the sender's verdict, shown unless paused: (state, detail, since)
        self._delivery = (self.status.state, self.status.detail, self.status.state_since)
        self._paused_since: float | None = None
        self._start_problem: str | None = None
        self._write_problem: str | None = None
        self._send_observers: list[SendObserver] = []

    @property
    def seq(self) -> int:
        """The number of the last event published."""
        return self._seq

    @property
    def is_paused(self) -> bool:
        """True while the state shows Control's pause."""
        return self._paused_since is not None

    def snapshot(self) -> SnapshotEvent:
        """The whole status as one event, for a new subscriber."""
        status = msgspec.structs.replace(self.status, sources=list(self.status.sources))
        return SnapshotEvent(seq=self._seq, status=status)

    # --- the owners' writes --------------------------------------------------------------

    def set_state(self, state: State, detail: str = "") -> bool:
        """The sender's delivery verdict; return True if it changed."""
        current, current_detail, since = self._delivery
        if (current, current_detail) == (state, detail):
            return False
        self._delivery = (state, detail, since if current == state else time.time())
        self._show_state()
        return True

    def set_paused(self, paused: bool) -> bool:
        """Control's pause: show "paused" over the delivery state; return True if it changed."""
        if paused == self.is_paused:
            return False
        now = time.time()
        self._paused_since = now if paused else None
        if not paused:
            # resuming starts delivery afresh: "sending" until the sender's next verdict
            self._delivery = (State.SENDING, "", now)
        self._show_state()
        return True

    def set_counts(self, counts: Counts) -> None:
        """The queue's counts, as the store gave them."""
        self._apply(_counts(counts))

    def add_reading(self, reading: LastReading, counts: Counts) -> None:
        """The sensor stored `reading`; `counts` are the queue's after it."""
        changes = _counts(counts)
        changes.last_reading = reading
        self._apply(changes)
        self._publish(ReadingEvent(seq=self._next(), reading=reading, pending=counts.pending))

    def refuse_value(self) -> None:
        """The sensor refused a value that cannot be sent (NaN, ±Inf)."""
        self._apply(StatusChanges(invalid_total=self.status.invalid_total + 1))

    def set_write_problem(self, problem: str | None) -> None:
        """The sensor cannot store new readings (or can again, with None)."""
        self._write_problem = problem
        self._show_storage_problem()

    def set_start_problem(self, problem: str | None) -> None:
        """What went wrong with the queue or log files at start (None: nothing)."""
        self._start_problem = problem
        self._show_storage_problem()

    def add_delivery(
        self, counts: Counts, at: float, catchup_rate: float | None, sent: int, rejected: int
    ) -> None:
        """The sender had a batch acknowledged: `sent` delivered, `rejected` dead-lettered."""
        changes = _counts(counts)
        changes.last_send_at = at
        changes.catchup_rate = catchup_rate
        self._apply(changes)
        self._publish(
            BatchEvent(seq=self._next(), sent=sent, rejected=rejected, pending=counts.pending)
        )

    def add_failure(self, error: str, at: float) -> None:
        """The sender's last attempt failed with `error`."""
        self._apply(StatusChanges(last_error=error, last_error_at=at, catchup_rate=None))

    def publish_config(self, info: Info) -> None:
        """The dashboard saved the settings: tell every page the new facts."""
        self._publish(ConfigEvent(seq=self._next(), info=info))

    def set_summary(self, changes: StatusChanges) -> None:
        """The sum over the sources (agent.lanes): counts, last reading, sends and errors."""
        self._apply(changes)

    def add_source_reading(self, device_id: str, reading: LastReading, pending: int) -> None:
        """A source stored `reading`; `pending` is the sum over every source's queue."""
        self._publish(
            ReadingEvent(seq=self._next(), reading=reading, pending=pending, device_id=device_id)
        )

    def add_source_batch(self, sent: int, rejected: int, pending: int) -> None:
        """A source's batch was acknowledged; `pending` is the sum over every queue."""
        self._publish(BatchEvent(seq=self._next(), sent=sent, rejected=rejected, pending=pending))

    def set_source(self, index: int, source: SourceStatus) -> None:
        """The entry of the source at `index` (config order); published if it changed."""
        entries = self.status.sources
        if index < len(entries):
            if entries[index] == source:
                return
            entries[index] = source
        else:
            entries.append(source)
        self._publish(SourceEvent(seq=self._next(), index=index, source=source))

    def observe_send(self, seconds: float) -> None:
        """The sender's batch request took `seconds` until its answer (any answer)."""
        for observer in list(self._send_observers):
            observer(seconds)

    # --- subscribers ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on every event; return a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add_send_observer(self, observer: SendObserver) -> Callable[[], None]:
        """Call `observer` with each send's duration; return a function that removes it."""
        self._send_observers.append(observer)
        return lambda: self._send_observers.remove(observer)

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

    # --- inside --------------------------------------------------------------------------

    def _show_state(self) -> None:
        if self._paused_since is not None:
            state, detail, since = State.PAUSED, "", self._paused_since
        else:
            state, detail, since = self._delivery
        self._apply(StatusChanges(state=state, detail=detail, state_since=since))

    def _show_storage_problem(self) -> None:
        self._apply(StatusChanges(storage_problem=self._write_problem or self._start_problem))

    def _apply(self, changes: StatusChanges) -> None:
        """Set the fields that differ and publish them, if any."""
        changed = StatusChanges()
        for name in changes.__struct_fields__:
            value = getattr(changes, name)
            if value is not UNSET and getattr(self.status, name) != value:
                setattr(self.status, name, value)
                setattr(changed, name, value)
        if changed != StatusChanges():
            self._publish(StatusEvent(seq=self._next(), changes=changed))

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _publish(self, event: Event) -> None:
        """Hand an event (already numbered) to every listener and subscriber."""
        for listener in list(self._listeners):
            listener(event)
        for q in self._queues:
            if q.full():
                q.get_nowait()
            q.put_nowait(event)


def _counts(counts: Counts) -> StatusChanges:
    return StatusChanges(
        pending=counts.pending,
        sent_total=counts.sent,
        dropped_total=counts.dropped,
        dead_total=counts.dead,
    )
