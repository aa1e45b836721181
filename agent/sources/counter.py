"""A source whose values are 1, 2, 3…: the reliability suite's way to check identity.

Its count commits with each reading, so it continues after a restart, and it advances
only once a reading is committed: the values the agent stores are 1..N without a gap.
"""

from __future__ import annotations

from agent.sources.base import Sample

UNIT = "count"


class Counter:
    """Counts up by one per committed reading."""

    def __init__(self) -> None:
        self._last = 0

    def restore(self, state: str | None) -> None:
        """Continue after the last committed value."""
        self._last = int(state) if state else 0

    async def read(self) -> Sample:
        """The next value; it becomes the last one when the reading commits."""
        value = self._last + 1
        return Sample(float(value), UNIT, state=str(value))
