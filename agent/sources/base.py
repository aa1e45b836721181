"""The source interfaces: a polled device implements one async read, a pushing one a run loop."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class SourceError(RuntimeError):
    """A read failed; the sensor loop logs it and tries again at the next tick."""


@dataclass(frozen=True)
class Sample:
    """One value read from a sensor, with its unit."""

    value: float
    unit: str
    # the source's state after this sample; stored with the reading in one transaction
    state: str | None = None


class Source(Protocol):
    """Anything that can be read on a cadence."""

    async def read(self) -> Sample:
        """Return the current value, or raise SourceError."""
        ...


@runtime_checkable
class StatefulSource(Protocol):
    """A source that continues where it left off: its state commits with each reading."""

    def restore(self, state: str | None) -> None:
        """Continue from the state of the last committed reading (None: from the start)."""
        ...


class SourceState(enum.StrEnum):
    """Where a source stands, in the words the dashboard and the tray show."""

    STARTING = "starting"
    OK = "ok"
    RECONNECTING = "reconnecting"
    ERROR = "error"


@dataclass
class SourceHealth:
    """What one source reports about itself: its state and its refused inputs.

    The source writes it through these methods alone; `on_change` (set by whoever shows
    it) is called after every change, on the event loop.
    """

    state: SourceState = SourceState.STARTING
    detail: str = ""
    errors_total: int = 0
    last_error: str | None = None
    on_change: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def set_state(self, state: SourceState, detail: str = "") -> None:
        """A new state (connected, reconnecting after a lost broker…), with a reason."""
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        self._changed()

    def count_error(self, error: str) -> None:
        """One input refused (a payload that is not a number, a failed read)."""
        self.errors_total += 1
        self.last_error = error
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


Emit = Callable[[Sample], Awaitable[None]]


class PushSource(Protocol):
    """A source that delivers samples when they come (an MQTT subscription).

    `run` awaits `emit` for each sample, which returns once the reading is committed, and
    runs until it is cancelled: it reconnects on its own and reports through `health`.
    """

    async def run(self, emit: Emit, health: SourceHealth) -> None:
        """Deliver samples until cancelled."""
        ...
