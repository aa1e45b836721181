"""The ids the contract scopes readings by: a reading's UUIDv7 and a queue file's stream."""

from __future__ import annotations

import uuid

import uuid_utils


def new_reading_id() -> uuid.UUID:
    """Return a time-ordered UUIDv7, which indexes far better than a random UUID."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def new_stream_id() -> str:
    """Return a random stream id, created once per queue file."""
    return uuid.uuid4().hex
