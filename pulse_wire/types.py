"""The wire types: Reading, Batch and Ack, with the limits every payload must keep."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

MAX_BATCH_READINGS = 10_000
DEVICE_ID_MAX = 128
STREAM_MAX = 64

# No whitespace, spelled to mean the same to this server (Python's re) and to a client that
# validates against docs/openapi.yaml (ECMA-262): only Python's \s holds \x1c-\x1f and
# \x85, only ECMA's \ufeff, and Python's $ also matches before a final "\n". No NUL
# either, in ids or units: PostgreSQL text cannot hold one.
NO_SPACE = r"^[^\s\x00\x1c-\x1f\x85\ufeff]+$(?!\n)"
NO_NUL = r"^[^\x00]*$"
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=DEVICE_ID_MAX, pattern=NO_SPACE)]
StreamId = Annotated[str, msgspec.Meta(min_length=1, max_length=STREAM_MAX, pattern=NO_SPACE)]
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Unit = Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=NO_NUL)]
# A Message's unit: the same contract (the schema shows the pattern), but the decoder leaves
# the NUL check to `decode_batch`, which looks for one in the whole body at once. msgspec
# would run Python's re on every reading's unit: 30 % of a 1,000-reading POST's handling.
MessageUnit = Annotated[
    str, msgspec.Meta(min_length=1, max_length=16, extra_json_schema={"pattern": NO_NUL})
]


class Message(msgspec.Struct, forbid_unknown_fields=True):
    """The measured value and its unit."""

    value: int | float
    unit: MessageUnit = "bpm"


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


class StrictMessage(Message, forbid_unknown_fields=True):
    """Message with its unit checked for NUL by the decoder: only to name a NUL's path."""

    unit: Unit = "bpm"


class StrictReading(Reading, forbid_unknown_fields=True):
    """Reading of a StrictMessage."""

    message: StrictMessage


class StrictBatch(Batch, forbid_unknown_fields=True):
    """Batch whose readings' units are checked for NUL by the decoder (see MessageUnit)."""

    # never used as a Batch: decode_batch only asks it whether a body is refused, and why
    readings: Annotated[  # type: ignore[assignment]
        list[StrictReading], msgspec.Meta(min_length=1, max_length=MAX_BATCH_READINGS)
    ]


class Rejection(msgspec.Struct):
    """One reading that the server will never accept, and why."""

    id: str
    error: str


class Ack(msgspec.Struct):
    """The server's answer to a stored batch; sent only after its commit."""

    accepted: int
    duplicates: int
    rejected: list[Rejection] = msgspec.field(default_factory=list)


class ErrorBody(msgspec.Struct):
    """The body of every 4xx/5xx answer from the server."""

    error: str
