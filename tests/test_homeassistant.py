"""Home Assistant discovery: the payloads, and the bridge against a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.homeassistant import (
    HomeAssistantBridge,
    HubInfo,
    SourceInfo,
    availability_topic,
    config_topic,
    discoveries,
    format_value,
    hub_discovery,
    hub_node,
    hub_state_topic,
    node_id,
    source_discovery,
    source_node,
    state_topic,
    status_topic,
)
from agent.status import State
from tests.harness import ROOT, free_port
from tests.requirements import mosquitto_address, require_programs

SAFE = re.compile(r"^[a-zA-Z0-9_-]+$")
SOURCES = [
    SourceInfo("heart.1", "Heart", "bpm", "fake_heart_rate"),
    SourceInfo("plug", "Desk plug", "W", "mqtt"),
    SourceInfo("room/temp", "Room", "°C", "mqtt"),
    SourceInfo("lux", "Window", "lx", "mqtt"),
]
WAIT_S = 20.0


def make_hub() -> HubInfo:
    """A hub whose id no other test run shares."""
    return HubInfo(f"hub-{uuid.uuid4().hex[:10]}", "Test hub", "0.1.0")


# ---- pure payloads -------------------------------------------------------------------


def test_node_id_keeps_safe_ids_and_separates_sanitized_ones() -> None:
    assert node_id("desk-plug_2") == "desk-plug_2"
    dotted, coloned = node_id("a.b"), node_id("a:b")
    assert SAFE.match(dotted)
    assert SAFE.match(coloned)
    assert dotted != coloned
    assert dotted.startswith("a_b_")
    assert SAFE.match(node_id("kitchen/+/#"))


def test_hub_and_source_nodes_never_collide() -> None:
    hub = HubInfo("x", "Hub", "1")
    assert hub_node(hub) != source_node("x")
    assert source_node("hub_x") != hub_node(hub)


def test_source_payload() -> None:
    hub = HubInfo("my hub", "Hub", "1.2.3", support_url="https://example.test/pulse")
    discovery = source_discovery("homeassistant", hub, SOURCES[1])
    node = source_node("plug")
    assert discovery.topic == f"homeassistant/device/{node}/config"
    payload = json.loads(discovery.encode())
    assert payload["dev"] == {
        "identifiers": [node],
        "name": "Desk plug",
        "manufacturer": "Pulse",
        "model": "mqtt",
        "sw_version": "1.2.3",
        "via_device": hub_node(hub),
    }
    assert payload["o"] == {"name": "Pulse", "sw": "1.2.3", "url": "https://example.test/pulse"}
    assert payload["availability_topic"] == availability_topic(hub)
    assert (payload["payload_available"], payload["payload_not_available"]) == (
        "online",
        "offline",
    )
    (sensor,) = payload["cmps"].values()
    assert sensor == {
        "p": "sensor",
        "name": None,
        "unique_id": f"{node}_value",
        "state_topic": state_topic(hub, "plug"),
        "unit_of_measurement": "W",
        "state_class": "measurement",
        "device_class": "power",
    }
    assert SAFE.match(hub_node(hub))


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("W", "power"), ("°C", "temperature"), ("lx", "illuminance"), ("bpm", None)],
)
def test_device_class_follows_the_unit(unit: str, expected: str | None) -> None:
    source = SourceInfo("d", "D", unit, "mqtt")
    (sensor,) = source_discovery("ha", make_hub(), source).payload["cmps"].values()
    assert sensor.get("device_class") == expected


def test_explicit_device_class_wins() -> None:
    source = SourceInfo("d", "D", "%", "mqtt", device_class="humidity")
    (sensor,) = source_discovery("ha", make_hub(), source).payload["cmps"].values()
    assert sensor["device_class"] == "humidity"


def test_hub_payload_has_no_via_device_and_two_sensors() -> None:
    hub = make_hub()
    payload = json.loads(hub_discovery("ha", hub).encode())
    assert "via_device" not in payload["dev"]
    assert payload["dev"]["identifiers"] == [hub_node(hub)]
    assert payload["o"] == {"name": "Pulse", "sw": "0.1.0"}
    cmps = payload["cmps"]
    assert cmps["pending"]["state_class"] == "measurement"
    assert cmps["pending"]["state_topic"] == hub_state_topic(hub, "pending")
    assert cmps["delivery"]["device_class"] == "enum"
    assert set(cmps["delivery"]["options"]) == {state.value for state in State}
    unique_ids = [c["unique_id"] for c in cmps.values()]
    assert len(set(unique_ids)) == len(unique_ids)


def test_state_values_are_plain_numbers() -> None:
    assert format_value(72.0) == "72"
    assert format_value(21.5) == "21.5"
    assert format_value(0.1 + 0.2) == "0.3"
    with pytest.raises(ValueError, match="non-finite"):
        format_value(float("nan"))


# ---- against Mosquitto ---------------------------------------------------------------


@dataclass
class Setup:
    """One test's broker, prefix and hub, and every topic to clear afterwards."""

    host: str
    port: int
    prefix: str
    hub: HubInfo
    sources: list[SourceInfo]
    marker: str = ""
    extra: list[str] = field(default_factory=list)

    def topics(self) -> list[str]:
        """Every retained topic the bridge may leave behind."""
        hub = self.hub
        return [
            *(d.topic for d in discoveries(self.prefix, hub, self.sources)),
            availability_topic(hub),
            hub_state_topic(hub, "pending"),
            hub_state_topic(hub, "delivery"),
            *(state_topic(hub, s.device_id) for s in self.sources),
            self.marker,
            *self.extra,
        ]

    def bridge(self, **kwargs: Any) -> HomeAssistantBridge:
        """A bridge for this setup's hub and sources."""
        return HomeAssistantBridge(
            self.host, self.port, self.prefix, self.hub, self.sources, **kwargs
        )


async def clear(host: str, port: int, topics: list[str]) -> None:
    """Publish an empty retained payload on each topic: the broker forgets them."""
    async with aiomqtt.Client(host, port) as client:
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    host, port = mosquitto_address()
    prefix = f"pulsetest-{uuid.uuid4().hex[:12]}"
    s = Setup(host, port, prefix, make_hub(), list(SOURCES), marker=f"{prefix}-marker")
    async with aiomqtt.Client(host, port) as client:
        await client.publish(s.marker, b"end", qos=1, retain=True)
    yield s
    await clear(host, port, s.topics())


async def read_retained(s: Setup, *filters: str) -> dict[str, bytes]:
    """The retained messages on `filters`, read by a fresh subscriber.

    Mosquitto sends a subscription's retained messages right after its SUBACK, before it
    reads the next SUBSCRIBE; the retained marker, subscribed last, closes the list.
    """
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(s.host, s.port) as client:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        await client.subscribe(s.marker, qos=1)
        async with asyncio.timeout(WAIT_S):
            async for message in client.messages:
                topic = message.topic.value
                if topic == s.marker:
                    return found
                assert message.retain, topic
                assert isinstance(message.payload, bytes)
                found[topic] = message.payload
    raise AssertionError("the marker never came")


@dataclass
class Watch:
    """Every message on the subscribed filters, as it comes."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def on(self, topic: str) -> list[bytes]:
        """The payloads seen on one topic, in order."""
        return [payload for t, payload in self.messages if t == topic]

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Poll until `predicate()` holds; fail naming `what` after WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {WAIT_S} s; saw {self.messages!r}")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def watching(s: Setup, *filters: str) -> AsyncIterator[Watch]:
    """A live subscriber on `filters` (default: the prefix and the hub's topics)."""
    watch = Watch()
    async with aiomqtt.Client(s.host, s.port) as client:
        for topic_filter in filters or (f"{s.prefix}/#", f"pulse/{node_id(s.hub.hub_id)}/#"):
            await client.subscribe(topic_filter, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                watch.messages.append((message.topic.value, message.payload))

        task = asyncio.create_task(collect())
        try:
            yield watch
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


@asynccontextmanager
async def running(bridge: HomeAssistantBridge) -> AsyncIterator[asyncio.Task[None]]:
    """The bridge's run() as a task, cancelled (and awaited) on the way out."""
    task = asyncio.create_task(bridge.run())
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until_connected(bridge: HomeAssistantBridge, connected: bool = True) -> None:
    """Poll until the bridge is (or is no longer) connected and announced."""
    deadline = time.monotonic() + WAIT_S
    while bridge.is_connected is not connected:
        assert time.monotonic() < deadline, f"bridge connected is not {connected}"
        await asyncio.sleep(0.02)


async def test_discovery_is_retained_and_well_formed(setup: Setup) -> None:
    bridge = setup.bridge()
    async with running(bridge):
        await until_connected(bridge)
        retained = await read_retained(setup, f"{setup.prefix}/#", availability_topic(setup.hub))
    expected = {d.topic for d in discoveries(setup.prefix, setup.hub, SOURCES)}
    assert expected <= retained.keys()
    for topic in expected:
        payload = json.loads(retained[topic])
        assert {"dev", "o", "cmps", "availability_topic"} <= payload.keys(), topic
        assert payload["availability_topic"] == availability_topic(setup.hub)
        assert payload["payload_not_available"] == "offline"
        assert payload["o"]["name"] == "Pulse"
        assert payload["dev"]["manufacturer"] == "Pulse"
        for component in payload["cmps"].values():
            assert component["p"] == "sensor"
            assert component["unique_id"]
        is_hub = payload["dev"]["identifiers"] == [hub_node(setup.hub)]
        if not is_hub:
            assert payload["dev"]["via_device"] == hub_node(setup.hub)
            (sensor,) = payload["cmps"].values()
            assert sensor["state_class"] == "measurement"
    units = {
        json.loads(retained[config_topic(setup.prefix, source_node(s.device_id))])["cmps"]["value"][
            "unit_of_measurement"
        ]
        for s in SOURCES
    }
    assert units == {"bpm", "W", "°C", "lx"}
    assert retained[availability_topic(setup.hub)] == b"online"


async def test_home_assistant_birth_republishes_discovery(setup: Setup) -> None:
    bridge = setup.bridge()
    configs = {d.topic for d in bridge.discoveries()}

    def count(watch: Watch) -> int:
        return sum(1 for topic, _ in watch.messages if topic in configs)

    async with watching(setup) as watch, running(bridge):
        await watch.until(lambda: count(watch) == len(configs), "the first announcement")
        async with aiomqtt.Client(setup.host, setup.port) as ha:
            await ha.publish(status_topic(setup.prefix), b"online", qos=1)
            await watch.until(lambda: count(watch) >= 2 * len(configs), "a re-announcement")
            await ha.publish(status_topic(setup.prefix), b"online", qos=1)
            await watch.until(lambda: count(watch) >= 3 * len(configs), "a third one")
    assert count(watch) == 3 * len(configs)
    assert {topic for topic, _ in watch.messages if topic in configs} == configs


async def test_clean_stop_publishes_offline(setup: Setup) -> None:
    bridge = setup.bridge()
    async with watching(setup, availability_topic(setup.hub)) as watch:
        task = asyncio.create_task(bridge.run())
        await watch.until(lambda: watch.on(availability_topic(setup.hub)) == [b"online"], "online")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await watch.until(
            lambda: watch.on(availability_topic(setup.hub)) == [b"online", b"offline"], "offline"
        )
    retained = await read_retained(setup, availability_topic(setup.hub))
    assert retained == {availability_topic(setup.hub): b"offline"}


async def test_state_values_arrive_retained(setup: Setup) -> None:
    bridge = setup.bridge()
    plug = state_topic(setup.hub, "plug")
    async with watching(setup) as watch, running(bridge):
        await until_connected(bridge)
        await bridge.publish_state("plug", 41.5)
        await bridge.publish_state("heart.1", 72.0)
        await bridge.publish_hub_state(12, State.SENDING)
        await watch.until(lambda: watch.on(plug) == [b"41.5"], "the plug's value")
        await watch.until(
            lambda: watch.on(hub_state_topic(setup.hub, "delivery")) == [b"sending"],
            "the hub's delivery state",
        )
        retained = await read_retained(setup, f"pulse/{node_id(setup.hub.hub_id)}/#")
    assert retained[plug] == b"41.5"
    assert retained[state_topic(setup.hub, "heart.1")] == b"72"
    assert retained[hub_state_topic(setup.hub, "pending")] == b"12"
    assert retained[hub_state_topic(setup.hub, "delivery")] == b"sending"


async def test_remove_source_clears_its_retained_config(setup: Setup) -> None:
    bridge = setup.bridge()
    gone = config_topic(setup.prefix, source_node("lux"))
    async with running(bridge):
        await until_connected(bridge)
        await bridge.publish_state("lux", 300)
        assert gone in await read_retained(setup, f"{setup.prefix}/#")
        await bridge.remove_source("lux")
        retained = await read_retained(setup, f"{setup.prefix}/#", "pulse/#")
        # a new source announced after start is retained too
        added = SourceInfo("fan", "Fan", "W", "mqtt")
        setup.extra.append(config_topic(setup.prefix, source_node("fan")))
        await bridge.add_source(added)
        after_add = await read_retained(setup, setup.extra[0])
    assert gone not in retained
    assert state_topic(setup.hub, "lux") not in retained
    assert config_topic(setup.prefix, source_node("plug")) in retained
    assert [s.device_id for s in bridge.sources] == ["heart.1", "plug", "room/temp", "fan"]
    assert json.loads(after_add[setup.extra[0]])["dev"]["name"] == "Fan"


BRIDGE_PROCESS = """
import asyncio, sys
from agent.homeassistant import HomeAssistantBridge, HubInfo, SourceInfo
host, port, prefix, hub_id = sys.argv[1:5]
bridge = HomeAssistantBridge(
    host, int(port), prefix, HubInfo(hub_id, "Killed hub", "0.1.0"),
    [SourceInfo("heart", "Heart", "bpm", "fake_heart_rate")],
)
asyncio.run(bridge.run())
"""


@contextmanager
def bridge_process(s: Setup) -> Iterator[subprocess.Popen[bytes]]:
    """The bridge in its own process, so that it can die without a word."""
    args = [s.host, str(s.port), s.prefix, s.hub.hub_id]
    proc = subprocess.Popen(
        [sys.executable, "-c", BRIDGE_PROCESS, *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT_S)
        if proc.stderr is not None:
            proc.stderr.close()


async def test_last_will_says_offline_when_the_bridge_dies(setup: Setup) -> None:
    availability = availability_topic(setup.hub)
    setup.extra.append(config_topic(setup.prefix, source_node("heart")))
    async with watching(setup, availability) as watch:
        with bridge_process(setup) as proc:
            await watch.until(lambda: watch.on(availability) == [b"online"], "online")
            proc.kill()  # SIGKILL: no DISCONNECT, so the broker sends the will
            await watch.until(lambda: watch.on(availability) == [b"online", b"offline"], "will")
    assert (await read_retained(setup, availability))[availability] == b"offline"


@contextmanager
def own_broker(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A private Mosquitto on 127.0.0.1:`port`, stopped on the way out."""
    proc = subprocess.Popen(
        ["mosquitto", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=WAIT_S)


async def test_reconnects_and_announces_again_after_the_broker_restarts(tmp_path: Path) -> None:
    require_programs("mosquitto")
    port = free_port()
    prefix = f"pulsetest-{uuid.uuid4().hex[:12]}"
    s = Setup("127.0.0.1", port, prefix, make_hub(), list(SOURCES), marker=f"{prefix}-marker")

    async def fast(_: float) -> None:
        await asyncio.sleep(0.05)

    async def start_broker() -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                async with aiomqtt.Client(s.host, port) as client:
                    await client.publish(s.marker, b"end", qos=1, retain=True)
                    return
            except aiomqtt.MqttError:
                assert time.monotonic() < deadline, "own Mosquitto never answered"
                await asyncio.sleep(0.05)

    bridge = s.bridge(sleep=fast)
    async with running(bridge) as task:
        with own_broker(port):
            await start_broker()
            await until_connected(bridge)
        await until_connected(bridge, connected=False)
        # kept while disconnected, published after the reconnect
        await bridge.publish_state("plug", 99)
        await bridge.remove_source("lux")
        with own_broker(port):
            await start_broker()
            await until_connected(bridge)
            retained = await read_retained(s, f"{prefix}/#", "pulse/#")
            task.cancel()  # while this broker still runs, so the stop says offline
            with pytest.raises(asyncio.CancelledError):
                await task
            stopped = await read_retained(s, availability_topic(s.hub))
    assert retained[availability_topic(s.hub)] == b"online"
    assert retained[state_topic(s.hub, "plug")] == b"99"
    assert config_topic(prefix, source_node("plug")) in retained
    # removed while disconnected: not announced again
    assert config_topic(prefix, source_node("lux")) not in retained
    assert stopped == {availability_topic(s.hub): b"offline"}
