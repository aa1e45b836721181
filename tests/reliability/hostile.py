"""Plain HTTP for hostile input: any bytes, any headers, and the answer as it comes.

Fuzzed input is counted honestly: a mutation that leaves its input as it was (a value
replaced by an equal one, a duplicate id in a batch of one) sent nothing hostile, so it is
noted apart and never counted among the hostile inputs of the figures.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.reliability.figures import Scenario

UNCHANGED = "unchanged by the mutation, not counted as hostile"


@dataclass(frozen=True)
class Answer:
    """Status, headers and body of one response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    chunked: bool = False,
) -> Answer:
    """One request on a new connection to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}), encode_chunked=chunked)
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


@dataclass(frozen=True)
class Fuzzed:
    """One fuzzed input: the mutation drawn, the bytes to send, and whether they differ from
    the input the mutation started from."""

    mutation: str
    body: bytes
    changed: bool


def tally(figures: Scenario, kind: str, fuzzed: Fuzzed) -> None:
    """Count a fuzzed input as hostile only if its mutation changed it; note the others."""
    if fuzzed.changed:
        figures.hostile[f"{kind} ({fuzzed.mutation})"] += 1
    else:
        figures.notes[UNCHANGED] = figures.notes.get(UNCHANGED, 0) + 1
