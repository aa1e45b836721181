"""The fake heart-rate source: seeded, plausible, with bursts and no jumps."""

from __future__ import annotations

import statistics

import pytest

from agent.config import SensorConfig
from agent.sources import FakeHeartRate, Sample, create_source
from agent.sources.fake_heart_rate import HIGH, LOW

N = 20_000


def series(seed: int, n: int = N, burst_chance: float = 0.01) -> list[int]:
    source = FakeHeartRate(seed=seed, burst_chance=burst_chance)
    return [source.next_value() for _ in range(n)]


def test_the_same_seed_gives_the_same_values() -> None:
    assert series(42, 500) == series(42, 500)


def test_different_seeds_give_different_values() -> None:
    assert series(1, 500) != series(2, 500)


@pytest.mark.parametrize("seed", [0, 1, 7, 2026])
def test_values_are_plausible(seed: int) -> None:
    values = series(seed)
    assert all(isinstance(v, int) for v in values)
    assert min(values) >= LOW == 40
    assert max(values) <= HIGH == 200
    assert 60 <= statistics.median(values) <= 85


@pytest.mark.parametrize("seed", [0, 1, 7, 2026])
def test_bursts_happen_with_the_default_chance(seed: int) -> None:
    source = FakeHeartRate(seed=seed)
    values = [source.next_value() for _ in range(N)]
    assert max(values) > 105
    # a burst is an episode, not a blip: several readings in a row above rest
    runs, run = [], 0
    for v in values:
        run = run + 1 if v > 100 else 0
        runs.append(run)
    assert max(runs) >= 5


def test_no_bursts_without_a_chance() -> None:
    values = series(3, burst_chance=0.0)
    assert max(values) < 100


def test_steps_are_small() -> None:
    # bursts ramp up and recover over several ticks; many seeds, so no lucky pick
    for seed in range(25):
        values = series(seed)
        steps = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
        assert max(steps) <= 15, f"seed {seed}"


async def test_read_returns_bpm_samples() -> None:
    source = FakeHeartRate(seed=5)
    twin = FakeHeartRate(seed=5)
    sample = await source.read()
    assert isinstance(sample, Sample)
    assert sample.unit == "bpm"
    assert sample.value == twin.next_value()


async def test_create_source_passes_the_seed() -> None:
    source = create_source(SensorConfig(kind="fake_heart_rate", seed=11))
    twin = FakeHeartRate(seed=11)
    assert [(await source.read()).value for _ in range(50)] == [
        twin.next_value() for _ in range(50)
    ]
