"""The sensor interface: a real device plugs in by implementing one async read."""

from __future__ import annotations

from dataclasses import dataclass
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
