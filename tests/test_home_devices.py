"""The simulated home devices: plausible values, repeatable seeds, real cycles."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Literal

import pytest

from agent.sources.base import Sample
from agent.sources.home import (
    BULB_RATED_HIGH,
    BULB_RATED_LOW,
    HEATER_HIGH_C,
    HEATER_LOW_C,
    Bulb,
    Mirror,
    WaterHeater,
)

SEEDS = [0, 1, 7, 2026]
# two weeks of a bulb or a heater at one simulated minute per read
N = 14 * 24 * 60


async def reads(source: Bulb | WaterHeater | Mirror, n: int) -> list[Sample]:
    return [await source.read() for _ in range(n)]


def runs(flags: list[bool]) -> list[tuple[bool, int]]:
    """The lengths of the runs of equal values, in order."""
    out: list[tuple[bool, int]] = []
    for flag in flags:
        if out and out[-1][0] == flag:
            out[-1] = (flag, out[-1][1] + 1)
        else:
            out.append((flag, 1))
    return out


def stepping_clock(
    start: dt.datetime, step_s: float = 3.0
) -> tuple[Callable[[], dt.datetime], list[dt.datetime]]:
    """A wall clock that moves on by `step_s` at each call, and the times it gave."""
    given: list[dt.datetime] = []

    def clock() -> dt.datetime:
        given.append(start + dt.timedelta(seconds=step_s * len(given)))
        return given[-1]

    return clock, given


MIDNIGHT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


# --- bulb ---


@pytest.mark.parametrize("seed", SEEDS)
async def test_bulb_power_is_off_or_a_9_w_led(seed: int) -> None:
    samples = await reads(Bulb(seed=seed), N)
    assert {s.unit for s in samples} == {"W"}
    on = [s.value for s in samples if s.value != 0.0]
    assert on, "the bulb never came on"
    assert len(on) < len(samples), "the bulb never went off"
    assert all(BULB_RATED_LOW <= v <= BULB_RATED_HIGH for v in on)
    # a real bulb's draw wobbles a little around its own rating
    assert max(on) - min(on) < 0.6
    assert len(set(on)) > 5


@pytest.mark.parametrize("seed", SEEDS)
async def test_bulb_switches_both_ways_in_long_runs(seed: int) -> None:
    samples = await reads(Bulb(measure="state", seed=seed), N)
    assert {s.unit for s in samples} == {"on"}
    assert {s.value for s in samples} == {0.0, 1.0}
    lengths = runs([s.value == 1.0 for s in samples])
    switches = len(lengths) - 1
    # about 45 min on and 2 h off: some 100 switches in two weeks, surely more than 20
    assert switches > 20
    # every run but the cut first and last lasts at least five minutes: no flicker
    assert min(length for _, length in lengths[1:-1]) >= 5
    on_share = sum(s.value for s in samples) / len(samples)
    assert 0.1 < on_share < 0.5


async def test_bulb_power_and_state_with_one_seed_share_the_schedule() -> None:
    power = await reads(Bulb("power", seed=3), 2000)
    state = await reads(Bulb("state", seed=3), 2000)
    assert [p.value > 0 for p in power] == [s.value == 1.0 for s in state]


@pytest.mark.parametrize("measure", ["power", "state"])
async def test_bulb_seed_repeats(measure: Literal["power", "state"]) -> None:
    first = await reads(Bulb(measure, seed=42), 3000)
    assert first == await reads(Bulb(measure, seed=42), 3000)
    assert first != await reads(Bulb(measure, seed=43), 3000)


# --- water heater ---


@pytest.mark.parametrize("seed", SEEDS)
async def test_water_heater_stays_plausible(seed: int) -> None:
    samples = await reads(WaterHeater(seed=seed), N)
    values = [s.value for s in samples]
    assert {s.unit for s in samples} == {"°C"}
    assert min(values) > 25.0
    # the thermostat cuts off at the high set point; one step and the noise overshoot it
    assert max(values) <= HEATER_HIGH_C + 0.5
    assert all(round(v, 1) == v for v in values)


@pytest.mark.parametrize("seed", SEEDS)
def test_water_heater_cycles_between_its_set_points(seed: int) -> None:
    heater = WaterHeater(seed=seed)
    values, heating = [], []
    for _ in range(N):
        values.append(heater.next_value())
        heating.append(heater.is_heating)
    cycles = [length for on, length in runs(heating) if on]
    assert len(cycles) >= 5, "the element rarely came on"
    for i, (was, now) in enumerate(zip(heating, heating[1:], strict=False), start=1):
        if now and not was:
            # switched on below the low set point…
            assert values[i] < HEATER_LOW_C + 0.2
        if was and not now:
            # …and off at the high one
            assert values[i] >= HEATER_HIGH_C - 0.3
    rises = sum(b > a for a, b in zip(values, values[1:], strict=False))
    falls = sum(b < a for a, b in zip(values, values[1:], strict=False))
    assert rises > N / 20
    assert falls > N / 5


def test_water_heater_heats_at_a_realistic_rate() -> None:
    heater = WaterHeater(seed=5, draws_per_hour=0.0)
    heater.temperature_c = HEATER_LOW_C - 0.5
    heater.step()
    assert heater.is_heating
    start = heater.temperature_c
    for _ in range(60):
        heater.step()
    # a 3 kW element warms 200 l by some 13 °C an hour
    assert 10.0 < heater.temperature_c - start < 15.0


def test_water_heater_cools_slowly_without_draws() -> None:
    heater = WaterHeater(seed=5, draws_per_hour=0.0)
    heater.temperature_c, heater.is_heating = HEATER_HIGH_C, False
    for _ in range(60):
        heater.step()
    assert 0.1 < HEATER_HIGH_C - heater.temperature_c < 1.0
    assert not heater.is_heating


def test_water_heater_drops_with_a_shower() -> None:
    heater = WaterHeater(seed=11, draws_per_hour=0.5)
    drops = []
    for _ in range(N):
        before = heater.temperature_c
        heater.step()
        if heater.is_drawing:
            drops.append(before - heater.temperature_c)
    assert drops, "no shower in two weeks"
    # a minute of 8 l/min out of 200 l takes about 2 % of the way to the inlet's 10 °C
    assert 0.5 < max(drops) < 3.0


async def test_water_heater_seed_repeats() -> None:
    first = await reads(WaterHeater(seed=42), 3000)
    assert first == await reads(WaterHeater(seed=42), 3000)
    assert first != await reads(WaterHeater(seed=43), 3000)


# --- mirror ---


async def day_of(measure: Literal["presence", "lux"], seed: int) -> list[Sample]:
    """A simulated day, read every 3 s from midnight on."""
    clock, _ = stepping_clock(MIDNIGHT)
    return await reads(Mirror(measure, seed=seed, clock=clock), 24 * 1200)


@pytest.mark.parametrize("seed", SEEDS)
async def test_mirror_presence_comes_in_short_visits_mornings_and_evenings(seed: int) -> None:
    samples = await day_of("presence", seed)
    assert {s.unit for s in samples} == {"presence"}
    assert {s.value for s in samples} == {0.0, 1.0}
    visits = [length for present, length in runs([s.value == 1.0 for s in samples]) if present]
    assert len(visits) >= 5
    # at most five minutes each, read every 3 s
    assert max(visits) <= 100 + 1
    per_hour = [sum(s.value for s in samples[h * 1200 : (h + 1) * 1200]) for h in range(24)]
    busy = sum(per_hour[6:9]) + sum(per_hour[19:23])
    assert busy > sum(per_hour) / 2


@pytest.mark.parametrize("seed", SEEDS)
async def test_mirror_light_follows_the_day(seed: int) -> None:
    samples = await day_of("lux", seed)
    assert {s.unit for s in samples} == {"lx"}
    values = [s.value for s in samples]
    assert all(0.0 <= v <= 1200.0 for v in values)
    hour = [values[h * 1200 : (h + 1) * 1200] for h in range(24)]
    # night without the lamp is dark; midday is bright
    assert min(min(hour[h]) for h in (0, 1, 2, 3, 4)) < 5.0
    assert min(hour[13]) > 100.0
    assert sum(hour[13]) / 1200 > 10 * sum(hour[2]) / 1200


async def test_mirror_lamp_lights_the_night_while_someone_is_there() -> None:
    clock, _ = stepping_clock(MIDNIGHT + dt.timedelta(hours=21))
    presence_clock, _ = stepping_clock(MIDNIGHT + dt.timedelta(hours=21))
    lux = await reads(Mirror("lux", seed=9, clock=clock), 2400)
    presence = await reads(Mirror("presence", seed=9, clock=presence_clock), 2400)
    lit = [x.value for x, p in zip(lux, presence, strict=True) if p.value == 1.0]
    dark = [x.value for x, p in zip(lux, presence, strict=True) if p.value == 0.0]
    assert lit, "nobody came in two evening hours"
    assert min(lit) > 150.0
    assert max(dark) < 10.0


async def test_mirror_uses_the_injected_clock_not_the_poll_count() -> None:
    # one read an hour: every visit (at most 5 min) ends before the next read
    clock, given = stepping_clock(MIDNIGHT, step_s=3600.0)
    samples = await reads(Mirror("lux", seed=1, clock=clock), 24)
    assert len(given) == 24
    assert samples[13].value > 100.0 > samples[2].value


@pytest.mark.parametrize("measure", ["presence", "lux"])
async def test_mirror_seed_repeats(measure: Literal["presence", "lux"]) -> None:
    first = await day_of(measure, 42)
    assert first == await day_of(measure, 42)
    assert first != await day_of(measure, 43)
