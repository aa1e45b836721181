"""Helpers for the dashboard tests: the agent's app on a real temp config and queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from agent.app import create_app
from agent.config import LiveConfig, load_config
from agent.dashboard import DASHBOARD
from tests.harness import free_port

Client = TestClient[web.Request, web.Application]


def write_config(folder: Path, **sections: dict[str, Any]) -> Path:
    """A config.json with fast intervals and an unreachable server; sections merge in."""
    raw: dict[str, Any] = {
        "device_id": "test-device",
        "sensor": {"interval_s": 0.05, "seed": 3},
        "server": {"port": free_port(), "token": "server-secret-token", "timeout_s": 1.0},
        "sender": {"interval_s": 0.1, "max_backoff_s": 0.2},
        "dashboard": {"port": free_port()},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    path = folder / "config.json"
    path.write_text(json.dumps(raw, indent=2))
    return path


async def start(aiohttp_client: AiohttpClient, config: Path) -> Client:
    """The agent's app from create_app, served by the test server."""
    app = create_app(LiveConfig(load_config(config)))
    client: Client = await aiohttp_client(app)
    return client


def app_of(client: Client) -> web.Application:
    """The application behind a test client."""
    app = client.server.app
    assert app is not None
    return app


def origin(client: Client) -> str:
    """This dashboard's own origin."""
    return f"http://127.0.0.1:{client.port}"


async def unlock(client: Client) -> str:
    """Follow the start-up link; return the session's CSRF token."""
    secret = app_of(client)[DASHBOARD].auth.secret
    resp = await client.get(f"/?token={secret}", allow_redirects=False)
    assert resp.status == 303
    resp = await client.get("/api/session")
    body = await resp.json()
    assert body["unlocked"] is True
    csrf: str = body["csrf"]
    return csrf


def change_headers(client: Client, csrf: str) -> dict[str, str]:
    """Everything a same-origin change from the page carries."""
    return {"Origin": origin(client), "X-CSRF-Token": csrf, "Content-Type": "application/json"}


async def wait_for(predicate: Callable[[], Any], within: float = 5.0) -> Any:
    """Poll until predicate() is truthy, without blocking the loop."""
    deadline = asyncio.get_running_loop().time() + within
    while not (result := predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
    return result


async def read_bytes(path: Path) -> bytes:
    """A file's bytes, read off the event loop."""
    return await asyncio.to_thread(path.read_bytes)
