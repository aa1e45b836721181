"""The dashboard's defences: DNS rebinding, cross-site requests and websockets, the secret."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from agent.dashboard import DASHBOARD
from agent.keys import HUB
from agent.security import CSRF_HEADER, is_allowed_host
from agent.status import State
from pulse_common.hosts import is_loopback
from tests.dashboard_client import (
    Client,
    app_of,
    change_headers,
    origin,
    read_bytes,
    start,
    unlock,
    write_config,
)

CSP = "default-src 'self'; frame-ancestors 'none'"


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, config_path: Path) -> Client:
    return await start(aiohttp_client, config_path)


def assert_hardened(resp: aiohttp.ClientResponse) -> None:
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


# --- Host allow-list (DNS rebinding) -----------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/settings", "/api/status", "/api/config", "/ws"])
@pytest.mark.parametrize(
    "host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "localhost.evil.example:{port}"]
)
async def test_a_foreign_host_gets_403(client: Client, path: str, host: str) -> None:
    resp = await client.get(path, headers={"Host": host.format(port=client.port)})
    assert resp.status == 403
    assert_hardened(resp)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"])
async def test_the_loopback_names_are_allowed(client: Client, host: str) -> None:
    resp = await client.get("/api/status", headers={"Host": host.format(port=client.port)})
    assert resp.status == 200


def test_host_rules_for_a_network_bind() -> None:
    assert is_allowed_host("LOCALHOST:8765", 8765, "127.0.0.1")
    assert not is_allowed_host("192.168.1.5:8765", 8765, "127.0.0.1")
    # bound to the network (password required): IP literals cannot be rebound
    assert is_allowed_host("192.168.1.5:8765", 8765, "0.0.0.0")
    assert is_allowed_host("[fe80::1]:8765", 8765, "::")
    assert not is_allowed_host("192.168.1.5:9999", 8765, "0.0.0.0")
    assert not is_allowed_host("evil.example:8765", 8765, "0.0.0.0")
    assert is_allowed_host("pulse-box:8765", 8765, "pulse-box")


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com", "localhost.example.com"):
        assert not is_loopback(host), host


# --- headers -----------------------------------------------------------------------------


async def test_every_response_carries_csp_and_nosniff(client: Client) -> None:
    for path in ("/", "/settings", "/api/status", "/static/app.css", "/no-such-page"):
        resp = await client.get(path)
        assert_hardened(resp)
    async with client.ws_connect("/ws") as ws:
        assert ws._response.headers["Content-Security-Policy"] == CSP
    resp = await client.post("/api/actions/pause")
    assert resp.status == 403
    assert_hardened(resp)


async def test_values_go_into_the_page_as_text(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    config = write_config(tmp_path, sender={}, dashboard={})
    raw = json.loads(config.read_text())
    raw["device_id"] = "<script>alert(1)</script>"
    config.write_text(json.dumps(raw))
    client = await start(aiohttp_client, config)
    text = await (await client.get("/")).text()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>" not in text.replace('<script src="/static/', "")


# --- changes need same origin, CSRF and JSON ---------------------------------------------


async def test_a_cross_origin_post_gets_403(client: Client) -> None:
    csrf = await unlock(client)
    headers = {**change_headers(client, csrf), "Origin": "http://evil.example"}
    resp = await client.post("/api/actions/pause", json={}, headers=headers)
    assert resp.status == 403
    assert "cross-origin" in (await resp.json())["error"]
    assert app_of(client)[HUB].status.state is not State.PAUSED


@pytest.mark.parametrize(
    "origin_value", [None, "null", "http://127.0.0.1:1", "https://127.0.0.1:{port}"]
)
async def test_a_missing_or_other_origin_gets_403(client: Client, origin_value: str | None) -> None:
    csrf = await unlock(client)
    headers = change_headers(client, csrf)
    if origin_value is None:
        del headers["Origin"]
    else:
        headers["Origin"] = origin_value.format(port=client.port)
    resp = await client.post("/api/actions/pause", json={}, headers=headers)
    assert resp.status == 403


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded", "password=x"),
        ("text/plain", '{"sender": {"interval_s": 1}}'),
        ("multipart/form-data; boundary=x", "--x--"),
    ],
)
async def test_a_form_or_text_post_gets_403_even_same_origin(
    client: Client, config_path: Path, content_type: str, data: str
) -> None:
    before = await read_bytes(config_path)
    csrf = await unlock(client)
    headers = {**change_headers(client, csrf), "Content-Type": content_type}
    resp = await client.post("/api/actions/pause", data=data, headers=headers)
    assert resp.status == 403
    resp = await client.put("/api/config", data=data, headers=headers)
    assert resp.status == 403
    assert await read_bytes(config_path) == before


async def test_a_missing_or_wrong_csrf_token_gets_403(client: Client) -> None:
    csrf = await unlock(client)
    headers = change_headers(client, csrf)
    del headers[CSRF_HEADER]
    resp = await client.post("/api/actions/pause", json={}, headers=headers)
    assert resp.status == 403
    assert "CSRF" in (await resp.json())["error"]
    headers[CSRF_HEADER] = csrf[:-1] + ("A" if csrf[-1] != "A" else "B")
    resp = await client.post("/api/actions/pause", json={}, headers=headers)
    assert resp.status == 403
    headers[CSRF_HEADER] = csrf
    resp = await client.post("/api/actions/pause", json={}, headers=headers)
    assert resp.status == 200


# --- the per-start secret ----------------------------------------------------------------


async def test_without_the_cookie_the_page_is_read_only(client: Client, config_path: Path) -> None:
    text = await (await client.get("/")).text()
    assert 'data-unlocked="false"' in text
    assert "Read-only." in text
    assert "?token=" in text
    assert 'id="btn-pause" data-action="pause" disabled' in text
    settings = await (await client.get("/settings")).text()
    assert 'id="save" disabled' in settings
    session = await (await client.get("/api/session")).json()
    assert session == {"unlocked": False, "csrf": None, "password_login": False}
    before = await read_bytes(config_path)
    headers = {"Origin": origin(client), "Content-Type": "application/json"}
    resp = await client.post("/api/actions/pause", json={}, headers=headers)
    assert resp.status == 403
    assert "read-only" in (await resp.json())["error"]
    resp = await client.put("/api/config", json={"device_id": "x"}, headers=headers)
    assert resp.status == 403
    assert await read_bytes(config_path) == before


async def test_the_secret_is_swapped_for_a_strict_httponly_cookie(client: Client) -> None:
    secret = app_of(client)[DASHBOARD].auth.secret
    resp = await client.get(f"/settings?token={secret}&tab=2", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/settings?tab=2"
    cookie = resp.headers["Set-Cookie"]
    assert secret not in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert f"pulse_session_{client.port}=" in cookie
    text = await (await client.get("/")).text()
    assert 'data-unlocked="true"' in text
    assert "Read-only." not in text


async def test_a_wrong_secret_unlocks_nothing(client: Client) -> None:
    resp = await client.get("/?token=from-an-earlier-run", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/?unlock=failed"
    assert "Set-Cookie" not in resp.headers
    text = await (await client.get("/?unlock=failed")).text()
    assert "from an earlier start" in text
    assert 'data-unlocked="false"' in text


async def test_a_cookie_from_another_run_unlocks_nothing(
    aiohttp_client: AiohttpClient, client: Client, config_path: Path
) -> None:
    await unlock(client)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    name = f"pulse_session_{client.port}"
    other = await start(aiohttp_client, config_path)
    assert other.port is not None
    resp = await other.get(
        "/api/session", headers={"Cookie": f"pulse_session_{other.port}={cookie[name].value}"}
    )
    assert (await resp.json())["unlocked"] is False


# --- websocket ---------------------------------------------------------------------------


async def test_a_foreign_origin_on_the_websocket_is_refused(client: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert err.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/ws", headers={"Origin": "null"})


async def test_the_own_origin_or_none_opens_the_websocket(client: Client) -> None:
    async with client.ws_connect("/ws", headers={"Origin": origin(client)}) as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
    async with client.ws_connect("/ws") as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"


# --- password login (for a dashboard on the network) -------------------------------------


async def test_password_login_unlocks_only_with_the_right_password(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    config = write_config(tmp_path, dashboard={"password": "correct horse"})
    client = await start(aiohttp_client, config)
    app_of(client)[DASHBOARD].auth.failure_delay_s = 0
    headers = {"Origin": origin(client), "Content-Type": "application/json"}
    resp = await client.post("/api/login", json={"password": "wrong"}, headers=headers)
    assert resp.status == 403
    resp = await client.post(
        "/api/login", json={"password": "correct horse"}, headers={**headers, "Origin": "null"}
    )
    assert resp.status == 403
    text = await (await client.get("/")).text()
    assert 'id="login-form"' in text
    resp = await client.post("/api/login", json={"password": "correct horse"}, headers=headers)
    assert resp.status == 200
    csrf = (await resp.json())["csrf"]
    assert "HttpOnly" in resp.headers["Set-Cookie"]
    resp = await client.post("/api/actions/pause", json={}, headers=change_headers(client, csrf))
    assert resp.status == 200
    masked = await (await client.get("/api/config")).text()
    assert "correct horse" not in masked


async def test_password_login_is_off_without_a_password(client: Client) -> None:
    headers = {"Origin": origin(client), "Content-Type": "application/json"}
    resp = await client.post("/api/login", json={"password": ""}, headers=headers)
    assert resp.status == 404
    assert 'id="login-form"' not in await (await client.get("/")).text()
