"""The dashboard's JSON API, pages and websocket, against create_app on a real temp config."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

import pulse_wire as wire
from agent import __version__
from agent.autostart import Autostart
from agent.config import Config, LiveConfig, load_config
from agent.control import dashboard_url
from agent.dashboard import DASHBOARD, Recent
from agent.keys import AUTOSTART, CONFIG, CONTROL, HUB, STORE
from agent.serve import serve
from agent.settings_form import MASK, RESTART_KEYS, flatten, form_sections
from agent.status import LastReading, ReadingEvent, State, StatusChanges, StatusEvent
from pulse_common.logs import log_file_name
from tests.dashboard_client import (
    Client,
    app_of,
    change_headers,
    read_bytes,
    start,
    unlock,
    wait_for,
    write_config,
)
from tests.harness import free_port, start_agent, write_agent_config


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, config_path: Path) -> Client:
    return await start(aiohttp_client, config_path)


@pytest.fixture
def root_level() -> Iterator[None]:
    """Tests that change the log level live put it back."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


async def put_config(client: Client, body: dict[str, Any]) -> aiohttp.ClientResponse:
    csrf = await unlock(client)
    return await client.put("/api/config", json=body, headers=change_headers(client, csrf))


# --- status and health -------------------------------------------------------------------


async def test_health_names_the_app_and_version(client: Client) -> None:
    resp = await client.get("/api/health")
    assert resp.status == 200
    assert await resp.json() == {"app": "pulse-agent", "version": __version__}


async def test_status_has_the_snapshot_and_where_things_are(
    client: Client, config_path: Path
) -> None:
    hub = app_of(client)[HUB]
    await wait_for(lambda: hub.status.pending >= 3 and hub.status.state is State.OFFLINE)
    body = await (await client.get("/api/status")).json()
    assert body["type"] == "snapshot"
    assert body["status"]["state"] == "offline"
    assert body["status"]["pending"] >= 3
    info = body["info"]
    folder = app_of(client)[CONFIG].loaded.path.parent
    assert folder.name == config_path.parent.name
    assert info["device_id"] == "test-device"
    assert info["config_path"] == str(folder / "config.json")
    assert info["data_dir"] == str(folder / "data")
    assert info["logs_dir"] == str(folder / "logs")
    assert info["server_url"].startswith("http://127.0.0.1:")
    assert info["version"] == __version__
    assert info["readings_per_min"] >= 3
    assert info["restart_needed"] == []


async def test_pages_render(client: Client) -> None:
    for path in ("/", "/settings"):
        resp = await client.get(path)
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        text = await resp.text()
        assert "Pulse agent" in text
    css = await client.get("/static/app.css")
    assert css.status == 200
    chart = await client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert chart.status == 200
    assert (await client.get("/static/vendor/uplot/LICENSE")).status == 200


# --- config ------------------------------------------------------------------------------


async def test_get_config_masks_the_token(client: Client) -> None:
    resp = await client.get("/api/config")
    body = await resp.json()
    assert body["config"]["server"]["token"] == MASK
    assert body["config"]["dashboard"]["password"] == ""
    for path in ("/api/config", "/settings", "/", "/api/status"):
        text = await (await client.get(path)).text()
        assert "server-secret-token" not in text, path


async def test_a_valid_save_is_written_and_applied_live(client: Client, config_path: Path) -> None:
    resp = await put_config(client, {"sender": {"interval_s": 0.7, "batch_size": 25}})
    assert resp.status == 200
    body = await resp.json()
    assert body["changed"] == ["sender.interval_s", "sender.batch_size"]
    assert body["applied_live"] == ["sender.interval_s", "sender.batch_size"]
    assert body["restart_needed"] == []
    assert body["config"]["server"]["token"] == MASK
    on_disk = load_config(config_path).config
    assert on_disk.sender.interval_s == 0.7
    assert on_disk.sender.batch_size == 25
    assert on_disk.server.token == "server-secret-token"
    live = app_of(client)[CONFIG].config
    assert live.sender.interval_s == 0.7
    assert not list(config_path.parent.glob(".config.json.*"))


async def test_the_mask_keeps_the_token_and_a_new_token_replaces_it(
    client: Client, config_path: Path
) -> None:
    resp = await put_config(client, {"server": {"token": MASK, "host": "localhost"}})
    assert resp.status == 200
    assert load_config(config_path).config.server.token == "server-secret-token"
    assert app_of(client)[CONFIG].config.server.host == "localhost"
    csrf = await unlock(client)
    resp = await client.put(
        "/api/config",
        json={"server": {"token": "new-token"}},
        headers=change_headers(client, csrf),
    )
    body = await resp.json()
    assert body["changed"] == ["server.token"]
    assert "new-token" not in json.dumps(body)
    assert load_config(config_path).config.server.token == "new-token"


async def test_an_invalid_save_names_each_field_and_leaves_the_file(
    client: Client, config_path: Path
) -> None:
    before = await read_bytes(config_path)
    resp = await put_config(
        client,
        {"sender": {"batch_size": "ten", "interval_s": 0}, "server": {"port": 70000}},
    )
    assert resp.status == 422
    body = await resp.json()
    assert body["errors"]["sender.batch_size"] == 'expected int, got "ten"'
    assert "sender.interval_s" in body["errors"]
    assert "<= 65535" in body["errors"]["server.port"]
    assert body["general"] == []
    assert await read_bytes(config_path) == before
    assert app_of(client)[CONFIG].config.sender.batch_size == 10


async def test_a_network_address_without_a_password_is_refused(
    client: Client, config_path: Path
) -> None:
    before = await read_bytes(config_path)
    resp = await put_config(client, {"dashboard": {"host": "0.0.0.0"}})
    assert resp.status == 422
    body = await resp.json()
    assert "needs a dashboard password" in body["errors"]["dashboard.host"]
    assert await read_bytes(config_path) == before
    resp = await put_config(client, {"dashboard": {"host": "0.0.0.0", "password": "pw"}})
    assert resp.status == 200
    assert (await resp.json())["restart_needed"] == ["dashboard.host", "dashboard.password"]


async def test_an_unknown_key_is_a_general_error(client: Client, config_path: Path) -> None:
    before = await read_bytes(config_path)
    resp = await put_config(client, {"sender": {"speed": 3}})
    assert resp.status == 422
    body = await resp.json()
    assert body["errors"] == {}
    assert body["general"][0].startswith("$.sender.speed: unknown key")
    assert await read_bytes(config_path) == before


async def test_a_body_that_is_not_an_object_is_refused(client: Client) -> None:
    csrf = await unlock(client)
    headers = change_headers(client, csrf)
    resp = await client.put("/api/config", data="[1, 2]", headers=headers)
    assert resp.status == 422
    resp = await client.put("/api/config", data="{not json", headers=headers)
    assert resp.status == 400


async def test_restart_only_settings_say_so(client: Client, config_path: Path) -> None:
    port = free_port()
    resp = await put_config(client, {"dashboard": {"port": port}, "logs": {"keep_hours": 5}})
    body = await resp.json()
    assert body["restart_needed"] == ["dashboard.port", "logs.keep_hours"]
    assert body["applied_live"] == []
    assert load_config(config_path).config.dashboard.port == port
    status = await (await client.get("/api/status")).json()
    assert status["info"]["restart_needed"] == ["dashboard.port", "logs.keep_hours"]
    # the data and log folders shown stay those in use until the restart
    resp = await put_config(client, {"storage": {"path": "elsewhere/q.db"}})
    status = await (await client.get("/api/status")).json()
    folder = app_of(client)[CONFIG].loaded.path.parent
    assert status["info"]["queue_file"] == str(folder / "data" / "queue.db")


@pytest.mark.usefixtures("root_level")
async def test_log_level_and_queue_limit_apply_live(client: Client) -> None:
    resp = await put_config(client, {"logs": {"level": "WARNING"}, "storage": {"max_pending": 77}})
    assert resp.status == 200
    assert logging.getLogger().level == logging.WARNING
    assert app_of(client)[STORE].max_pending == 77


@pytest.fixture
async def quiet_client(aiohttp_client: AiohttpClient, tmp_path: Path) -> Client:
    """An agent whose sensor reads once, then waits an hour; its server is unreachable,
    so pending only moves when the test adds readings."""
    client = await start(aiohttp_client, write_config(tmp_path, sensor={"interval_s": 3600.0}))
    store = app_of(client)[STORE]
    await wait_for(lambda: store.pending >= 1)
    return client


async def add_readings(client: Client, n: int) -> None:
    """Queue n more readings, as the sensor would."""
    now = dt.datetime.now(dt.UTC)
    await app_of(client)[STORE].add_many([(now, 70.0, "bpm")] * n)


async def put_config_confirmed(
    client: Client, body: dict[str, Any], confirm: str
) -> aiohttp.ClientResponse:
    csrf = await unlock(client)
    return await client.put(
        "/api/config",
        json=body,
        params={"confirm_drop": confirm},
        headers=change_headers(client, csrf),
    )


async def test_lowering_the_cap_below_pending_drops_nothing_until_confirmed(
    quiet_client: Client, tmp_path: Path
) -> None:
    client, config_path = quiet_client, tmp_path / "config.json"
    app = app_of(client)
    store = app[STORE]
    await add_readings(client, 50)
    pending = store.pending
    assert pending > 20
    before = await read_bytes(config_path)
    resp = await put_config(client, {"storage": {"max_pending": 20}})
    assert resp.status == 409
    assert await resp.json() == {
        "errors": {
            "storage.max_pending": f"lowering the cap to 20 would drop the {pending - 20} "
            "oldest queued readings; confirm to drop them"
        },
        "general": [],
        "would_drop": pending - 20,
    }
    assert await read_bytes(config_path) == before
    assert store.max_pending == 1_000_000
    assert app[CONFIG].config.storage.max_pending == 1_000_000
    # the refused cap is not in force: the next reading drops nothing
    dropped = (await store.counts()).dropped
    await add_readings(client, 1)
    assert store.pending == pending + 1
    assert (await store.counts()).dropped == dropped

    resp = await put_config_confirmed(client, {"storage": {"max_pending": 20}}, "true")
    assert resp.status == 200
    body = await resp.json()
    assert body["changed"] == ["storage.max_pending"]
    assert body["applied_live"] == ["storage.max_pending"]
    assert load_config(config_path).config.storage.max_pending == 20
    assert store.max_pending == 20
    await add_readings(client, 1)
    assert store.pending == 20
    assert (await store.counts()).dropped == dropped + pending + 2 - 20


async def test_a_bad_confirm_drop_is_refused_and_changes_nothing(
    quiet_client: Client, tmp_path: Path
) -> None:
    client, config_path = quiet_client, tmp_path / "config.json"
    store = app_of(client)[STORE]
    await add_readings(client, 10)
    before = await read_bytes(config_path)
    for value in ("yes", "false", "1", "True", ""):
        resp = await put_config_confirmed(client, {"storage": {"max_pending": 2}}, value)
        assert resp.status == 400, value
        error = (await resp.json())["error"]
        assert error == f'?confirm_drop: expected "true", got "{value}"'
        assert await read_bytes(config_path) == before
        assert store.max_pending == 1_000_000
    # a bad value is refused even where no confirmation is needed
    resp = await put_config_confirmed(client, {"sender": {"batch_size": 11}}, "no")
    assert resp.status == 400
    assert await read_bytes(config_path) == before


async def test_a_cap_still_at_or_above_pending_needs_no_confirmation(
    quiet_client: Client, tmp_path: Path
) -> None:
    client = quiet_client
    store = app_of(client)[STORE]
    await add_readings(client, 30)
    pending = store.pending
    resp = await put_config(client, {"storage": {"max_pending": pending}})
    assert resp.status == 200
    assert store.max_pending == pending
    resp = await put_config(client, {"storage": {"max_pending": pending + 100}})
    assert resp.status == 200
    assert store.max_pending == pending + 100
    # confirming when nothing would be dropped is harmless
    resp = await put_config_confirmed(client, {"storage": {"max_pending": pending}}, "true")
    assert resp.status == 200
    await add_readings(client, 1)
    assert store.pending == pending
    assert load_config(tmp_path / "config.json").config.storage.max_pending == pending


async def test_an_unchanged_save_writes_nothing(client: Client, config_path: Path) -> None:
    before = (await asyncio.to_thread(config_path.stat)).st_mtime_ns
    original = await read_bytes(config_path)
    resp = await put_config(client, {"sender": {"batch_size": 10}})
    body = await resp.json()
    assert body["changed"] == []
    assert await read_bytes(config_path) == original
    assert (await asyncio.to_thread(config_path.stat)).st_mtime_ns == before


def test_every_config_key_has_a_field_with_help() -> None:
    fields = {f.key: f for _, _, group in form_sections() for f in group}
    assert set(fields) == set(flatten(Config()))
    for key, field in fields.items():
        assert field.help, key
        assert field.label, key
        assert field.restart == (key in RESTART_KEYS)
    assert fields["logs.level"].choices == ("DEBUG", "INFO", "WARNING", "ERROR")
    assert fields["server.token"].kind == "secret"
    assert fields["sender.batch_size"].limits == "at least 1, at most 10,000"


# --- actions -----------------------------------------------------------------------------


async def test_pause_resume_and_send_now(client: Client) -> None:
    csrf = await unlock(client)
    headers = change_headers(client, csrf)
    hub = app_of(client)[HUB]
    resp = await client.post("/api/actions/pause", json={}, headers=headers)
    assert (await resp.json())["paused"] is True
    assert hub.status.state is State.PAUSED
    resp = await client.post("/api/actions/resume", json={}, headers=headers)
    assert (await resp.json())["paused"] is False
    assert hub.status.state is not State.PAUSED
    resp = await client.post("/api/actions/send-now", json={}, headers=headers)
    assert resp.status == 200
    resp = await client.post("/api/actions/explode", json={}, headers=headers)
    assert resp.status == 404


async def test_retry_dead_moves_dead_letters_back(client: Client) -> None:
    app = app_of(client)
    store = app[STORE]
    await wait_for(lambda: store.pending >= 2)
    batch = await store.oldest(2)
    assert batch is not None
    first_id = json.loads(batch.readings_json[0])["id"]
    await store.ack(batch, [wire.Rejection(first_id, "value out of range")])
    dead = await (await client.get("/api/dead-letters")).json()
    assert [d["error"] for d in dead["dead"]] == ["value out of range"]
    csrf = await unlock(client)
    resp = await client.post(
        "/api/actions/retry-dead", json={}, headers=change_headers(client, csrf)
    )
    assert (await resp.json())["moved"] == 1
    assert (await store.counts()).dead == 0


class FakeAutostart:
    """What the dashboard uses of agent.autostart.Autostart."""

    def __init__(self) -> None:
        self.enabled = False

    def is_enabled(self) -> bool:
        return self.enabled

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False


async def test_start_at_login_is_hidden_without_the_desktop_hook(client: Client) -> None:
    assert 'id="autostart"' not in await (await client.get("/")).text()
    csrf = await unlock(client)
    resp = await client.post(
        "/api/actions/autostart", json={"enabled": True}, headers=change_headers(client, csrf)
    )
    assert resp.status == 404


async def test_start_at_login_switch_with_the_hook(
    aiohttp_client: AiohttpClient, config_path: Path
) -> None:
    from agent.app import create_app

    app = create_app(LiveConfig(load_config(config_path)))
    fake = FakeAutostart()
    app[AUTOSTART] = cast(Autostart, fake)
    client: Client = await aiohttp_client(app)
    csrf = await unlock(client)
    assert 'id="autostart"' in await (await client.get("/")).text()
    resp = await client.post(
        "/api/actions/autostart", json={"enabled": True}, headers=change_headers(client, csrf)
    )
    assert await resp.json() == {"ok": True, "enabled": True}
    assert fake.enabled
    resp = await client.post(
        "/api/actions/autostart", json={"enabled": "yes"}, headers=change_headers(client, csrf)
    )
    assert resp.status == 422


async def test_an_unwritable_autostart_folder_is_a_clear_error(
    aiohttp_client: AiohttpClient, config_path: Path, tmp_path: Path
) -> None:
    from agent.app import create_app
    from agent.autostart import LinuxAutostart

    blocked = tmp_path / "xdg"
    blocked.write_text("a file where the config folder should be")
    app = create_app(LiveConfig(load_config(config_path)))
    app[AUTOSTART] = LinuxAutostart(["pulse-agent"], config_home=blocked)
    client: Client = await aiohttp_client(app)
    csrf = await unlock(client)
    resp = await client.post(
        "/api/actions/autostart", json={"enabled": True}, headers=change_headers(client, csrf)
    )
    assert resp.status == 409
    assert str(blocked) in (await resp.json())["error"]


# --- logs --------------------------------------------------------------------------------


async def test_log_tail_is_the_current_hour_without_the_secret(client: Client) -> None:
    app = app_of(client)
    logs_dir = app[CONTROL].logs_dir
    logs_dir.mkdir(parents=True, exist_ok=True)
    url = dashboard_url("127.0.0.1", 8765, app[DASHBOARD].auth.secret)
    lines = [f"line {i}" for i in range(80)] + [f"INFO agent.serve: dashboard: {url}"]
    name = log_file_name("agent", dt.datetime.now())
    (logs_dir / name).write_text("\n".join(lines) + "\n")
    body = await (await client.get("/api/logs")).json()
    assert body["file"] == name
    assert len(body["lines"]) == 50
    assert body["lines"][0] == "line 31"
    assert app[DASHBOARD].auth.secret not in json.dumps(body)
    assert body["lines"][-1].endswith("?token=…")


# --- websocket ---------------------------------------------------------------------------


async def test_ws_sends_a_snapshot_then_numbered_events(client: Client) -> None:
    async with client.ws_connect("/ws") as ws:
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "snapshot"
        assert first["info"]["device_id"] == "test-device"
        assert set(first["recent"]) == {"t", "v"}
        seq = first["seq"]
        kinds = set()
        for _ in range(20):
            event = await ws.receive_json(timeout=5)
            assert event["seq"] == seq + 1
            seq = event["seq"]
            kinds.add(event["type"])
            if event["type"] == "reading":
                assert 30 <= event["reading"]["value"] <= 220
        assert {"reading", "status"} <= kinds


async def test_ws_pushes_a_config_event_after_a_save(client: Client) -> None:
    async with client.ws_connect("/ws") as ws:
        await ws.receive_json(timeout=5)
        resp = await put_config(client, {"device_id": "renamed"})
        assert resp.status == 200
        for _ in range(200):
            event = await ws.receive_json(timeout=5)
            if event["type"] == "config":
                assert event["info"]["device_id"] == "renamed"
                break
        else:
            pytest.fail("no config event")


async def test_ws_is_closed_on_shutdown(aiohttp_client: AiohttpClient, config_path: Path) -> None:
    client = await start(aiohttp_client, config_path)
    ws = await client.ws_connect("/ws")
    await ws.receive_json(timeout=5)
    assert app_of(client)[DASHBOARD].sockets
    await asyncio.wait_for(client.close(), 5)
    assert ws.closed or (await ws.receive(timeout=5)).type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.CLOSING,
    )
    await ws.close()


def test_recent_keeps_five_minutes_and_counts_the_last_one() -> None:
    now = 1_800_000_000.0
    recent = Recent(clock=lambda: now)
    for i in range(400):
        when = dt.datetime.fromtimestamp(now - 399 + i, dt.UTC)
        iso = when.isoformat().replace("+00:00", "Z")
        shown = LastReading(seq=i, datetime=iso, value=i, unit="bpm")
        recent.on_event(ReadingEvent(seq=i, reading=shown, pending=0))
    recent.on_event(StatusEvent(seq=401, changes=StatusChanges()))
    cols = recent.columns()
    assert len(cols["t"]) == 301
    assert cols["v"][-1] == 399.0
    assert recent.per_minute() == 61


# --- serve(): loopback rule and one agent per port ---------------------------------------


def live_config(tmp_path: Path, **dashboard: Any) -> LiveConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return LiveConfig(load_config(write_config(tmp_path, dashboard=dashboard)))


async def test_serve_refuses_a_network_address_without_a_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = await serve(live_config(tmp_path, host="0.0.0.0"))
    assert code == 2
    assert "$.dashboard.password must be set" in caplog.text


async def test_serve_opens_the_running_agents_dashboard(
    aiohttp_client: AiohttpClient,
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    assert client.port is not None
    code = await serve(live_config(tmp_path / "second", port=client.port))
    assert code == 0
    assert opened == [f"http://127.0.0.1:{client.port}/"]


async def test_serve_names_the_port_another_program_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"app": "something else"})

    other = web.Application()
    other.router.add_get("/api/health", health)
    runner = web.AppRunner(other)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        code = await serve(live_config(tmp_path, port=port))
    finally:
        await runner.cleanup()
    assert code == 1
    assert f"port {port} is in use by another program" in caplog.text


async def test_serve_names_the_port_a_non_http_program_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-nope\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0, family=socket.AF_INET)
    port = server.sockets[0].getsockname()[1]
    try:
        code = await serve(live_config(tmp_path, port=port))
    finally:
        server.close()
        await server.wait_closed()
    assert code == 1
    assert f"port {port} is in use" in caplog.text


def run_agent(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A second `python -m agent` on a config; it must finish by itself."""
    cmd = [sys.executable, "-m", "agent", "--config", str(config), "--no-tray"]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=30, env=env, cwd=config.parent, check=False
    )


@pytest.mark.e2e
def test_a_second_agent_on_the_port_opens_the_first_and_exits(tmp_path: Path) -> None:
    collector_port = free_port()
    config = write_agent_config(tmp_path / "first", collector_port, free_port())
    first = start_agent(tmp_path / "first", config)
    # `true` stands in for the browser: it accepts the URL and exits
    env = {**os.environ, "BROWSER": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    try:
        second = write_agent_config(tmp_path / "second", collector_port, first.port)
        done = run_agent(second, env)
        assert done.returncode == 0, done.stderr
        assert f"already running on port {first.port}" in done.stderr
        assert first.popen.poll() is None
    finally:
        assert first.stop() == 0


@pytest.mark.e2e
def test_an_agent_whose_port_is_taken_names_it_and_exits_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_agent_config(tmp_path, free_port(), port)
        done = run_agent(config, {**os.environ, "BROWSER": "true"})
    assert done.returncode == 1
    assert f"port {port} is in use by another program" in done.stderr
