"""Home Assistant MQTT discovery: the hub and each of its sources announced as HA devices.

Topics, for a hub `H` and a source `D` (each id made topic-safe by `node_id`):

- `<prefix>/device/pulse_hub_H/config`: the hub's device-based discovery payload.
- `<prefix>/device/pulse_dev_D/config`: one per source, `via_device` pointing at the hub.
- `pulse/H/availability`: "online" (retained) while the bridge is connected; the broker
  publishes the last will "offline" (retained) when the connection dies without a goodbye,
  and a clean stop publishes "offline" itself. Every entity uses it.
- `pulse/H/device/D/state`: the source's latest value as a plain number.
- `pulse/H/pending`, `pulse/H/delivery`: the hub's queue length and delivery state.

Discovery payloads are retained (QoS 1) and sent again whenever `<prefix>/status` says
"online" (Home Assistant's birth message). States are retained too: Home Assistant shows
the last value at once after its own restart, and the availability topic says whether that
value is live. Removing a source publishes an empty retained payload on its config topic
(Home Assistant deletes the device) and on its state topic (the broker forgets the value).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import msgspec

from agent.backoff import reconnect_delay
from agent.status import State

logger = logging.getLogger(__name__)

MANUFACTURER = "Pulse"
ORIGIN_NAME = "Pulse"
TOPIC_ROOT = "pulse"
PAYLOAD_ONLINE = "online"
PAYLOAD_OFFLINE = "offline"
QOS = 1
# Home Assistant's device classes for the units Pulse sources report; heart rate has none.
DEVICE_CLASSES = {"W": "power", "kW": "power", "°C": "temperature", "lx": "illuminance"}
# what Home Assistant accepts as a node id or object id in a discovery topic
_SAFE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_UNSAFE_CHAR = re.compile(r"[^a-zA-Z0-9_-]")
# how long a clean stop waits for the broker to take "offline"; aiomqtt does not fail a
# publish pending when the connection drops, so a broker that just died costs this much
STOP_TIMEOUT_S = 2.0
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0

Payload = dict[str, Any]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class HubInfo:
    """The agent itself: the hub every source is reached through."""

    hub_id: str
    name: str
    sw_version: str
    support_url: str | None = None


@dataclass(frozen=True)
class SourceInfo:
    """One source, announced as its own device; `device_class` None derives it from `unit`."""

    device_id: str
    name: str
    unit: str
    kind: str
    device_class: str | None = None


@dataclass(frozen=True)
class Discovery:
    """One discovery message: its config topic and its JSON payload."""

    topic: str
    payload: Payload

    def encode(self) -> bytes:
        """The payload as the JSON bytes that go on the wire."""
        return msgspec.json.encode(self.payload)


def node_id(raw: str) -> str:
    """`raw` made safe for a topic level and a HA node id ([a-zA-Z0-9_-]+).

    A safe id stays as it is. Any other id has each unsafe character replaced by "_" and
    8 hex digits of its SHA-256 appended, so "a.b" and "a:b" stay two devices.
    """
    if _SAFE_ID.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{_UNSAFE_CHAR.sub('_', raw)}_{digest}"


def hub_node(hub: HubInfo) -> str:
    """The hub's HA node id and device identifier."""
    return f"pulse_hub_{node_id(hub.hub_id)}"


def source_node(device_id: str) -> str:
    """A source's HA node id and device identifier; its own namespace apart from hubs'."""
    return f"pulse_dev_{node_id(device_id)}"


def config_topic(prefix: str, node: str) -> str:
    """The device-based discovery topic of one node."""
    return f"{prefix}/device/{node}/config"


def status_topic(prefix: str) -> str:
    """Where Home Assistant publishes its birth ("online") and will ("offline")."""
    return f"{prefix}/status"


def availability_topic(hub: HubInfo) -> str:
    """The hub's availability topic, shared by every entity it announces."""
    return f"{TOPIC_ROOT}/{node_id(hub.hub_id)}/availability"


def state_topic(hub: HubInfo, device_id: str) -> str:
    """Where a source's latest value is published."""
    return f"{TOPIC_ROOT}/{node_id(hub.hub_id)}/device/{node_id(device_id)}/state"


def hub_state_topic(hub: HubInfo, key: str) -> str:
    """Where one of the hub's own sensors ("pending", "delivery") is published."""
    return f"{TOPIC_ROOT}/{node_id(hub.hub_id)}/{key}"


def device_class_for(unit: str) -> str | None:
    """Home Assistant's device class for a unit, or None where it has none (bpm)."""
    return DEVICE_CLASSES.get(unit)


def format_value(value: float) -> str:
    """A reading's value as the plain number a HA sensor parses; non-finite is refused."""
    if not math.isfinite(value):
        raise ValueError(f"cannot publish a non-finite value: {value!r}")
    return format(value, ".15g")


def _availability(hub: HubInfo) -> Payload:
    return {
        "availability_topic": availability_topic(hub),
        "payload_available": PAYLOAD_ONLINE,
        "payload_not_available": PAYLOAD_OFFLINE,
    }


def _origin(hub: HubInfo) -> Payload:
    origin: Payload = {"name": ORIGIN_NAME, "sw": hub.sw_version}
    if hub.support_url:
        origin["url"] = hub.support_url
    return origin


def source_discovery(prefix: str, hub: HubInfo, source: SourceInfo) -> Discovery:
    """The device-based discovery message of one source: one sensor, via the hub."""
    node = source_node(source.device_id)
    sensor: Payload = {
        "p": "sensor",
        "name": None,  # the entity takes the device's name
        "unique_id": f"{node}_value",
        "state_topic": state_topic(hub, source.device_id),
        "unit_of_measurement": source.unit,
        "state_class": "measurement",
    }
    device_class = source.device_class or device_class_for(source.unit)
    if device_class is not None:
        sensor["device_class"] = device_class
    payload: Payload = {
        "dev": {
            "identifiers": [node],
            "name": source.name,
            "manufacturer": MANUFACTURER,
            "model": source.kind,
            "sw_version": hub.sw_version,
            "via_device": hub_node(hub),
        },
        "o": _origin(hub),
        "cmps": {"value": sensor},
        **_availability(hub),
    }
    return Discovery(config_topic(prefix, node), payload)


def hub_discovery(prefix: str, hub: HubInfo) -> Discovery:
    """The hub's own device: its queue length and its delivery state."""
    node = hub_node(hub)
    pending: Payload = {
        "p": "sensor",
        "name": "Pending readings",
        "unique_id": f"{node}_pending",
        "state_topic": hub_state_topic(hub, "pending"),
        "state_class": "measurement",
        "icon": "mdi:tray-full",
    }
    delivery: Payload = {
        "p": "sensor",
        "name": "Delivery",
        "unique_id": f"{node}_delivery",
        "state_topic": hub_state_topic(hub, "delivery"),
        "device_class": "enum",
        "options": [state.value for state in State],
        "entity_category": "diagnostic",
    }
    payload: Payload = {
        "dev": {
            "identifiers": [node],
            "name": hub.name,
            "manufacturer": MANUFACTURER,
            "model": "Pulse agent",
            "sw_version": hub.sw_version,
        },
        "o": _origin(hub),
        "cmps": {"pending": pending, "delivery": delivery},
        **_availability(hub),
    }
    return Discovery(config_topic(prefix, node), payload)


def discoveries(prefix: str, hub: HubInfo, sources: Iterable[SourceInfo]) -> list[Discovery]:
    """Every discovery message: the hub first, then each source."""
    return [hub_discovery(prefix, hub), *(source_discovery(prefix, hub, s) for s in sources)]


class HomeAssistantBridge:
    """Owns one MQTT connection that announces the hub and its sources to Home Assistant.

    `run()` connects with the last will "offline", announces, re-announces on HA's birth
    message, reconnects with backoff when the broker goes away, and on cancellation says
    "offline" and disconnects. The publish methods may be called from any task on the same
    loop; while disconnected they keep the latest value and publish it on reconnect.
    """

    def __init__(
        self,
        host: str,
        port: int,
        prefix: str,
        hub: HubInfo,
        sources: Iterable[SourceInfo] = (),
        *,
        keepalive: int = 60,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.prefix, self.hub = host, port, prefix, hub
        self._username, self._password = username, password
        self._sources = {source.device_id: source for source in sources}
        self._keepalive = keepalive
        self._sleep = sleep
        self._clock = clock
        self._client: aiomqtt.Client | None = None
        # the latest state per topic, published again after a reconnect
        self._states: dict[str, str] = {}
        self._lost_at: float | None = None
        # failed connections since the last success, for the backoff
        self._failures = 0
        self._rng = random.Random()
        # sources removed while disconnected, cleared from the broker on reconnect
        self._removals: set[str] = set()

    @property
    def is_connected(self) -> bool:
        """Whether the bridge is connected and has announced everything."""
        return self._client is not None

    @property
    def sources(self) -> list[SourceInfo]:
        """The sources announced now."""
        return list(self._sources.values())

    def discoveries(self) -> list[Discovery]:
        """Every discovery message this bridge publishes."""
        return discoveries(self.prefix, self.hub, self._sources.values())

    async def run(self) -> None:
        """Connect, announce and serve until cancelled; reconnect with backoff on loss."""
        while True:
            try:
                await self._serve()
            except aiomqtt.MqttError as err:
                self._note_loss(err)
            except Exception:
                logger.exception("Home Assistant bridge failed; reconnecting")
            delay = reconnect_delay(self._failures, MIN_BACKOFF_S, MAX_BACKOFF_S, self._rng)
            self._failures += 1
            await self._sleep(delay)

    async def publish_state(self, device_id: str, value: float) -> None:
        """Publish a source's value (retained); kept for the reconnect while disconnected."""
        await self._publish_state(state_topic(self.hub, device_id), format_value(value))

    async def publish_hub_state(self, pending: int, delivery: State) -> None:
        """Publish the hub's queue length and delivery state."""
        await self._publish_state(hub_state_topic(self.hub, "pending"), str(pending))
        await self._publish_state(hub_state_topic(self.hub, "delivery"), delivery.value)

    async def add_source(self, source: SourceInfo) -> None:
        """Announce a new (or changed) source now if connected, and after every reconnect."""
        self._sources[source.device_id] = source
        self._removals.discard(source.device_id)
        discovery = source_discovery(self.prefix, self.hub, source)
        await self._send(discovery.topic, discovery.encode())

    async def remove_source(self, device_id: str) -> None:
        """Delete a source from Home Assistant: empty retained config and state payloads.

        Called when a source leaves the config; while disconnected, done on reconnect.
        """
        self._sources.pop(device_id, None)
        topic = state_topic(self.hub, device_id)
        self._states.pop(topic, None)
        sent = await self._send(config_topic(self.prefix, source_node(device_id)), b"")
        if not (sent and await self._send(topic, b"")):
            self._removals.add(device_id)

    async def _serve(self) -> None:
        will = aiomqtt.Will(availability_topic(self.hub), PAYLOAD_OFFLINE, qos=QOS, retain=True)
        client = aiomqtt.Client(
            self.host,
            self.port,
            will=will,
            keepalive=self._keepalive,
            username=self._username,
            password=self._password,
        )
        async with client:
            try:
                await client.subscribe(status_topic(self.prefix), qos=QOS)
                await self._announce(client)
                await self._catch_up(client)
                self._client = client
                self._note_connected()
                await self._listen(client)
            except asyncio.CancelledError:
                await self._say_offline(client)
                raise
            finally:
                self._client = None

    async def _catch_up(self, client: aiomqtt.Client) -> None:
        """What happened while disconnected: removals, then the latest states."""
        for device_id in sorted(self._removals):
            for topic in (
                config_topic(self.prefix, source_node(device_id)),
                state_topic(self.hub, device_id),
            ):
                await client.publish(topic, b"", qos=QOS, retain=True)
        self._removals.clear()
        for topic, text in list(self._states.items()):
            await client.publish(topic, text, qos=QOS, retain=True)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            # a retained birth is old news: the announcement on connect already covered it
            if message.payload == PAYLOAD_ONLINE.encode() and not message.retain:
                logger.info(
                    "Home Assistant came online; announcing %d devices again",
                    1 + len(self._sources),
                )
                await self._announce(client)

    async def _announce(self, client: aiomqtt.Client) -> None:
        await client.publish(availability_topic(self.hub), PAYLOAD_ONLINE, qos=QOS, retain=True)
        for discovery in self.discoveries():
            await client.publish(discovery.topic, discovery.encode(), qos=QOS, retain=True)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        topic = availability_topic(self.hub)
        try:
            await client.publish(
                topic, PAYLOAD_OFFLINE, qos=QOS, retain=True, timeout=STOP_TIMEOUT_S
            )
        except aiomqtt.MqttError as err:
            # the broker is gone already; it publishes the will instead
            logger.warning("could not publish offline to Home Assistant: %s", err)

    async def _publish_state(self, topic: str, text: str) -> None:
        self._states[topic] = text
        await self._send(topic, text.encode())

    async def _send(self, topic: str, payload: bytes) -> bool:
        """Publish retained if connected; whether the broker took it."""
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=QOS, retain=True)
        except aiomqtt.MqttError as err:
            # the run loop notices the loss, reconnects and catches up
            logger.debug("publish to %s failed: %s", topic, err)
            return False
        return True

    def _note_connected(self) -> None:
        where = f"{self.host}:{self.port}"
        if self._lost_at is None:
            logger.info(
                "announced %d devices to Home Assistant via %s", 1 + len(self._sources), where
            )
        else:
            down = self._clock() - self._lost_at
            logger.info("MQTT broker %s back after %.0f s; announced again", where, down)
        self._lost_at = None
        self._failures = 0

    def _note_loss(self, err: aiomqtt.MqttError) -> None:
        if self._lost_at is None:
            self._lost_at = self._clock()
            logger.warning(
                "MQTT broker %s:%d unreachable (%s); retrying", self.host, self.port, err
            )
        else:
            logger.debug("MQTT broker %s:%d still unreachable: %s", self.host, self.port, err)
