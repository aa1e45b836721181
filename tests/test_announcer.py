"""Home Assistant from the running agent: discovery for the hub and each source, and each
stored value on its state topic, read back by a real subscriber on the real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Callable
from math import isclose
from pathlib import Path
from typing import Any

import aiomqtt

from agent.app import create_app
from agent.config import LiveConfig, load_config
from agent.homeassistant import HubInfo, source_node, state_topic
from agent.keys import STORES
from tests.dashboard_client import Client, app_of, wait_for
from tests.requirements import mosquitto_address
from tests.test_hub import hub_config


def queued_values(path: Path) -> list[float]:
    with sqlite3.connect(path) as db:
        return [float(v) for (v,) in db.execute("SELECT value FROM queue ORDER BY seq")]


async def test_the_running_agent_announces_its_sources_and_feeds_their_values(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    host, port = mosquitto_address()
    prefix = f"pulsetest-{uuid.uuid4().hex[:10]}"
    hub_id = f"hub-{uuid.uuid4().hex[:8]}"
    live = hub_config(
        tmp_path,
        [
            {"device_id": "bulb", "kind": "bulb_power", "interval_s": 0.05, "seed": 1},
            {"device_id": "heater", "kind": "water_heater", "interval_s": 0.05, "seed": 2},
        ],
        mqtt={"host": host, "port": port},
        homeassistant={"enabled": True, "discovery_prefix": prefix},
    )
    raw = json.loads(live.loaded.path.read_text())
    raw["device_id"] = hub_id
    live.loaded.path.write_text(json.dumps(raw))
    live = LiveConfig(load_config(live.loaded.path))
    configs: dict[str, dict[str, Any]] = {}
    states: dict[str, list[float]] = {}
    async with aiomqtt.Client(host, port, identifier=f"test-{uuid.uuid4().hex[:8]}") as sub:
        await sub.subscribe(f"{prefix}/device/+/config", qos=1)
        await sub.subscribe(f"pulse/{hub_id}/#", qos=1)

        async def collect() -> None:
            async for message in sub.messages:
                topic = str(message.topic)
                payload = bytes(message.payload)  # type: ignore[arg-type]
                if topic.endswith("/config") and payload:
                    configs[topic] = json.loads(payload)
                elif "/device/" in topic and payload:
                    states.setdefault(topic, []).append(float(payload))

        collector = asyncio.create_task(collect())
        try:
            # a hang fails at the await that hung, not at pytest's 300 s timeout
            async with asyncio.timeout(90):
                client: Client = await aiohttp_client(create_app(live))
                app = app_of(client)
                bulb_topic = state_topic_of(hub_id, "bulb")
                heater_topic = state_topic_of(hub_id, "heater")
                await wait_for(
                    lambda: (
                        len(configs) == 3
                        and len(states.get(bulb_topic, [])) >= 5
                        and len(states.get(heater_topic, [])) >= 5
                    ),
                    # a deadline, not a measure: a loaded CI machine once took more than 10 s
                    30,
                )
                stores = {store.path.stem: store.path for store in app[STORES]}
                await client.close()
        finally:
            collector.cancel()
            # leave nothing retained behind
            for topic in [*configs, *states]:
                await sub.publish(topic, b"", qos=1, retain=True)
    # the hub and both sources, as devices; each source reached through the hub
    nodes = {topic.split("/")[-2] for topic in configs}
    assert {source_node("bulb"), source_node("heater")} <= nodes
    assert len(nodes) == 3
    for topic in (f"{prefix}/device/{source_node(d)}/config" for d in ("bulb", "heater")):
        payload = configs[topic]
        assert payload["dev"]["via_device"]
        (component,) = payload["cmps"].values()
        assert component["state_class"] == "measurement"
    # every value published is a stored one, in the order stored
    for device, topic in (("bulb", bulb_topic), ("heater", heater_topic)):
        stored = queued_values(stores[device])
        published = states[topic]
        position = 0
        for value in published:
            # HA gets 15 significant digits; the queue holds the float itself
            found = [
                i for i in range(position, len(stored)) if isclose(stored[i], value, rel_tol=1e-12)
            ]
            assert found, f"{device}: {value} published but not stored after #{position}"
            position = found[0] + 1


def state_topic_of(hub_id: str, device_id: str) -> str:
    return state_topic(HubInfo(hub_id, hub_id, "test"), device_id)
