"""Hostile input to the dashboard: DNS rebinding, cross-site posts, websocket hijacking,
missing or wrong CSRF tokens, and fuzzed config edits. All are refused; config.json stays
valid; the agent goes on delivering."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import load_config
from tests.reliability.figures import Scenario, scaled
from tests.reliability.hostile import Answer, request
from tests.reliability.pipeline import Pipeline, drain_and_check

EVIL = "http://evil.example"
EDITS = 100


class Dashboard:
    """The running agent's dashboard, unlocked the way a browser is: cookie plus CSRF."""

    def __init__(self, pipe: Pipeline):
        assert pipe.agent is not None
        self.pipe = pipe
        self.port = pipe.dashboard_port
        self.host = f"127.0.0.1:{self.port}"
        self.origin = f"http://{self.host}"
        found = re.search(r"dashboard: (\S+\?token=(\S+))", pipe.agent.output())
        assert found, "the agent did not print its unlock link"
        self.secret = found[2]
        answer = self.send("GET", f"/?token={self.secret}")
        assert answer.status == 303
        cookie = SimpleCookie(answer.headers["set-cookie"])
        (morsel,) = cookie.values()
        self.cookie = f"{morsel.key}={morsel.value}"
        self.csrf = self.send("GET", "/api/session", cookie=True).json()["csrf"]
        assert self.csrf

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        host: str | None = None,
        cookie: bool = False,
        **headers: str,
    ) -> Answer:
        """One request; the Host is ours unless given, the cookie only if asked."""
        sent = {"Host": host if host is not None else self.host}
        if cookie:
            sent["Cookie"] = self.cookie
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        return request(self.port, method, path, body, sent)

    def change(self, path: str, body: bytes, method: str = "POST") -> Answer:
        """A change exactly as the dashboard's own page makes it."""
        return self.send(
            method,
            path,
            body,
            cookie=True,
            Origin=self.origin,
            Content_Type="application/json",
            X_CSRF_Token=self.csrf,
        )


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A collector and an agent, running for the whole module."""
    pipe = Pipeline(tmp_path_factory.mktemp("hostile-dashboard"))
    pipe.start_collector()
    pipe.start_agent()
    try:
        yield Dashboard(pipe)
    finally:
        pipe.stop()


@pytest.fixture
def unchanged(dashboard: Dashboard) -> Iterator[None]:
    """The refused requests changed nothing: config.json and the agent's state are as before."""
    config = dashboard.pipe.agent_dir / "config.json"
    before = config.read_bytes()
    yield
    assert config.read_bytes() == before
    assert dashboard.pipe.status()["state"] != "paused"


REBOUND_HOSTS = [
    "evil.example",
    "evil.example:{port}",
    "127.0.0.1.evil.example:{port}",
    "localhost.evil.example:{port}",
    "127.0.0.1:{other}",
    "[::1]:{other}",
    "192.168.1.10:{port}",
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("host", REBOUND_HOSTS)
def test_dns_rebinding_host_is_refused(dashboard: Dashboard, figures: Scenario, host: str) -> None:
    """a Host that is not this dashboard's: refused, for reads and for changes"""
    host = host.format(port=dashboard.port, other=dashboard.port + 1)
    assert dashboard.send("GET", "/api/status", host=host).status == 403
    answer = dashboard.send(
        "POST",
        "/api/actions/pause",
        b"{}",
        host=host,
        cookie=True,
        Origin=f"http://{host}",
        Content_Type="application/json",
        X_CSRF_Token=dashboard.csrf,
    )
    figures.hostile["DNS-rebinding Host"] += 2
    assert answer.status == 403


CROSS_SITE: dict[str, dict[str, str | None]] = {
    "form post from another site": {
        "Origin": EVIL,
        "Content_Type": "application/x-www-form-urlencoded",
    },
    "form post with Origin null": {"Origin": "null", "Content_Type": "text/plain"},
    "fetch from another site": {"Origin": EVIL, "Content_Type": "application/json"},
    "post without Origin": {"Origin": None, "Content_Type": "application/json"},
    "same-origin text/plain post": {"Content_Type": "text/plain"},
    "same-origin form post": {"Content_Type": "application/x-www-form-urlencoded"},
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(CROSS_SITE))
@pytest.mark.parametrize("path", ["/api/actions/pause", "/api/config"])
def test_cross_site_posts_are_refused(
    dashboard: Dashboard, figures: Scenario, case: str, path: str
) -> None:
    """cross-site form and fetch posts, with the victim's cookie and even its CSRF token"""
    spec = {"Origin": dashboard.origin, **CROSS_SITE[case], "X_CSRF_Token": dashboard.csrf}
    headers = {k: v for k, v in spec.items() if v is not None}
    method = "PUT" if path == "/api/config" else "POST"
    body = b'{"sender": {"batch_size": 1}}'
    answer = dashboard.send(method, path, body, cookie=True, **headers)
    figures.hostile[case] += 1
    assert answer.status == 403, answer


CSRF = {
    "missing CSRF token": {"X_CSRF_Token": None, "cookie": True},
    "wrong CSRF token": {"X_CSRF_Token": "forged", "cookie": True},
    "CSRF token without the session cookie": {"cookie": False},
}


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("case", list(CSRF))
def test_missing_or_wrong_csrf_is_refused(
    dashboard: Dashboard, figures: Scenario, case: str
) -> None:
    """same origin, JSON, but no valid session + CSRF pair: refused"""
    spec = CSRF[case]
    headers = {"Origin": dashboard.origin, "Content_Type": "application/json"}
    token = spec.get("X_CSRF_Token", dashboard.csrf)
    if token is not None:
        headers["X_CSRF_Token"] = str(token)
    answer = dashboard.send(
        "POST", "/api/actions/pause", b"{}", cookie=bool(spec["cookie"]), **headers
    )
    figures.hostile[case] += 1
    assert answer.status == 403


WS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec_WebSocket_Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec_WebSocket_Version": "13",
}


@pytest.mark.usefixtures("unchanged")
def test_websocket_hijack_is_refused(dashboard: Dashboard, figures: Scenario) -> None:
    """a websocket from another site's page: refused; from the dashboard's own page: opened"""
    for origin in (EVIL, "null", f"http://127.0.0.1:{dashboard.port + 1}"):
        answer = dashboard.send("GET", "/ws", cookie=True, Origin=origin, **WS)
        figures.hostile["websocket hijack"] += 1
        assert answer.status == 403, origin
    answer = dashboard.send("GET", "/ws", host="evil.example", Origin=EVIL, **WS)
    figures.hostile["websocket hijack"] += 1
    assert answer.status == 403
    assert dashboard.send("GET", "/ws", Origin=dashboard.origin, **WS).status == 101


@pytest.mark.usefixtures("unchanged")
def test_wrong_unlock_secret_opens_nothing(dashboard: Dashboard, figures: Scenario) -> None:
    """an unlock link with a wrong secret: no session cookie"""
    answer = dashboard.send("GET", "/?token=" + "A" * len(dashboard.secret))
    figures.hostile["wrong unlock secret"] += 1
    assert answer.status == 303
    assert "set-cookie" not in answer.headers
    assert "unlock=failed" in answer.headers["location"]


seconds = st.floats(0.05, 60)
words = st.from_regex(r"\A[a-z0-9_.-]{1,20}\Z")
# every key, with values it may well take: a fuzzed edit mixes these with hostile ones
KEYS: dict[str, Any] = {
    "device_id": st.one_of(words, st.text(max_size=140)),
    "sensor": {"kind": st.just("fake_heart_rate"), "interval_s": seconds, "seed": st.integers()},
    "server": {
        "host": words,
        "port": st.integers(1, 65535),
        "tls": st.booleans(),
        "path": words.map(lambda w: "/" + w),
        "token": words,
        "timeout_s": seconds,
    },
    "sender": {
        "interval_s": seconds,
        "batch_size": st.integers(1, 10_000),
        "catchup_batch_size": st.integers(1, 10_000),
        "max_backoff_s": seconds,
    },
    "storage": {"path": words, "max_pending": st.integers(1, 10**7)},
    "dashboard": {"host": st.just("127.0.0.1"), "port": st.integers(1, 65535), "password": words},
    "logs": {
        "dir": words,
        "level": st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"]),
        "keep_hours": st.integers(1, 10_000),
    },
}
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["", "DEBUG", "fake_heart_rate", "127.0.0.1", "0.0.0.0", "/x", "••••"]),
)
any_json = st.recursive(
    leaves,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c),
    max_leaves=12,
)


@st.composite
def edits(draw: st.DrawFn) -> bytes:
    """A settings edit: mostly real sections and keys with hostile values, sometimes junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(
            st.one_of(st.binary(max_size=200), any_json.map(lambda v: json.dumps(v).encode()))
        )
    body: dict[str, Any] = {}
    hostile = draw(st.integers(0, 3)) == 0
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=3)):
        keys = KEYS[section]
        if not isinstance(keys, dict):
            body[section] = draw(leaves if hostile else keys)
            continue
        names = draw(st.lists(st.sampled_from([*keys, "unknown"]), min_size=1, max_size=3))
        body[section] = {
            name: draw(leaves if hostile or name not in keys else keys[name]) for name in names
        }
    return json.dumps(body).encode()


@settings(
    max_examples=scaled(EDITS),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=edits())
def test_fuzzed_config_edits_keep_config_valid(
    dashboard: Dashboard, figures: Scenario, body: bytes
) -> None:
    """fuzzed settings edits: a 2xx or a 4xx, never a 5xx; config.json always loads"""
    config = dashboard.pipe.agent_dir / "config.json"
    before = config.read_bytes()
    answer = dashboard.change("/api/config", body, method="PUT")
    figures.hostile["fuzzed config edit"] += 1
    figures.notes[f"answer {answer.status}"] = figures.notes.get(f"answer {answer.status}", 0) + 1
    assert answer.status in (200, 400, 409, 422), answer
    load_config(config)  # raises if the file is not a valid config
    if answer.status != 200:
        assert config.read_bytes() == before, "a refused edit changed config.json"


def test_agent_delivers_after_the_attacks(dashboard: Dashboard, figures: Scenario) -> None:
    """after all of it, with its config put back, the agent delivers every reading once"""
    pipe = dashboard.pipe
    assert pipe.agent is not None
    assert pipe.agent.popen.poll() is None, "the attacks stopped the agent"
    assert pipe.status()["last_reading"] is not None
    # config.json is rewritten from the pipeline's settings; an accepted edit may have set a
    # small storage.max_pending, so counted drops are no loss
    drain_and_check(pipe, figures, capped=True)
