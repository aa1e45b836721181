"""The local hub's lanes: each source with its own queue file, sender and status, and their sum.

A lane is one local device: its source, the queue file its readings wait in, the Sender
that drains that file under the device's own id, and a StatusHub of its own that the
sensor and the sender write as they always did. `Totals` listens to every lane's hub and
writes the agent's hub: counts summed, the most urgent delivery state, the newest reading,
and one `sources` entry per lane. So each device has its own stream and exactly-once
guarantee, and a slow or broken one never delays the others.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec

from agent.config import Config, LoadedConfig, MqttSourceEntry, SourceEntry
from agent.metrics import SourceCount
from agent.sender import Sender
from agent.sensor import run_push, run_sensor, run_supervised
from agent.sources import PushSource, Source, SourceHealth, create_source, create_source_for
from agent.status import (
    BatchEvent,
    Event,
    LastReading,
    ReadingEvent,
    SourceStatus,
    State,
    StatusChanges,
    StatusHub,
)
from agent.store import Store

logger = logging.getLogger(__name__)

# the agent's state is the most urgent of its senders' states: first in this list wins
URGENCY = (
    State.UNAUTHORIZED,
    State.REJECTED,
    State.OFFLINE,
    State.RETRYING,
    State.CATCHING_UP,
    State.STARTING,
    State.SENDING,
    State.PAUSED,
)


@dataclass(frozen=True)
class LaneSpec:
    """What one lane runs, from the config alone: `entry` None is the legacy `sensor`."""

    device_id: str  # "" for the legacy sensor: the queue file's kept id, or device_id
    kind: str
    path: Path
    entry: SourceEntry | None = None


def lane_specs(loaded: LoadedConfig) -> list[LaneSpec]:
    """One spec per source in config order; without `sources`, one for `sensor`."""
    config = loaded.config
    if not config.sources:
        return [LaneSpec("", config.sensor.kind, loaded.storage_path)]
    return [
        LaneSpec(e.device_id, str(e.__struct_config__.tag), loaded.queue_path(e.device_id), e)
        for e in config.sources
    ]


def config_for(get_config: Callable[[], Config], device_id: str) -> Callable[[], Config]:
    """`get_config` as one source's sender sees it: the same, but under its device id."""
    if not device_id:
        return get_config
    cache: list[tuple[Config, Config]] = []

    def get() -> Config:
        current = get_config()
        if not cache or cache[0][0] is not current:
            cache[:] = [(current, msgspec.structs.replace(current, device_id=device_id))]
        return cache[0][1]

    return get


@dataclass(eq=False)
class Lane:
    """One source, its queue, its sender and its status."""

    spec: LaneSpec
    source: Source | PushSource
    store: Store
    hub: StatusHub
    sender: Sender
    get_config: Callable[[], Config]
    health: SourceHealth = field(default_factory=SourceHealth)
    readings_total: int = 0

    @property
    def device_id(self) -> str:
        """The id this lane's readings are sent under."""
        return self.store.device_for(self.get_config().device_id)

    @property
    def unit(self) -> str:
        """The unit known before any reading (an MQTT source's), else the last reading's."""
        if isinstance(self.spec.entry, MqttSourceEntry):
            return self.spec.entry.unit
        last = self.hub.status.last_reading
        return last.unit if last is not None else ""

    def run(self) -> Coroutine[Any, Any, None]:
        """The source's task: read or listen, store, restart after a failure."""
        source, store, hub, health = self.source, self.store, self.hub, self.health
        name = self.spec.device_id or self.spec.kind
        if hasattr(source, "run"):
            push = cast(PushSource, source)
            return run_supervised(name, lambda: run_push(push, store, hub, health), health)
        polled = source
        entry = self.spec.entry
        if entry is None:
            interval = lambda: self.get_config().sensor.interval_s  # noqa: E731
        else:
            fixed = getattr(entry, "interval_s", 1.0)
            interval = lambda: fixed  # noqa: E731
        return run_supervised(
            name, lambda: run_sensor(polled, store, hub, interval, health=health), health
        )

    def status(self) -> SourceStatus:
        """This lane's entry in the agent's `sources` list."""
        status, health = self.hub.status, self.health
        return SourceStatus(
            device_id=self.device_id,
            kind=self.spec.kind,
            state=health.state,
            detail=health.detail,
            errors_total=health.errors_total,
            last_error=health.last_error,
            last_reading=status.last_reading,
            unit=self.unit,
            pending=status.pending,
            sent_total=status.sent_total,
            delivery=status.state,
        )


def create_lane_source(spec: LaneSpec, config: Config) -> Source | PushSource:
    """The source a spec names: the legacy sensor's, or a `sources` entry's."""
    if spec.entry is None:
        return create_source(config.sensor)
    return create_source_for(spec.entry, config.mqtt)


def _newest(readings: Sequence[LastReading | None]) -> LastReading | None:
    # the datetimes are ISO 8601 UTC of one shape: as text they sort by time
    known = [r for r in readings if r is not None]
    return max(known, key=lambda r: r.datetime) if known else None


class Totals:
    """Writes the agent's hub from its lanes' hubs; call on the event loop's thread only."""

    def __init__(self, top: StatusHub, lanes: Sequence[Lane], start_problem: str | None = None):
        self._top = top
        self._lanes = list(lanes)
        self._start_problem = start_problem
        self._removers: list[Callable[[], None]] = []
        for i, lane in enumerate(self._lanes):
            self._removers.append(lane.hub.add_listener(functools.partial(self._on_event, i)))
            self._removers.append(lane.hub.add_send_observer(top.observe_send))
            lane.health.on_change = functools.partial(self._show_source, i)
        self._sum()
        for i in range(len(self._lanes)):
            self._show_source(i)

    def close(self) -> None:
        """Stop listening to the lanes."""
        for remove in self._removers:
            remove()
        self._removers.clear()
        for lane in self._lanes:
            lane.health.on_change = None

    def counts(self) -> list[SourceCount]:
        """Readings and errors per source since the start, for the metrics."""
        return [
            SourceCount(lane.device_id, lane.readings_total, lane.health.errors_total)
            for lane in self._lanes
        ]

    def _on_event(self, index: int, event: Event) -> None:
        lane = self._lanes[index]
        if isinstance(event, ReadingEvent):
            lane.readings_total += 1
        self._sum()
        pending = self._top.status.pending
        if isinstance(event, ReadingEvent):
            self._top.add_source_reading(lane.device_id, event.reading, pending)
        elif isinstance(event, BatchEvent):
            self._top.add_source_batch(event.sent, event.rejected, pending)
        self._show_source(index)

    def _show_source(self, index: int) -> None:
        self._top.set_source(index, self._lanes[index].status())

    def _named(self, lane: Lane, text: str) -> str:
        return text if len(self._lanes) == 1 else f"{lane.device_id}: {text}"

    def _sum(self) -> None:
        statuses = [lane.hub.status for lane in self._lanes]
        with_error = [s for s in statuses if s.last_error_at is not None]
        last_failed = max(with_error, key=lambda s: s.last_error_at or 0.0, default=None)
        rates = [s.catchup_rate for s in statuses if s.catchup_rate is not None]
        sends = [s.last_send_at for s in statuses if s.last_send_at is not None]
        self._top.set_summary(
            StatusChanges(
                pending=sum(s.pending for s in statuses),
                sent_total=sum(s.sent_total for s in statuses),
                dropped_total=sum(s.dropped_total for s in statuses),
                dead_total=sum(s.dead_total for s in statuses),
                invalid_total=sum(s.invalid_total for s in statuses),
                last_reading=_newest([s.last_reading for s in statuses]),
                last_send_at=max(sends) if sends else None,
                catchup_rate=sum(rates) if rates else None,
                last_error=last_failed.last_error if last_failed else None,
                last_error_at=last_failed.last_error_at if last_failed else None,
            )
        )
        urgent = min(self._lanes, key=lambda lane: URGENCY.index(lane.hub.status.state))
        detail = urgent.hub.status.detail
        self._top.set_state(urgent.hub.status.state, self._named(urgent, detail) if detail else "")
        problems = [self._start_problem] if self._start_problem else []
        problems += [
            self._named(lane, lane.hub.status.storage_problem)
            for lane in self._lanes
            if lane.hub.status.storage_problem
        ]
        self._top.set_start_problem("; ".join(problems) or None)
