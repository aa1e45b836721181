"""The sensor interface: a real device plugs in by implementing one async read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class SourceError(RuntimeError):
    """A read failed; the sensor loop logs it and tries again at the next tick."""


@dataclass(frozen=True)
class Sample:
    """One value read from a sensor, with its unit."""

    value: float
    unit: str


class Source(Protocol):
    """Anything that can be read on a cadence."""

    async def read(self) -> Sample:
        """Return the current value, or raise SourceError."""
        ...
