"""Control, the one way into the running agent: pause, settings, the dashboard URL, and that
the dashboard and the tray use nothing else."""

from __future__ import annotations

import ast
import datetime as dt
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

import pulse_wire as wire
from agent.config import Config, LiveConfig, LoadedConfig, SenderConfig, ServerConfig, load_config
from agent.control import (
    Control,
    DropUnconfirmed,
    Invalid,
    Saved,
    SaveFailed,
    dashboard_url,
)
from agent.sender import Sender
from agent.status import Event, State, StatusEvent, StatusHub
from agent.store import Store, open_store
from tests.conftest import T0
from tests.harness import ROOT

NOW = 1_790_000_000.0


class Collector:
    """Acks every batch; `on_batch` runs first, with the number of batches received."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.on_batch = lambda count: None

    async def handle(self, request: web.Request) -> web.Response:
        batch = wire.decode_batch(await request.read())
        self.sizes.append(len(batch.readings))
        self.on_batch(len(self.sizes))
        ack = {"accepted": len(batch.readings), "duplicates": 0, "rejected": []}
        return web.Response(body=msgspec.json.encode(ack), content_type="application/json")


@dataclass
class Agent:
    control: Control
    sender: Sender
    store: Store
    hub: StatusHub
    collector: Collector
    config_path: Path
    states: list[State]
    stops: list[str]


async def fill(store: Store, n: int) -> None:
    await store.add_many([(T0 + dt.timedelta(seconds=i), 60 + i % 40, "bpm") for i in range(n)])


@pytest.fixture
async def agent(tmp_path: Path, aiohttp_server: AiohttpServer) -> AsyncIterator[Agent]:
    """A Control over a real queue and Sender, delivering to a collector that acks all."""
    collector = Collector()
    app = web.Application()
    app.router.add_post("/api/v1/readings", collector.handle)
    server = await aiohttp_server(app)
    assert server.port is not None
    config = Config(
        device_id="test-device",
        server=ServerConfig(host="127.0.0.1", port=server.port, timeout_s=5.0),
        sender=SenderConfig(interval_s=0.01, batch_size=5, catchup_batch_size=20),
    )
    path = tmp_path / "config.json"
    path.write_bytes(msgspec.json.encode(config))
    live = LiveConfig(load_config(path))
    hub = StatusHub()
    states: list[State] = []

    def on_event(event: Event) -> None:
        if isinstance(event, StatusEvent) and isinstance(event.changes.state, State):
            states.append(event.changes.state)

    hub.add_listener(on_event)
    stops: list[str] = []
    async with open_store(tmp_path / "queue.db", 1_000_000) as store, aiohttp.ClientSession() as s:
        sender = Sender(
            store,
            hub,
            s,
            lambda: live.config,
            rng=random.Random(7),
            clock=lambda: NOW,
            is_paused=lambda: control.is_paused,
        )
        control = Control(live, hub, store, sender, lambda: stops.append("stop"), secret="s3")
        yield Agent(control, sender, store, hub, collector, path, states, stops)


# --- pause ---------------------------------------------------------------------------------


async def test_pause_through_control_stops_a_catch_up_within_one_batch(agent: Agent) -> None:
    await fill(agent.store, 500)

    def pause_on_third(count: int) -> None:
        if count == 3:
            agent.control.pause()

    agent.collector.on_batch = pause_on_third
    await agent.sender.cycle()
    assert agent.control.is_paused
    # the batch in flight when pause came may still land; nothing after it is sent
    assert len(agent.collector.sizes) <= 4
    assert agent.store.pending >= 500 - 5 - 20 * 3
    assert agent.hub.status.state is State.PAUSED
    # paused, a cycle sends nothing at all
    sent = len(agent.collector.sizes)
    await agent.sender.cycle()
    assert len(agent.collector.sizes) == sent
    agent.control.resume()
    await agent.sender.cycle()
    assert agent.store.pending < 5


async def test_pause_and_resume_change_state(agent: Agent) -> None:
    agent.control.pause()
    assert agent.control.is_paused is True
    assert agent.hub.status.state is State.PAUSED
    # paused, a cycle sends nothing and leaves the display alone
    await fill(agent.store, 1)
    await agent.sender.cycle()
    assert agent.collector.sizes == []
    assert agent.hub.status.state is State.PAUSED
    agent.control.resume()
    assert agent.control.is_paused is False
    assert agent.hub.status.state is State.SENDING
    assert agent.states == [State.PAUSED, State.SENDING]


async def test_a_verdict_while_paused_does_not_unpause_the_display(agent: Agent) -> None:
    await fill(agent.store, 1)
    agent.control.pause()
    agent.hub.set_state(State.OFFLINE, "refused")
    assert agent.hub.status.state is State.PAUSED
    assert agent.states == [State.PAUSED]


async def test_resume_when_not_paused_changes_nothing(agent: Agent) -> None:
    agent.control.resume()
    assert agent.hub.status.state is State.STARTING
    assert agent.states == []


async def test_retry_dead_requeues_and_updates_the_counts(agent: Agent) -> None:
    await fill(agent.store, 2)
    batch = await agent.store.oldest(2)
    assert batch is not None
    first = json.loads(batch.readings_json[0])["id"]
    await agent.store.ack(batch, [wire.Rejection(first, "value out of range")])
    assert [d["error"] for d in await agent.control.dead_letters()] == ["value out of range"]
    assert await agent.control.retry_dead() == 1
    assert agent.hub.status.dead_total == 0
    assert agent.hub.status.pending == 1


def test_quit_asks_the_agent_to_stop(agent: Agent) -> None:
    agent.control.quit()
    assert agent.stops == ["stop"]


# --- settings ------------------------------------------------------------------------------


async def test_apply_settings_refuses_an_unconfirmed_drop(agent: Agent) -> None:
    await fill(agent.store, 50)
    before = agent.config_path.read_bytes()
    update = {"storage": {"max_pending": 20}}
    result = await agent.control.apply_settings(update, confirm_drop=False)
    assert result == DropUnconfirmed(
        "lowering the cap to 20 would drop the 30 oldest queued readings; confirm to drop them",
        30,
    )
    assert agent.config_path.read_bytes() == before
    assert agent.store.max_pending == 1_000_000
    assert agent.control.config.storage.max_pending == 1_000_000

    result = await agent.control.apply_settings(update, confirm_drop=True)
    assert isinstance(result, Saved)
    assert result.changed == ["storage.max_pending"]
    assert result.applied_live == ["storage.max_pending"]
    assert agent.store.max_pending == 20
    assert load_config(agent.config_path).config.storage.max_pending == 20


async def test_apply_settings_names_each_bad_key(agent: Agent) -> None:
    before = agent.config_path.read_bytes()
    result = await agent.control.apply_settings(
        {"sender": {"batch_size": "ten"}, "bogus": 1}, confirm_drop=False
    )
    assert isinstance(result, Invalid)
    assert result.errors == {"sender.batch_size": 'expected int, got "ten"'}
    assert [line.split(":")[0] for line in result.general] == ["$.bogus"]
    result = await agent.control.apply_settings({"dashboard": {"host": "0.0.0.0"}}, False)
    assert isinstance(result, Invalid)
    assert "needs a dashboard password" in result.errors["dashboard.host"]
    assert agent.config_path.read_bytes() == before


async def test_apply_settings_says_which_settings_wait_for_a_restart(agent: Agent) -> None:
    result = await agent.control.apply_settings(
        {"dashboard": {"port": 9999}, "sender": {"interval_s": 0.5}}, confirm_drop=False
    )
    assert result == Saved(
        agent.control.config,
        changed=["sender.interval_s", "dashboard.port"],
        applied_live=["sender.interval_s"],
        restart_needed=["dashboard.port"],
    )
    assert agent.control.restart_needed() == ["dashboard.port"]
    # the running dashboard keeps its address until the restart
    assert agent.control.dashboard_url == "http://127.0.0.1:8765/?token=s3"


async def test_a_file_that_cannot_be_written_changes_nothing(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the config folder should be")
    live = LiveConfig(LoadedConfig(Config(), blocked / "config.json"))
    async with open_store(tmp_path / "queue.db", 1000) as store, aiohttp.ClientSession() as s:
        sender = Sender(store, StatusHub(), s, lambda: live.config)
        control = Control(live, StatusHub(), store, sender, lambda: None)
        result = await control.apply_settings({"sender": {"batch_size": 11}}, confirm_drop=False)
    assert isinstance(result, SaveFailed)
    assert str(blocked) in result.error
    assert live.config.sender.batch_size == 10


# --- the dashboard URL, built in one place -----------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:8765/"),
        ("localhost", "http://localhost:8765/"),
        ("0.0.0.0", "http://127.0.0.1:8765/"),  # every address: this computer's is one
        ("", "http://127.0.0.1:8765/"),
        ("::", "http://[::1]:8765/"),
        ("::1", "http://[::1]:8765/"),
        ("192.168.1.20", "http://192.168.1.20:8765/"),
    ],
)
def test_dashboard_url(host: str, expected: str) -> None:
    assert dashboard_url(host, 8765) == expected
    assert dashboard_url(host, 8765, "abc") == expected + "?token=abc"


def test_control_gives_the_dashboard_url_with_the_secret(agent: Agent) -> None:
    assert agent.control.dashboard_url == "http://127.0.0.1:8765/?token=s3"


def http_literals(source: str) -> list[int]:
    """Lines whose string literals start an http:// address."""
    tree = ast.parse(source)
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("http://")
    )


def test_the_dashboard_url_is_built_in_one_place() -> None:
    # agent.security compares an Origin header with http://<Host>: a check, not an address
    allowed = {"control.py", "security.py"}
    builders = {
        path.name: lines
        for path in sorted((ROOT / "agent").glob("*.py"))
        if path.name not in allowed and (lines := http_literals(path.read_text(encoding="utf-8")))
    }
    assert builders == {}
    assert http_literals('url = f"http://{host}:{port}/"\n') == [1]


# --- the dashboard and the tray use Control alone -------------------------------------------

# the agent's parts behind Control; reaching one of these goes around it
INTERNAL_KEYS = {"SENDER", "STORE", "HUB", "SESSION", "SOURCE", "WORKERS", "CONFIG"}
INTERNAL_MODULES = {"agent.sender", "agent.store", "agent.sensor"}


def reaches_around_control(source: str) -> list[str]:
    """What code uses of the agent besides Control: app keys, modules, Control's insides."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id in INTERNAL_KEYS:
            found.append(f"{node.lineno}: {node.id}")
        elif isinstance(node, ast.ImportFrom) and node.module in INTERNAL_MODULES:
            found.append(f"{node.lineno}: from {node.module}")
        elif isinstance(node, ast.ImportFrom) and node.module == "agent.keys":
            names = {alias.name for alias in node.names} & INTERNAL_KEYS
            found.extend(f"{node.lineno}: imports {name}" for name in sorted(names))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "control"
            and node.attr.startswith("_")
        ):
            found.append(f"{node.lineno}: control.{node.attr}")
    return found


@pytest.mark.parametrize("name", ["dashboard.py", "tray.py"])
def test_the_dashboard_and_the_tray_go_through_control(name: str) -> None:
    source = (ROOT / "agent" / name).read_text(encoding="utf-8")
    assert "CONTROL" in source or "Control" in source
    assert reaches_around_control(source) == []


@pytest.mark.parametrize(
    "code",
    [
        "app[SENDER].send_now()",
        "request.app[STORE].pending",
        "from agent.keys import CONTROL, STORE",
        "from agent.store import Store",
        "control._hub.status",
    ],
)
def test_the_check_sees_a_reach_around_control(code: str) -> None:
    assert reaches_around_control(code) != []
