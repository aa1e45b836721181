"""The agent as a local hub: the sources config, queue paths, the supervisor and the sums."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pulse_wire as wire
from agent.app import create_app
from agent.config import (
    ConfigError,
    FakeHeartRateSource,
    LiveConfig,
    LoadedConfig,
    MqttSourceEntry,
    load_config,
    parse_config,
    safe_name,
    to_json,
    validate_dict,
)
from agent.keys import CONTROL, LANES, STORE, STORES
from agent.lanes import lane_specs
from agent.sensor import run_supervised
from agent.sources import Sample, SourceError, SourceHealth, SourceState
from agent.tray import View, tooltip
from tests.dashboard_client import Client, app_of, wait_for
from tests.harness import free_port

CONTRACT = """{
  "mqtt": {"host": "127.0.0.1", "port": 1883},
  "sources": [
    {"device_id": "kitchen-bulb", "kind": "mqtt", "topic": "home/kitchen/bulb",
     "value_path": "power", "unit": "W"},
    {"device_id": "pulse-hr", "kind": "fake_heart_rate", "interval_s": 3}
  ]
}"""
DEADLINE_S = 20.0


def problems_of(raw: object) -> dict[str, str]:
    config, found = validate_dict(raw)
    assert config is None
    return {p.key: p.problem for p in found}


# --- config ---


def test_the_issue_contract_parses() -> None:
    config = parse_config(CONTRACT.encode())
    bulb, heart = config.sources
    assert isinstance(bulb, MqttSourceEntry)
    assert (bulb.device_id, bulb.topic, bulb.value_path, bulb.unit) == (
        "kitchen-bulb",
        "home/kitchen/bulb",
        "power",
        "W",
    )
    assert isinstance(heart, FakeHeartRateSource)
    assert (heart.device_id, heart.interval_s) == ("pulse-hr", 3.0)
    assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", 1883)
    assert config.homeassistant.enabled is False


def test_an_mqtt_source_without_an_mqtt_section_uses_the_local_broker() -> None:
    config = parse_config(
        b'{"sources": [{"device_id": "a", "kind": "mqtt", "topic": "t", "unit": "W"}]}'
    )
    assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", 1883)


def test_the_legacy_sensor_is_one_source_under_the_agent_id(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"device_id": "desk", "sensor": {"kind": "counter", "interval_s": 0.5}}')
    loaded = load_config(path)
    (spec,) = lane_specs(loaded)
    assert (spec.device_id, spec.kind, spec.entry) == ("", "counter", None)
    assert spec.path == loaded.storage_path


def test_sensor_and_sources_together_are_refused() -> None:
    found = problems_of({"sensor": {}, "sources": [{"device_id": "a", "kind": "counter"}]})
    assert "not both" in found["sensor"]


def test_an_empty_sources_list_beside_sensor_is_fine() -> None:
    config, found = validate_dict({"sensor": {"kind": "counter"}, "sources": []})
    assert found == []
    assert config is not None
    assert config.sensor.kind == "counter"


def test_each_bad_source_is_named_by_its_index_and_key() -> None:
    found = problems_of(
        {
            "sources": [
                {"device_id": "a", "kind": "mqtt", "unit": "W"},
                {"device_id": "b", "kind": "bulb_power", "interval_s": 0, "colour": "red"},
                {"device_id": "c", "kind": "toaster"},
                "d",
                {"device_id": "has space", "kind": "counter"},
            ]
        }
    )
    assert found["sources[0].topic"] == "missing, and it has no default"
    assert found["sources[1].interval_s"].startswith("expected float > 0.0")
    assert found["sources[1].colour"].startswith("unknown key")
    assert '"mqtt"' in found["sources[2].kind"]
    assert '"toaster"' in found["sources[2].kind"]
    assert "expected an object" in found["sources[3]"]
    assert "without spaces" in found["sources[4].device_id"]


def test_duplicate_device_ids_are_refused_case_blind() -> None:
    found = problems_of(
        {
            "sources": [
                {"device_id": "Bulb", "kind": "bulb_power"},
                {"device_id": "bulb", "kind": "bulb_state"},
            ]
        }
    )
    assert "already used by sources[0]" in found["sources[1].device_id"]


def test_sources_must_be_a_list() -> None:
    assert "expected a list" in problems_of({"sources": {"a": 1}})["sources"]


def test_a_config_error_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"sources": [{"device_id": "x", "kind": "mqtt", "topic": "t"}]}')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "$.sources[0].unit: missing" in str(caught.value)


def test_saved_sources_round_trip_without_the_sensor_key() -> None:
    config = parse_config(CONTRACT.encode())
    text = to_json(config)
    assert "sensor" not in json.loads(text)
    assert parse_config(text) == config


# --- queue files ---


@pytest.mark.parametrize("device_id", ["kitchen-bulb", "a.b_c-1", "x" * 64])
def test_a_tame_device_id_is_its_own_file_name(device_id: str) -> None:
    assert safe_name(device_id) == device_id


@pytest.mark.parametrize("device_id", ["a/b", "../up", "x" * 65, "é", "c:d", ".", ".."])
def test_any_other_id_gets_a_safe_prefix_and_a_hash(device_id: str) -> None:
    name = safe_name(device_id)
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name)
    assert name != device_id
    assert "/" not in name
    assert name.strip(".")


def test_ids_that_sanitize_alike_stay_apart() -> None:
    assert safe_name("a/b") != safe_name("a:b")


def test_the_agents_own_id_keeps_storage_path(tmp_path: Path) -> None:
    raw = json.loads(CONTRACT)
    raw["device_id"] = "pulse-hr"
    raw["storage"] = {"path": "q/main.db"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    loaded = load_config(path)
    bulb, heart = lane_specs(loaded)
    assert heart.path == tmp_path / "q" / "main.db"
    assert bulb.path == tmp_path / "q" / "sources" / "kitchen-bulb.db"


# --- the tray ---


def test_the_tooltip_sums_the_sources_up() -> None:
    view = View(pending=12, sources=(SourceState.OK, SourceState.RECONNECTING, SourceState.OK))
    first = tooltip(view).splitlines()[0]
    assert first == "Pulse: 3 sources, 2 ok, 1 reconnecting · 12 pending"
    assert len(tooltip(view)) <= 127


# --- the supervisor ---


async def test_a_failing_source_task_is_restarted_and_counted() -> None:
    runs: list[int] = []
    sleeps: list[float] = []
    health = SourceHealth()

    async def run() -> None:
        runs.append(len(runs))
        if len(runs) < 4:
            raise OSError("device unplugged")
        await asyncio.Event().wait()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    task = asyncio.create_task(run_supervised("dev", run, health, sleep=sleep))
    await wait_for(lambda: len(runs) >= 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sleeps == [1.0, 2.0, 4.0]
    assert health.errors_total == 3
    assert health.state is SourceState.ERROR
    assert health.last_error == "OSError: device unplugged"


# --- in process: several sources, one of them broken ---


class Broken:
    """A polled source whose every read fails."""

    def __init__(self) -> None:
        self.reads = 0

    async def read(self) -> Sample:
        self.reads += 1
        raise SourceError("sensor unplugged")


def hub_config(tmp_path: Path, sources: list[dict[str, Any]], **extra: Any) -> LiveConfig:
    raw = {
        "device_id": "hub",
        "server": {"port": free_port(), "timeout_s": 1.0},
        "sender": {"interval_s": 0.2, "max_backoff_s": 0.5},
        "dashboard": {"port": free_port()},
        "sources": sources,
        **extra,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return LiveConfig(load_config(path))


async def until(predicate: Callable[[], bool]) -> None:
    await wait_for(predicate, DEADLINE_S)


async def test_a_broken_source_does_not_stop_the_others(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    live = hub_config(
        tmp_path,
        [
            {"device_id": "hub", "kind": "counter", "interval_s": 0.02},
            {"device_id": "bulb", "kind": "bulb_power", "interval_s": 0.02, "seed": 1},
            {"device_id": "heater", "kind": "water_heater", "interval_s": 0.02, "seed": 2},
        ],
    )
    broken = Broken()
    client: Client = await aiohttp_client(create_app(live, source=broken))
    app = app_of(client)
    lanes = app[LANES]
    await until(lambda: all(lane.readings_total >= 20 for lane in lanes[1:]) and broken.reads >= 5)
    assert lanes[0].readings_total == 0
    # each source has its own queue file; the agent's own id keeps storage.path
    paths = [store.path for store in app[STORES]]
    assert len(set(paths)) == 3
    assert app[STORE].path == live.loaded.storage_path
    assert paths[1] == live.loaded.storage_path.parent / "sources" / "bulb.db"

    status = (await (await client.get("/api/status")).json())["status"]
    by_id = {s["device_id"]: s for s in status["sources"]}
    assert list(by_id) == ["hub", "bulb", "heater"]
    assert by_id["hub"]["state"] == "error"
    assert "sensor unplugged" in by_id["hub"]["detail"]
    assert by_id["hub"]["errors_total"] >= 5
    assert by_id["bulb"]["state"] == "ok"
    assert by_id["bulb"]["unit"] == "W"
    assert by_id["heater"]["last_reading"]["unit"] == "°C"
    # the top-level status is the sum over the sources
    assert status["pending"] == sum(s["pending"] for s in status["sources"])


async def test_the_top_status_is_the_sum_and_events_name_the_source(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    live = hub_config(
        tmp_path,
        [
            {"device_id": "one", "kind": "counter", "interval_s": 0.02},
            {"device_id": "two", "kind": "counter", "interval_s": 0.02},
        ],
    )
    client: Client = await aiohttp_client(create_app(live))
    app = app_of(client)
    lanes = app[LANES]
    await until(lambda: all(lane.readings_total >= 5 for lane in lanes))
    async with client.ws_connect("/ws") as ws:
        snapshot = await ws.receive_json()
        assert set(snapshot["recent_sources"]) == {"one", "two"}
        names: set[str] = set()
        while names != {"one", "two"}:
            event = await ws.receive_json(timeout=DEADLINE_S)
            if event["type"] == "reading":
                names.add(event["device_id"])
    hub = lanes[0].hub
    top = (await (await client.get("/api/status")).json())["status"]
    # offline: nothing reaches a collector that is not there
    assert top["state"] == "offline"
    assert top["detail"].startswith(("one: ", "two: "))
    assert top["sent_total"] == 0
    assert top["pending"] >= max(s["pending"] for s in top["sources"])
    assert hub.status.pending <= top["pending"]


async def test_pause_and_send_now_reach_every_source(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    live = hub_config(
        tmp_path,
        [
            {"device_id": "one", "kind": "counter", "interval_s": 0.05},
            {"device_id": "two", "kind": "counter", "interval_s": 0.05},
        ],
    )
    client: Client = await aiohttp_client(create_app(live))
    control = app_of(client)[CONTROL]
    control.pause()
    lanes = app_of(client)[LANES]
    assert all(lane.hub.status.state == "paused" for lane in lanes)
    assert control.status.state == "paused"
    control.resume()
    assert all(lane.hub.status.state != "paused" for lane in lanes)
    assert control.status.state != "paused"


async def test_the_settings_page_shows_sources_read_only(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    live = hub_config(tmp_path, [{"device_id": "one", "kind": "counter", "interval_s": 1}])
    client: Client = await aiohttp_client(create_app(live))
    page = await (await client.get("/settings")).text()
    assert 'class="readonly-json"' in page
    assert 'data-field="sources"' not in page
    # the one sensor is not used with sources: its fields are not on the page
    assert 'data-field="sensor.kind"' not in page
    assert 'data-field="mqtt.host"' in page


def test_the_loaded_queue_path_of_the_legacy_sensor(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    loaded = LoadedConfig(load_config(path).config, path)
    assert loaded.queue_path("anything") == loaded.storage_path


async def test_dead_letters_are_listed_under_their_own_source(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    live = hub_config(
        tmp_path,
        [
            {"device_id": "one", "kind": "counter", "interval_s": 0.05},
            {"device_id": "two", "kind": "counter", "interval_s": 0.05},
        ],
    )
    client: Client = await aiohttp_client(create_app(live))
    control = app_of(client)[CONTROL]
    control.pause()
    lanes = app_of(client)[LANES]
    await until(lambda: all(lane.store.pending >= 1 for lane in lanes))
    refused: dict[str, str] = {}
    for lane in lanes:
        batch = await lane.store.oldest(1)
        assert batch is not None
        await lane.store.ack(batch, [wire.Rejection(id=batch.ids[0], error="refused")])
        refused[batch.ids[0]] = lane.spec.device_id
    letters = await control.dead_letters()
    assert {str(letter["id"]): letter["device_id"] for letter in letters} == refused
