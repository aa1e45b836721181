"""The access rules and the login, through the collector's real app on a real SQLite file."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from collector.accounts.access import kind_of
from collector.accounts.login import SESSION_COOKIE, set_session_cookie
from collector.accounts.passwords import Passwords
from collector.accounts.service import FAILURE_LIMIT
from collector.accounts.store import AccountStore
from collector.app import create_app
from collector.config import CollectorConfig

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
PASSWORD = "correct horse"
READ_TOKEN = "read-token-1"
DEVICE_TOKEN = "device-token-1"
# a change and a read of our own, so the rules are tested apart from any other feature
PROBE = "/api/v1/probe"


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def probe(request: web.Request) -> web.Response:
    return web.json_response({"method": request.method})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "collector.db")


async def add_user(db: str, name: str = "alice", password: str = PASSWORD) -> None:
    """A user in the file, before the server starts (as `create-user` makes one)."""
    store = await AccountStore.open(db=db, database_url="")
    try:
        hashed = await Passwords().hash(password)
        await store.set_password(name, hashed, dt.datetime.now(dt.UTC))
    finally:
        await store.close()


@pytest.fixture
def start(aiohttp_client: MakeClient, db: str, clock: Clock) -> Callable[..., Awaitable[Client]]:
    async def start(**settings: Any) -> Client:
        app = create_app(CollectorConfig(db=db, **settings), clock=clock)
        app.router.add_route("*", PROBE, probe)
        return await aiohttp_client(app)

    return start


async def sign_in(client: Client, name: str = "alice", password: str = PASSWORD) -> str:
    """Sign in over JSON; the CSRF token. The cookie stays in the client's jar."""
    resp = await client.post("/api/v1/session", json={"username": name, "password": password})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["user"] == name
    return str(body["csrf"])


def cookie_of(resp: Any) -> str:
    return str(resp.headers.get("Set-Cookie", ""))


async def test_open_mode_reads_and_changes_without_credentials(
    start: Callable[..., Awaitable[Client]],
) -> None:
    client = await start()
    assert (await client.get("/api/v1/devices")).status == 200
    assert (await client.get(PROBE)).status == 200
    assert (await client.post(PROBE)).status == 200
    session = await (await client.get("/api/v1/session")).json()
    assert session == {"user": None, "csrf": "", "open_mode": True}


async def test_open_mode_refuses_another_origin(start: Callable[..., Awaitable[Client]]) -> None:
    client = await start()
    host = f"http://{client.host}:{client.port}"
    assert (await client.post(PROBE, headers={"Origin": host})).status == 200
    for origin in ("http://evil.example", "null", f"http://{client.host}:1"):
        resp = await client.post(PROBE, headers={"Origin": origin})
        assert resp.status == 403, origin
        assert "another origin" in (await resp.json())["error"]
    # a websocket opened by another site's page carries its Origin too
    assert (await client.get(PROBE, headers={"Origin": "http://evil.example"})).status == 403


async def test_with_a_user_every_read_needs_credentials(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    await add_user(db)
    client = await start()
    for path in ("/api/v1/devices", "/api/v1/readings?device_id=d", "/api/v1/live", PROBE):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="pulse-collector"'
        assert "error" in await resp.json()
    assert (await client.post(PROBE)).status == 401
    session = await (await client.get("/api/v1/session")).json()
    assert session == {"user": None, "csrf": "", "open_mode": False}
    # the public paths stay public
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/login")).status == 200
    assert (await client.get("/static/app.css")).status == 200


async def test_a_page_without_credentials_goes_to_the_login_form(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    await add_user(db)
    client = await start()
    resp = await client.get("/devices/ward-3?range=1h", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/login?next=/devices/ward-3%3Frange%3D1h"
    page = await client.get(resp.headers["Location"])
    assert page.status == 200
    assert 'name="next" value="/devices/ward-3?range=1h"' in await page.text()


async def test_a_session_reads_and_changes_with_its_csrf_token(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    await add_user(db)
    client = await start()
    csrf = await sign_in(client)
    assert (await client.get("/api/v1/devices")).status == 200
    assert (await client.get("/api/v1/channels")).status != 401
    assert (await client.get("/api/v1/session")).status == 200
    without = await client.post(PROBE)
    assert without.status == 403
    assert "X-CSRF-Token" in (await without.json())["error"]
    assert (await client.post(PROBE, headers={"X-CSRF-Token": "wrong"})).status == 403
    assert (await client.delete(PROBE, headers={"X-CSRF-Token": csrf})).status == 200
    assert (await client.post(PROBE, headers={"X-CSRF-Token": csrf})).status == 200
    who = await (await client.get("/api/v1/session")).json()
    assert who == {"user": "alice", "csrf": csrf, "open_mode": False}


async def test_a_read_token_reads_but_never_changes(
    start: Callable[..., Awaitable[Client]],
) -> None:
    client = await start(read_tokens=[READ_TOKEN], tokens={"dev": DEVICE_TOKEN})
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert (await client.get("/api/v1/devices", headers=auth)).status == 200
    assert (await client.get(PROBE, headers=auth)).status == 200
    # channel URLs hold secrets: a session's, not a token's
    assert (await client.get("/api/v1/channels", headers=auth)).status == 403
    for method in ("POST", "PUT", "DELETE"):
        resp = await client.request(method, PROBE, headers=auth)
        assert resp.status == 403, method
    assert (await client.get("/api/v1/devices")).status == 401
    # a device token, or anything else, never reads
    for token in (DEVICE_TOKEN, "nope", READ_TOKEN + "x"):
        resp = await client.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401, token
        assert "not a read token" in (await resp.json())["error"]


async def test_login_form_signs_in_and_goes_to_a_local_next_only(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    await add_user(db)
    client = await start()
    for given, expected in (
        ("/devices/ward-3?range=1h", "/devices/ward-3?range=1h"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("", "/"),
    ):
        form = {"username": "alice", "password": PASSWORD, "next": given}
        resp = await client.post("/login", data=form, allow_redirects=False)
        assert resp.status == 303, given
        assert resp.headers["Location"] == expected, given
    assert (await client.get("/api/v1/devices")).status == 200


async def test_the_session_cookie_is_httponly_lax_and_lasts_14_days(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    await add_user(db)
    client = await start()
    resp = await client.post("/api/v1/session", json={"username": "alice", "password": PASSWORD})
    cookie = cookie_of(resp)
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", f"Max-Age={14 * 24 * 3600}"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back


def test_the_session_cookie_is_secure_on_https() -> None:
    request = make_mocked_request("POST", "/login", sslcontext=True)  # type: ignore[arg-type]
    response = web.Response()
    set_session_cookie(request, response, "token")
    assert "Secure" in response.cookies[SESSION_COOKIE].output()


async def test_wrong_passwords_and_unknown_users_get_the_same_401(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    await add_user(db)
    client = await start()
    answers = []
    for name, password in (("alice", "wrong password"), ("nobody", PASSWORD)):
        resp = await client.post("/api/v1/session", json={"username": name, "password": password})
        assert resp.status == 401
        answers.append(await resp.json())
        form = await client.post("/login", data={"username": name, "password": password})
        assert form.status == 401
        text = await form.text()
        assert "Wrong user name or password" in text
        assert f'value="{name}"' in text
        assert password not in text
        assert SESSION_COOKIE not in form.cookies
    assert answers[0] == answers[1] == {"error": "Wrong user name or password"}
    resp = await client.post("/api/v1/session", json={"username": "alice"})
    assert resp.status == 400
    assert "password" in (await resp.json())["error"]
    # bytes that are no UTF-8 (a lone surrogate's, here) are still only a wrong password
    odd = "username=al%ED%A0%80ice&password=pass%ED%B0%80word&next=%ED%A0%80"
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    assert (await client.post("/login", data=odd, headers=form_type)).status == 401
    # a form of another site could send this as text/plain, but not as JSON
    text = json.dumps({"username": "alice", "password": PASSWORD})
    plain = await client.post("/api/v1/session", data=text, headers={"Content-Type": "text/plain"})
    assert plain.status == 415


async def test_failed_logins_are_limited_and_the_limit_survives_a_restart(
    start: Callable[..., Awaitable[Client]], db: str, caplog: pytest.LogCaptureFixture
) -> None:
    await add_user(db)
    client = await start()
    for _ in range(FAILURE_LIMIT):
        wrong = {"username": "alice", "password": "guess-guess"}
        assert (await client.post("/api/v1/session", json=wrong)).status == 401
    right = {"username": "alice", "password": PASSWORD}
    resp = await client.post("/api/v1/session", json=right)
    assert resp.status == 429
    assert 0 < int(resp.headers["Retry-After"]) <= 15 * 60
    # the address is limited too, whatever the name
    other = {"username": "bob", "password": PASSWORD}
    assert (await client.post("/api/v1/session", json=other)).status == 429
    form = await client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert form.status == 429
    assert "Retry-After" in form.headers
    assert "Too many failed sign-ins" in await form.text()
    assert "guess-guess" not in caplog.text
    assert PASSWORD not in caplog.text
    assert "login of 'alice' from 127.0.0.1 failed" in caplog.text
    await client.close()
    again = await start()
    assert (await again.post("/api/v1/session", json=right)).status == 429


async def test_a_limit_passes_after_15_minutes(
    start: Callable[..., Awaitable[Client]], db: str, clock: Clock
) -> None:
    await add_user(db)
    client = await start()
    for _ in range(FAILURE_LIMIT):
        await client.post("/api/v1/session", json={"username": "alice", "password": "x" * 8})
    right = {"username": "alice", "password": PASSWORD}
    resp = await client.post("/api/v1/session", json=right)
    assert resp.status == 429
    clock.now += dt.timedelta(seconds=int(resp.headers["Retry-After"]))
    assert (await client.post("/api/v1/session", json=right)).status == 200


async def test_logout_ends_the_session(start: Callable[..., Awaitable[Client]], db: str) -> None:
    await add_user(db)
    client = await start()
    await sign_in(client)
    token = next(c.value for c in client.session.cookie_jar if c.key == SESSION_COOKIE)
    resp = await client.post("/logout", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/login"
    assert f'{SESSION_COOKIE}=""' in cookie_of(resp) or "Max-Age=0" in cookie_of(resp)
    # the old cookie, kept by someone, no longer reads
    stolen = {"Cookie": f"{SESSION_COOKIE}={token}"}
    assert (await client.get("/api/v1/devices", headers=stolen)).status == 401
    await sign_in(client)
    assert (await client.delete("/api/v1/session")).status == 204
    assert (await client.get("/api/v1/devices")).status == 401


async def test_a_session_is_refreshed_hourly_and_expires_after_14_idle_days(
    start: Callable[..., Awaitable[Client]], db: str, clock: Clock
) -> None:
    await add_user(db)
    client = await start()
    await sign_in(client)
    clock.now += dt.timedelta(minutes=30)
    resp = await client.get("/api/v1/devices")
    assert resp.status == 200
    assert SESSION_COOKIE not in cookie_of(resp)
    clock.now += dt.timedelta(hours=1)
    resp = await client.get("/api/v1/devices")
    assert resp.status == 200
    assert "Max-Age=1209600" in cookie_of(resp)
    clock.now += dt.timedelta(days=14)
    assert (await client.get("/api/v1/devices")).status == 401


async def test_a_new_password_signs_the_user_out(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    await add_user(db)
    client = await start()
    await sign_in(client)
    assert (await client.get("/api/v1/devices")).status == 200
    await add_user(db, password="another password")
    assert (await client.get("/api/v1/devices")).status == 401


async def test_a_user_created_while_running_closes_open_mode_within_a_second(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    client = await start()
    assert (await client.get("/api/v1/devices")).status == 200
    await add_user(db)
    for _ in range(100):
        if (await client.get("/api/v1/devices")).status == 401:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("reads stayed open after a user was created")


async def test_off_loopback_an_emptied_user_table_closes_rather_than_opens(
    aiohttp_client: MakeClient, db: str
) -> None:
    await add_user(db)
    app = create_app(CollectorConfig(db=db, host="0.0.0.0"))
    client = await aiohttp_client(app)
    store = await AccountStore.open(db=db, database_url="")
    try:
        await store.delete_user("alice")
    finally:
        await store.close()
    # within the user cache's lifetime (1 s), the emptied table closes reads
    for _ in range(60):
        resp = await client.get("/api/v1/devices")
        if resp.status != 200:
            break
        await asyncio.sleep(0.05)
    assert resp.status == 401
    assert (await (await client.get("/api/v1/session")).json())["open_mode"] is False


async def test_a_method_a_path_does_not_take_is_405_for_anyone(
    start: Callable[..., Awaitable[Client]], db: str
) -> None:
    await add_user(db)
    client = await start(read_tokens=[READ_TOKEN])
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    for path, headers in (("/login", {}), ("/api/v1/devices", auth), ("/healthz", {})):
        resp = await client.request("TRACE", path, headers=headers)
        assert resp.status == 405, path
        assert "GET" in resp.headers["Allow"]


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/healthz", "public"),
        ("HEAD", "/login", "public"),
        ("POST", "/login", "public"),
        ("POST", "/logout", "public"),
        ("GET", "/static/app.css", "public"),
        ("POST", "/api/v1/readings", "public"),
        ("GET", "/api/v1/readings", "read"),
        ("GET", "/api/v1/live", "read"),
        ("GET", "/", "read"),
        ("GET", "/api/v1/channels", "secret_read"),
        ("GET", "/api/v1/channels/ops", "secret_read"),
        ("GET", "/api/v1/channelsx", "read"),
        ("POST", "/api/v1/alerts/ack", "change"),
        ("PUT", "/api/v1/rules/x", "change"),
        ("DELETE", "/api/v1/rules/x", "change"),
        ("GET", "/logout", "read"),
    ],
)
def test_kinds_of_request(method: str, path: str, kind: str) -> None:
    assert kind_of(method, path) == kind
