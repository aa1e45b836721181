"""Simulated home devices with realistic values: a smart bulb, a water heater, a smart mirror.

Each source gives one numeric stream, one Sample per read, and is seedable like
FakeHeartRate. The bulb and the water heater advance by `step_s` simulated seconds per
read (a minute by default, so their slow cycles show within an hour of polling); the
mirror follows the wall clock, which tests inject.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable
from typing import Literal

from agent.sources.base import Sample

WallClock = Callable[[], dt.datetime]
STEP_S = 60.0

BULB_RATED_LOW, BULB_RATED_HIGH = 8.5, 9.5
BULB_ON_MEAN_S, BULB_OFF_MEAN_S = 45 * 60.0, 2 * 3600.0
# nobody flicks a light on for seconds: every run lasts at least this long
BULB_MIN_RUN_S = 5 * 60.0


class Bulb:
    """A 9 W LED smart bulb on a random but plausible schedule, as its smart plug reports it.

    It stays on for about 45 minutes and off for about two hours at a time (exponential
    run lengths, never under 5 minutes). measure="power" gives watts: 0 when off, the
    bulb's own rating of 8.5-9.5 W with a little noise when on; measure="state" gives
    1/0 for on/off.
    """

    def __init__(
        self,
        measure: Literal["power", "state"] = "power",
        seed: int | None = None,
        step_s: float = STEP_S,
    ) -> None:
        self._measure = measure
        self._rng = random.Random(seed)
        self._step_s = step_s
        self._rated = self._rng.uniform(BULB_RATED_LOW + 0.2, BULB_RATED_HIGH - 0.2)
        # noise draws apart, so a power and a state bulb with one seed share a schedule
        self._noise = random.Random(self._rng.getrandbits(64))
        self.is_on = self._rng.random() < 0.3
        self._left_s = self._run_length()

    def _run_length(self) -> float:
        mean = BULB_ON_MEAN_S if self.is_on else BULB_OFF_MEAN_S
        return BULB_MIN_RUN_S + self._rng.expovariate(1.0 / (mean - BULB_MIN_RUN_S))

    def step(self) -> None:
        """Advance the schedule by one step; switch when the current run is over."""
        self._left_s -= self._step_s
        if self._left_s <= 0:
            self.is_on = not self.is_on
            self._left_s = self._run_length()

    def power_w(self) -> float:
        """The power drawn now, in watts, as a plug meter reports it (two decimals)."""
        if not self.is_on:
            return 0.0
        noisy = self._rated + self._noise.gauss(0, 0.05)
        return round(min(max(noisy, BULB_RATED_LOW), BULB_RATED_HIGH), 2)

    async def read(self) -> Sample:
        """Advance one step and return the power in W, or the state as 1/0."""
        self.step()
        if self._measure == "state":
            return Sample(1.0 if self.is_on else 0.0, "on")
        return Sample(self.power_w(), "W")


TANK_L = 200.0
ELEMENT_W = 3000.0
# J/K of 200 l of water
TANK_HEAT_CAPACITY = TANK_L * 4186.0
# W/K through the insulation: about 1.5 kWh a day lost at 55 °C in a 20 °C room
STANDBY_LOSS_W_PER_K = 1.8
ROOM_C, INLET_C = 20.0, 10.0
HEATER_LOW_C, HEATER_HIGH_C = 50.0, 60.0
HEATER_MIN_C, HEATER_MAX_C = INLET_C, 75.0
DRAWS_PER_HOUR = 2 / 24
DRAW_L_PER_MIN = 8.0


class WaterHeater:
    """A 200 l electric water heater with a 3 kW element and a thermostat, in °C.

    Standby loss cools it slowly (a few tenths of a degree an hour). When it falls below
    the low set point the element heats it at about 13 °C an hour up to the high set
    point, then switches off (hysteresis). About twice a day a shower draws hot water
    for 4-12 minutes at 8 l/min and cold water from the inlet replaces it, which drops
    the temperature by 5-20 °C. Values are rounded to 0.1 °C, as a probe reports them.
    """

    def __init__(
        self,
        seed: int | None = None,
        step_s: float = STEP_S,
        low_c: float = HEATER_LOW_C,
        high_c: float = HEATER_HIGH_C,
        draws_per_hour: float = DRAWS_PER_HOUR,
    ) -> None:
        self._rng = random.Random(seed)
        self._step_s = step_s
        self.low_c, self.high_c = low_c, high_c
        self._draws_per_hour = draws_per_hour
        self.temperature_c = self._rng.uniform(low_c, high_c)
        self.is_heating = False
        self.is_drawing = False
        self._draw_left_s = 0.0

    def step(self) -> None:
        """Advance the tank by one step: losses, draws, then the thermostat."""
        rng, dt_s = self._rng, self._step_s
        power_w = -STANDBY_LOSS_W_PER_K * (self.temperature_c - ROOM_C)
        if self.is_heating:
            power_w += ELEMENT_W
        self.temperature_c += power_w * dt_s / TANK_HEAT_CAPACITY
        if not self.is_drawing and rng.random() < self._draws_per_hour * dt_s / 3600:
            self.is_drawing, self._draw_left_s = True, rng.uniform(4, 12) * 60
        if self.is_drawing:
            drawn_s = min(dt_s, self._draw_left_s)
            # the drawn water is replaced by inlet water, mixed into the tank
            kept = math.exp(-DRAW_L_PER_MIN / 60 * drawn_s / TANK_L)
            self.temperature_c = INLET_C + (self.temperature_c - INLET_C) * kept
            self._draw_left_s -= drawn_s
            self.is_drawing = self._draw_left_s > 0
        if self.temperature_c < self.low_c:
            self.is_heating = True
        elif self.temperature_c >= self.high_c:
            self.is_heating = False
        self.temperature_c = min(max(self.temperature_c, HEATER_MIN_C), HEATER_MAX_C)

    def next_value(self) -> float:
        """Advance one step and return the probe's reading in °C."""
        self.step()
        return round(self.temperature_c + self._rng.gauss(0, 0.05), 1)

    async def read(self) -> Sample:
        """The water temperature in °C."""
        return Sample(self.next_value(), "°C")


def local_now() -> dt.datetime:
    """The wall clock in the local time zone."""
    return dt.datetime.now().astimezone()


# indoor daylight by a window at noon on a clear day, and the bathroom light when on
DAYLIGHT_PEAK_LX = 600.0
SUNRISE_H, SUNSET_H = 6.5, 19.5
LAMP_LX = 250.0
NIGHT_LX = 1.0
# people stand at the mirror mornings and evenings, rarely in between
BUSY_HOURS = ((6.0, 9.0), (19.0, 23.0))
VISITS_PER_HOUR_BUSY, VISITS_PER_HOUR_QUIET = 4.0, 0.3
VISIT_MIN_S, VISIT_MAX_S = 20.0, 5 * 60.0
# a long pause (suspend, a slow poll) must not count as hours of presence
MAX_ELAPSED_S = 600.0


def daylight_lx(hour: float, clouds: float) -> float:
    """Indoor daylight at `hour` (local, 0-24) under a cloud factor of 0.3-1."""
    if not SUNRISE_H < hour < SUNSET_H:
        return 0.0
    sun = math.sin(math.pi * (hour - SUNRISE_H) / (SUNSET_H - SUNRISE_H))
    return DAYLIGHT_PEAK_LX * clouds * math.pow(sun, 1.5)


def _hour(when: dt.datetime) -> float:
    return when.hour + when.minute / 60 + when.second / 3600


class Mirror:
    """A smart bathroom mirror's sensors: presence in front of it, and ambient light in lux.

    Presence comes in short visits (20 s to 5 min), several an hour in the morning
    (6-9 h) and the evening (19-23 h), rarely otherwise. The light follows the day by
    the wall clock: about 0-600 lx of daylight under slowly drifting clouds, near dark at
    night, plus the bathroom lamp (+250 lx) while someone is there. measure="presence"
    gives 1/0, measure="lux" the light rounded to 1 lx. Time between reads comes from
    `clock`, so the poll interval does not change the model; two mirrors with the same
    seed and clock see the same visits.
    """

    def __init__(
        self,
        measure: Literal["presence", "lux"] = "presence",
        seed: int | None = None,
        clock: WallClock = local_now,
    ) -> None:
        self._measure = measure
        self._rng = random.Random(seed)
        self._clock = clock
        self._last: dt.datetime | None = None
        self.is_present = False
        self._visit_left_s = 0.0
        self._clouds = self._rng.uniform(0.5, 1.0)
        # noise draws apart, so a presence and a lux mirror with one seed share the visits
        self._noise = random.Random(self._rng.getrandbits(64))

    def step(self, now: dt.datetime) -> None:
        """Advance presence and clouds to `now`."""
        rng = self._rng
        elapsed = 0.0 if self._last is None else (now - self._last).total_seconds()
        elapsed = min(max(elapsed, 0.0), MAX_ELAPSED_S)
        self._last = now
        if self.is_present:
            self._visit_left_s -= elapsed
            self.is_present = self._visit_left_s > 0
        else:
            hour = _hour(now)
            busy = any(start <= hour < end for start, end in BUSY_HOURS)
            rate = VISITS_PER_HOUR_BUSY if busy else VISITS_PER_HOUR_QUIET
            if rng.random() < 1 - math.exp(-rate * elapsed / 3600):
                self.is_present = True
                self._visit_left_s = rng.uniform(VISIT_MIN_S, VISIT_MAX_S)
        # clouds drift over minutes, pulled back towards a mean of 0.75
        pull = (0.75 - self._clouds) * elapsed / 3600
        drift = rng.gauss(0, 0.02 * math.sqrt(elapsed / 60))
        self._clouds = min(max(self._clouds + pull + drift, 0.3), 1.0)

    def lux(self, now: dt.datetime) -> float:
        """The ambient light at `now`, in lux, rounded as the sensor reports it."""
        light = NIGHT_LX + daylight_lx(_hour(now), self._clouds)
        if self.is_present:
            light += LAMP_LX
        return float(round(max(0.0, light * (1 + self._noise.gauss(0, 0.03)))))

    async def read(self) -> Sample:
        """Advance to the clock's time and return presence (1/0) or the light in lux."""
        now = self._clock()
        self.step(now)
        if self._measure == "presence":
            return Sample(1.0 if self.is_present else 0.0, "presence")
        return Sample(self.lux(now), "lx")
