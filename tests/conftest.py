"""Fixtures and builders shared by the test modules: processes, times, wire readings."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.harness import Proc
from tests.receivers import Mailbox, Webhook, smtp_server

# a fixed instant for readings whose time only has to be valid and ordered
T0 = dt.datetime(2026, 11, 26, 23, 0, tzinfo=dt.UTC)


def at(i: float) -> dt.datetime:
    """T0 plus `i` seconds."""
    return T0 + dt.timedelta(seconds=i)


def rid(n: int) -> str:
    """A valid UUIDv7 text that carries `n`, so a test can tell readings apart by id."""
    return f"01900000-0000-7000-8000-{n:012x}"


def reading(seq: int, value: float = 72, id_: int | None = None, **extra: Any) -> dict[str, Any]:
    """One reading in wire shape, a minute old; `when=` sets its time, other keywords add keys."""
    when: dt.datetime = extra.pop("when", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60))
    return {
        "id": rid(seq if id_ is None else id_),
        "seq": seq,
        "datetime": when.isoformat(),
        "message": {"value": value, "unit": "bpm"},
        **extra,
    }


def batch(n: int, device_id: str = "proc-dev") -> dict[str, Any]:
    """A batch body of `n` readings, seq 1..n, on stream s1."""
    readings = [reading(seq, value=60 + seq) for seq in range(1, n + 1)]
    return {"device_id": device_id, "stream": "s1", "readings": readings}


def post_json(url: str, payload: object, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST `payload` as JSON; the status and the decoded answer, error answers included."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test started; killed at the end whatever happened."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    """A real webhook receiver (aiohttp) on loopback, for Apprise's json:// URLs."""
    async with Webhook().running() as hook:
        yield hook


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, str]]:
    """A real SMTP server (aiosmtpd) on loopback, and the mailto:// URL that reaches it."""
    with smtp_server() as found:
        yield found
