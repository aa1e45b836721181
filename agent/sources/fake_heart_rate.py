"""A fake heart-rate monitor with realistic values, seedable for tests."""

from __future__ import annotations

import random

from agent.sources.base import Sample

LOW, HIGH = 40, 200
REST_LOW, REST_HIGH = 60.0, 80.0
RAMP_MAX = 6.0


class FakeHeartRate:
    """Resting 60-80 bpm as a slow random walk, with occasional bursts of exertion.

    A burst ramps up towards a peak of about 110-150 bpm, holds, then recovers; values
    are clamped to 40-200 and rounded to whole beats, as real monitors report them.
    """

    def __init__(self, seed: int | None = None, burst_chance: float = 0.01):
        self._rng = random.Random(seed)
        self._rest = self._rng.uniform(REST_LOW, REST_HIGH)
        self._extra = 0.0
        self._target_extra = 0.0
        self._burst_left = 0
        self._burst_chance = burst_chance

    def next_value(self) -> int:
        """Advance the model by one tick and return the heart rate in bpm."""
        rng = self._rng
        self._rest += rng.gauss(0, 0.6)
        # pull the resting rate back into its band, so the walk stays plausible
        self._rest += (70.0 - self._rest) * 0.02
        self._rest = min(max(self._rest, REST_LOW - 5), REST_HIGH + 5)
        if self._burst_left == 0 and rng.random() < self._burst_chance:
            self._burst_left = rng.randint(20, 80)
            self._target_extra = rng.uniform(110, 150) - self._rest
        if self._burst_left > 0:
            self._burst_left -= 1
            if self._burst_left == 0:
                self._target_extra = 0.0
        # a heart speeds up over several beats: cap the ramp so no tick jumps > 15 bpm
        step = (self._target_extra - self._extra) * 0.15
        self._extra += min(max(step, -RAMP_MAX), RAMP_MAX)
        value = self._rest + self._extra + rng.gauss(0, 1.0)
        return int(round(min(max(value, LOW), HIGH)))

    async def read(self) -> Sample:
        """Return the next heart rate."""
        return Sample(self.next_value(), "bpm")
