"""trusted_proxies in real collector processes: the client's address behind a proxy.

- from a trusted peer, X-Forwarded-For names the client: the failed-login limit counts
  203.0.113.7 alone (a second forwarded address still signs in), the log names it, and
  X-Forwarded-Proto https makes the session cookie Secure;
- with no trusted proxy, or from a peer that is not one, the header is ignored: every
  attempt counts against 127.0.0.1, whatever address it claims;
- a bad X-Forwarded-For from a trusted peer is a JSON 400; a bad entry is a config error
  naming `trusted_proxies[i]`;
- through the real fleet (nginx in front), a failed login is logged with the client's
  address, not nginx's.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.fleet import FleetOptions, start_fleet
from tests.harness import Proc, free_port, start_collector, wait_until
from tests.requirements import postgres_schema_url
from tests.test_accounts_process import PASSWORD, create_user
from tests.test_fleet import nginx_or_missing

pytestmark = pytest.mark.e2e

CLIENT = "203.0.113.7"
OTHER_CLIENT = "203.0.113.8"
FAILURE_LIMIT = 5  # collector/accounts/service.py FAILURE_LIMIT
# a loopback address that is not nginx's own, so a log naming it names the client
FLEET_CLIENT = "127.0.0.2"


def sign_in(
    url: str, name: str, password: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    """A JSON sign-in: its status, JSON body, and Set-Cookie ("" if none)."""
    body = json.dumps({"username": name, "password": password}).encode()
    request = urllib.request.Request(
        f"{url}/api/v1/session",
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read()), resp.headers["Set-Cookie"] or ""
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), ""


def forwarded(address: str, proto: str = "http") -> dict[str, str]:
    """The headers nginx adds for a client at `address`."""
    return {"X-Forwarded-For": address, "X-Forwarded-Proto": proto}


def fail_from(url: str, address: str) -> None:
    """FAILURE_LIMIT failed sign-ins of an unknown name, forwarded for `address`."""
    for _ in range(FAILURE_LIMIT):
        status, _, _ = sign_in(url, "nobody", "wrong password", forwarded(address))
        assert status == 401


def logged(proc: Proc, line: str) -> None:
    """Wait until the collector's console shows `line` (its log is written as it goes)."""
    try:
        wait_until(lambda: line in proc.output(), 10)
    except AssertionError:
        raise AssertionError(f"{line!r} not logged:\n{proc.output()[-3000:]}") from None


def collector_with(tmp_path: Path, config: dict[str, Any]) -> Proc:
    """A collector with this config file and a user alice in its SQLite file."""
    path = tmp_path / "collector.json"
    path.write_text(json.dumps(config))
    made = create_user(tmp_path, "alice", PASSWORD, "--db", str(tmp_path / "collector.db"))
    assert made.returncode == 0, made.stderr
    return start_collector(tmp_path, None, "--config", str(path))


@pytest.fixture
def database_url() -> Iterator[str]:
    """A schema of this test's own on the test PostgreSQL server."""
    with postgres_schema_url("pulse_proxies") as url:
        yield url


def test_trusted_proxy_forwards_the_client(tmp_path: Path, procs: list[Proc]) -> None:
    """from a trusted peer: failures count per forwarded client, logged under its address"""
    proc = collector_with(tmp_path, {"trusted_proxies": ["127.0.0.1", "::1"]})
    procs.append(proc)
    fail_from(proc.url, CLIENT)
    status, body, _ = sign_in(proc.url, "alice", PASSWORD, forwarded(CLIENT))
    assert status == 429, body
    assert "Too many failed sign-ins" in body["error"], body
    status, body, cookie = sign_in(proc.url, "alice", PASSWORD, forwarded(OTHER_CLIENT))
    assert status == 200, body
    assert "; Secure" not in cookie, cookie
    logged(proc, f"login of 'nobody' from {CLIENT} failed")
    logged(proc, f"alice signed in from {OTHER_CLIENT}")
    # https at the proxy: the session cookie is sent over https only
    status, body, cookie = sign_in(proc.url, "alice", PASSWORD, forwarded(OTHER_CLIENT, "https"))
    assert status == 200, body
    assert "; Secure" in cookie, cookie


@pytest.mark.parametrize(
    "config",
    [{}, {"trusted_proxies": ["10.0.0.0/8"]}],
    ids=["none-trusted", "peer-not-trusted"],
)
def test_untrusted_forwarding_is_ignored(
    tmp_path: Path, procs: list[Proc], config: dict[str, Any]
) -> None:
    """no trusted proxy, or a peer that is not one: a claimed address changes nothing"""
    proc = collector_with(tmp_path, config)
    procs.append(proc)
    fail_from(proc.url, CLIENT)
    # another claimed address is still 127.0.0.1, which has failed five times
    status, body, cookie = sign_in(proc.url, "alice", PASSWORD, forwarded(OTHER_CLIENT, "https"))
    assert status == 429, body
    logged(proc, "login of 'alice' from 127.0.0.1 refused")
    assert CLIENT not in proc.output(), proc.output()[-3000:]


def test_bad_forwarded_for_is_a_json_400(tmp_path: Path, procs: list[Proc]) -> None:
    """a trusted peer's unreadable X-Forwarded-For: 400 with a JSON error, like every error"""
    proc = collector_with(tmp_path, {"trusted_proxies": ["127.0.0.1"]})
    procs.append(proc)
    status, body, _ = sign_in(proc.url, "alice", PASSWORD, {"X-Forwarded-For": "not-an-ip"})
    assert status == 400, body
    assert "X-Forwarded-For" in body["error"], body
    # without the header, a direct request (a health check, say) is served as before
    status, body, _ = sign_in(proc.url, "alice", PASSWORD)
    assert status == 200, body


def test_bad_entry_is_a_config_error(tmp_path: Path) -> None:
    """a trusted proxy that is no address or network: the collector names the entry"""
    path = tmp_path / "collector.json"
    path.write_text(json.dumps({"trusted_proxies": ["127.0.0.1", "nginx"]}))
    cmd = [sys.executable, "-m", "collector", "--config", str(path), "--port", str(free_port())]
    cmd += ["--db", str(tmp_path / "collector.db")]
    done = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "trusted_proxies[1]" in done.stderr, done.stderr
    assert "IP address or network" in done.stderr, done.stderr


def fleet_sign_in(port: int, name: str, password: str) -> int:
    """A JSON sign-in through nginx from FLEET_CLIENT; its status."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(FLEET_CLIENT, 0)
    )
    try:
        body = json.dumps({"username": name, "password": password})
        conn.request("POST", "/api/v1/session", body, {"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_fleet_logs_the_client_behind_nginx(tmp_path: Path, database_url: str) -> None:
    """behind the real nginx, a failed login is logged with the client's address"""
    nginx = nginx_or_missing()
    port = free_port()
    options = FleetOptions(
        instances=1,
        port=port,
        database_url=database_url,
        run_dir=tmp_path / "fleet",
        nginx=nginx,
        workers="1",
    )
    fleet = start_fleet(options)
    try:
        assert fleet_sign_in(port, "nobody", "wrong password") == 401
        (collector,) = fleet.collectors
        line = f"login of 'nobody' from {FLEET_CLIENT} failed"
        try:
            wait_until(lambda: line in collector.tail(10**9), 10)
        except AssertionError:
            raise AssertionError(f"{line!r} not logged:\n{collector.tail()}") from None
    finally:
        fleet.stop()
