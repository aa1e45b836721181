"""The JSON contract between agent and collector: Reading, Batch and Ack.

The collector imports this module too, so both sides validate with one model.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec
import uuid_utils

MAX_BATCH_READINGS = 10_000
DEVICE_ID_MAX = 128
STREAM_MAX = 64

DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=DEVICE_ID_MAX, pattern=r"^\S+$")]
StreamId = Annotated[str, msgspec.Meta(min_length=1, max_length=STREAM_MAX, pattern=r"^\S+$")]
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Unit = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


class WireError(ValueError):
    """A payload that does not match the contract; the text says what and where."""


class Message(msgspec.Struct, forbid_unknown_fields=True):
    """The measured value and its unit."""

    value: int | float
    unit: Unit = "bpm"


class Reading(msgspec.Struct, forbid_unknown_fields=True):
    """One sensor reading as it travels on the wire."""

    id: uuid.UUID
    seq: Seq
    datetime: AwareDatetime
    message: Message


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    """What the agent POSTs: readings of one device's stream, oldest first."""

    device_id: DeviceId
    stream: StreamId
    readings: Annotated[list[Reading], msgspec.Meta(min_length=1, max_length=MAX_BATCH_READINGS)]


class Rejection(msgspec.Struct):
    """One reading that the collector will never accept, and why."""

    id: str
    error: str


class Ack(msgspec.Struct):
    """The collector's answer to a stored batch; sent only after its commit."""

    accepted: int
    duplicates: int
    rejected: list[Rejection] = msgspec.field(default_factory=list)


class ErrorBody(msgspec.Struct):
    """The body of every 4xx/5xx answer from the collector."""

    error: str


_batch_decoder = msgspec.json.Decoder(Batch)
_ack_decoder = msgspec.json.Decoder(Ack)
_encoder = msgspec.json.Encoder()


def new_reading_id() -> uuid.UUID:
    """Return a time-ordered UUIDv7, which indexes far better than a random UUID."""
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def new_stream_id() -> str:
    """Return a random stream id, created once per queue file."""
    return uuid.uuid4().hex


def encode(obj: object) -> bytes:
    """Encode any wire struct to JSON bytes."""
    return _encoder.encode(obj)


def decode_batch(body: bytes) -> Batch:
    """Decode and validate a batch; raise WireError naming the bad path."""
    try:
        return _batch_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        raise WireError(str(err)) from err


def decode_ack(body: bytes) -> Ack:
    """Decode the collector's acknowledgement; raise WireError if it is not one."""
    try:
        return _ack_decoder.decode(body)
    except msgspec.DecodeError as err:
        raise WireError(str(err)) from err
