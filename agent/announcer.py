"""What the agent tells Home Assistant: its sources, their values and its own state.

With `homeassistant.enabled`, a HomeAssistantBridge (agent.homeassistant) announces the
hub and every source over MQTT discovery, and this worker feeds it from the status feed:
each stored reading's value on its source's state topic, and the hub's pending count and
delivery state.
"""

from __future__ import annotations

import logging

from agent import __version__
from agent.config import Config
from agent.homeassistant import HomeAssistantBridge, HubInfo, SourceInfo
from agent.sources import KIND_UNITS, unit_of
from agent.status import ReadingEvent, StatusEvent, StatusHub

logger = logging.getLogger(__name__)


def announced_sources(config: Config) -> list[SourceInfo]:
    """The sources as Home Assistant devices; the legacy sensor is the agent's own device."""
    hub_id = config.effective_device_id
    if not config.sources:
        kind = config.sensor.kind
        return [SourceInfo(hub_id, hub_id, KIND_UNITS[kind], kind)]
    return [
        SourceInfo(e.device_id, e.device_id, unit_of(e), str(e.__struct_config__.tag))
        for e in config.sources
    ]


def create_bridge(config: Config) -> HomeAssistantBridge:
    """The bridge for this config's broker, prefix, hub and sources."""
    hub_id = config.effective_device_id
    return HomeAssistantBridge(
        config.mqtt.host,
        config.mqtt.port,
        config.homeassistant.discovery_prefix,
        HubInfo(hub_id, f"Pulse hub {hub_id}", __version__),
        announced_sources(config),
        username=config.mqtt.username or None,
        password=config.mqtt.password or None,
    )


async def run_announcer(bridge: HomeAssistantBridge, hub: StatusHub, hub_id: str) -> None:
    """Publish each reading and each change of the hub's state until cancelled.

    The status feed drops the oldest events for a slow subscriber, so a broker that lags
    costs old values, never the agent's pace; the newest value of each topic is kept.
    """
    async for event in hub.subscribe():
        try:
            if isinstance(event, ReadingEvent):
                await bridge.publish_state(event.device_id or hub_id, event.reading.value)
                await bridge.publish_hub_state(event.pending, hub.status.state)
            elif isinstance(event, StatusEvent):
                await bridge.publish_hub_state(hub.status.pending, hub.status.state)
        except Exception:
            logger.exception("could not hand a value to Home Assistant")
