"""Sensor sources, and the factory that picks one by its config kind."""

from __future__ import annotations

from agent.config import SensorConfig
from agent.sources.base import Sample, Source, SourceError, StatefulSource
from agent.sources.counter import Counter
from agent.sources.fake_heart_rate import FakeHeartRate

__all__ = [
    "Counter",
    "FakeHeartRate",
    "Sample",
    "Source",
    "SourceError",
    "StatefulSource",
    "create_source",
]


def create_source(config: SensorConfig) -> Source:
    """Return the source named by sensor.kind."""
    if config.kind == "fake_heart_rate":
        return FakeHeartRate(seed=config.seed)
    if config.kind == "counter":
        return Counter()
    raise ValueError(f"sensor.kind: unknown source {config.kind!r}")
