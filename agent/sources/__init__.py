"""Sensor sources, and the factory that picks one by its config kind."""

from __future__ import annotations

from agent.config import SensorConfig
from agent.sources.base import Sample, Source, SourceError
from agent.sources.fake_heart_rate import FakeHeartRate

__all__ = ["FakeHeartRate", "Sample", "Source", "SourceError", "create_source"]


def create_source(config: SensorConfig) -> Source:
    """Return the source named by sensor.kind."""
    if config.kind == "fake_heart_rate":
        return FakeHeartRate(seed=config.seed)
    raise ValueError(f"sensor.kind: unknown source {config.kind!r}")
