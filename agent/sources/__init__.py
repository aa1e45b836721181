"""Sensor sources, and the factory that picks one by its config kind."""

from __future__ import annotations

from agent.config import (
    BulbPowerSource,
    BulbStateSource,
    CounterSource,
    FakeHeartRateSource,
    MirrorLuxSource,
    MirrorPresenceSource,
    MqttConfig,
    MqttSourceEntry,
    SensorConfig,
    SourceEntry,
    WaterHeaterSource,
)
from agent.sources.base import (
    Emit,
    PushSource,
    Sample,
    Source,
    SourceError,
    SourceHealth,
    SourceState,
    StatefulSource,
)
from agent.sources.counter import Counter
from agent.sources.fake_heart_rate import FakeHeartRate
from agent.sources.home import Bulb, Mirror, WaterHeater

__all__ = [
    "Counter",
    "Emit",
    "FakeHeartRate",
    "PushSource",
    "Sample",
    "Source",
    "SourceError",
    "SourceHealth",
    "SourceState",
    "StatefulSource",
    "create_source",
    "create_source_for",
]


# the unit each built-in kind reads in (an mqtt source names its own)
KIND_UNITS = {
    "fake_heart_rate": "bpm",
    "counter": "count",
    "bulb_power": "W",
    "bulb_state": "on",
    "water_heater": "°C",
    "mirror_presence": "presence",
    "mirror_lux": "lx",
}


def unit_of(entry: SourceEntry) -> str:
    """The unit a `sources` entry's readings come in."""
    if isinstance(entry, MqttSourceEntry):
        return entry.unit
    return KIND_UNITS[str(entry.__struct_config__.tag)]


def create_source(config: SensorConfig) -> Source:
    """Return the source named by sensor.kind."""
    if config.kind == "fake_heart_rate":
        return FakeHeartRate(seed=config.seed)
    if config.kind == "counter":
        return Counter()
    raise ValueError(f"sensor.kind: unknown source {config.kind!r}")


def create_source_for(entry: SourceEntry, mqtt: MqttConfig) -> Source | PushSource:
    """Return the source of one `sources` entry; an `mqtt` one uses the broker in `mqtt`."""
    match entry:
        case FakeHeartRateSource():
            return FakeHeartRate(seed=entry.seed)
        case CounterSource():
            return Counter()
        case BulbPowerSource():
            return Bulb("power", seed=entry.seed)
        case BulbStateSource():
            return Bulb("state", seed=entry.seed)
        case WaterHeaterSource():
            return WaterHeater(seed=entry.seed)
        case MirrorPresenceSource():
            return Mirror("presence", seed=entry.seed)
        case MirrorLuxSource():
            return Mirror("lux", seed=entry.seed)
        case MqttSourceEntry():
            # imported here: an agent without MQTT sources never loads the MQTT client
            from agent.sources.mqtt import MqttSource

            return MqttSource(
                mqtt.host,
                mqtt.port,
                entry.topic,
                entry.value_path,
                entry.unit,
                username=mqtt.username or None,
                password=mqtt.password or None,
            )
