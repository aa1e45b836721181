"""The contract between the agent and the server: wire types, their encoding, batch checks.

Both programs import this package and neither imports the other, so a change to what
travels on the wire is made here, once.
"""

from pulse_wire.encoding import (
    READING_JSON_SQL,
    WireError,
    batch_body,
    decode_ack,
    decode_batch,
    encode,
)
from pulse_wire.ids import new_reading_id, new_stream_id
from pulse_wire.types import (
    DEVICE_ID_MAX,
    MAX_BATCH_READINGS,
    STREAM_MAX,
    Ack,
    AwareDatetime,
    Batch,
    DeviceId,
    ErrorBody,
    Message,
    Reading,
    Rejection,
    Seq,
    StreamId,
    Unit,
)
from pulse_wire.validation import (
    ANY_FINITE,
    EARLIEST,
    MAX_FUTURE,
    PLAUSIBLE_RANGES,
    problem,
    split_batch,
)

__all__ = [
    "ANY_FINITE",
    "DEVICE_ID_MAX",
    "EARLIEST",
    "MAX_BATCH_READINGS",
    "MAX_FUTURE",
    "PLAUSIBLE_RANGES",
    "READING_JSON_SQL",
    "STREAM_MAX",
    "Ack",
    "AwareDatetime",
    "Batch",
    "DeviceId",
    "ErrorBody",
    "Message",
    "Reading",
    "Rejection",
    "Seq",
    "StreamId",
    "Unit",
    "WireError",
    "batch_body",
    "decode_ack",
    "decode_batch",
    "encode",
    "new_reading_id",
    "new_stream_id",
    "problem",
    "split_batch",
]
