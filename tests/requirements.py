"""What a test needs from the machine: skipped without it locally, failed without it in CI.

A developer's machine may lack Chromium, Xvfb, PyInstaller, root or a PostgreSQL server, and
a skip says so without failing the run. CI has all of them (scripts/setup installs them), so
there a skip would only hide a broken set-up behind a green run: under PULSE_STRICT=1, which
.ci/run exports, every missing requirement fails its test instead. PULSE_REQUIRE_POSTGRES=1,
the older variable, still does the same for PostgreSQL alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import SplitResult, urlsplit

import pytest

STRICT = "PULSE_STRICT"
REQUIRE_POSTGRES = "PULSE_REQUIRE_POSTGRES"
DATABASE_URL = "PULSE_TEST_DATABASE_URL"
MQTT = "PULSE_TEST_MQTT"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_MQTT = "127.0.0.1:1883"
CONNECT_TIMEOUT_S = 3.0


def strict_variable(*also: str) -> str | None:
    """The variable set to 1 that turns a skip into a failure (PULSE_STRICT or one of `also`)."""
    return next((name for name in (STRICT, *also) if os.environ.get(name) == "1"), None)


def missing(reason: str, *also: str) -> NoReturn:
    """Skip the test for want of something; fail it under PULSE_STRICT=1 (or `also`=1)."""
    variable = strict_variable(*also)
    if variable is not None:
        pytest.fail(f"{reason}, and {variable}=1")
    pytest.skip(reason)


def require(ok: bool, reason: str) -> None:
    """`missing(reason)` unless `ok`."""
    if not ok:
        missing(reason)


def require_programs(*names: str) -> None:
    """Every program on PATH, or `missing` naming the ones that are not."""
    absent = [name for name in names if shutil.which(name) is None]
    require(not absent, f"missing {', '.join(absent)} (scripts/setup installs them)")


@functools.cache
def unreachable(host: str, port: int) -> str | None:
    """Why host:port takes no TCP connection, or None; asked once per test run."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as err:
        return f"{host}:{port} is unreachable ({err})"


def postgres_url() -> str:
    """The test PostgreSQL server's URL ($PULSE_TEST_DATABASE_URL), or `missing` if down."""
    url = os.environ.get(DATABASE_URL) or DEFAULT_DATABASE_URL
    parts = _split(DATABASE_URL, url)
    reason = unreachable(parts.hostname or "127.0.0.1", parts.port or 5432)
    if reason is not None:
        missing(f"PostgreSQL at {reason}; set {DATABASE_URL}", REQUIRE_POSTGRES)
    return url


async def _execute(url: str, sql: str) -> None:
    import asyncpg  # here: the helpers above serve tests that need no PostgreSQL driver

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def postgres_schema_url(prefix: str) -> Iterator[str]:
    """A fresh schema on the test server, dropped afterwards; yields a URL that uses it
    (asyncpg passes `?search_path=` to the server). For tests outside an event loop."""
    url = postgres_url()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(url, f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    finally:
        asyncio.run(_execute(url, f"DROP SCHEMA {schema} CASCADE"))


def mosquitto_address() -> tuple[str, int]:
    """The test MQTT broker's (host, port) ($PULSE_TEST_MQTT, host:port), or `missing`."""
    parts = _split(MQTT, os.environ.get(MQTT) or DEFAULT_MQTT)
    host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    reason = unreachable(host, port)
    if reason is not None:
        missing(f"Mosquitto at {reason}; set {MQTT}")
    return host, port


def _split(variable: str, value: str) -> SplitResult:
    """The address in `value`; a malformed one fails the test whatever the mode, naming it."""
    # host:port has no scheme; "//" lets urlsplit read it, [::1]:1883 included
    parts = urlsplit(value if "://" in value else f"//{value}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError as err:
        pytest.fail(f"{variable}={value!r}: {err}")
    return parts
