"""The wire's JSON: encoders, strict decoders, and the two fast paths that skip Python objects.

The agent's queue builds each reading's JSON in SQLite (`READING_JSON_SQL`) and the batch
body around it (`batch_body`); tests/test_wire.py decodes both with `decode_batch`, so the
fast paths cannot drift from the types.
"""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from pulse_wire.types import Ack, Batch, StrictBatch

# SQLite builds each reading's wire JSON itself: far cheaper than Python objects per row.
# It reads the columns id, seq, ts (UTC text such as 2026-11-26T23:40:16.123Z), value, unit.
READING_JSON_SQL = (
    "json_object('id', id, 'seq', seq, 'datetime', ts, "
    "'message', json_object('value', value, 'unit', unit))"
)


class WireError(ValueError):
    """A payload that does not match the contract; the text says what and where."""


# JSON Schema counts 6689.0 as an integer, and an encoder that holds a seq in a float writes
# one, so a seq may be a float without a fraction; above 2**53 floats skip integers, so there
# a float seq may not be the number its sender meant, and the seq must be a JSON integer.
MAX_FLOAT_SEQ = 2**53
# the strict decoder's complaint about such a seq, the one refusal worth a second look
_FLOAT_SEQ = re.compile(r"Expected `int`, got `float` - at `\$\.readings\[\d+\]\.seq`")

B = TypeVar("B", bound=Batch)

_batch_decoder = msgspec.json.Decoder(Batch)
_strict_decoder = msgspec.json.Decoder(StrictBatch)
# JSON can only carry a NUL inside a string as this escape (a raw NUL byte is malformed)
NUL_ESCAPE = b"\\u0000"
_ack_decoder = msgspec.json.Decoder(Ack)
_encoder = msgspec.json.Encoder()


def encode(obj: object) -> bytes:
    """Encode any wire struct to JSON bytes."""
    return _encoder.encode(obj)


def batch_body(device_id: str, stream: str, readings_json: list[str]) -> bytes:
    """The POST body of a Batch whose readings are already wire JSON (from READING_JSON_SQL)."""
    head = b'{"device_id":%s,"stream":%s,"readings":[' % (encode(device_id), encode(stream))
    return head + ",".join(readings_json).encode() + b"]}"


def decode_batch(body: bytes) -> Batch:
    """Decode and validate a batch; raise WireError naming the bad path."""
    if NUL_ESCAPE in body:
        # a unit may hold a NUL: the strict types refuse it, naming its path (the ids'
        # patterns refuse one on either path); a body that passes is decoded as any other
        _decode(body, _strict_decoder, StrictBatch)
    return _decode(body, _batch_decoder, Batch)


def _decode(body: bytes, decoder: msgspec.json.Decoder[B], kind: type[B]) -> B:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as err:
        if _FLOAT_SEQ.fullmatch(str(err)) is None:
            raise WireError(str(err)) from err
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        raise WireError(str(err)) from err
    # only a batch with a float seq pays for this second, slower pass
    return _decode_with_float_seqs(body, kind)


def _decode_with_float_seqs(body: bytes, kind: type[B]) -> B:
    """Decode a batch whose seqs may be integral floats (6689.0): as ints, then strictly."""
    try:
        raw = msgspec.json.decode(body)
        readings = raw.get("readings") if isinstance(raw, dict) else None
        for index, reading in enumerate(readings if isinstance(readings, list) else []):
            seq = reading.get("seq") if isinstance(reading, dict) else None
            if isinstance(seq, float):
                reading["seq"] = _integral_seq(seq, index)
        return msgspec.convert(raw, kind, strict=True)
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        raise WireError(str(err)) from err


def _integral_seq(seq: float, index: int) -> int:
    """The int a float seq stands for; WireError if it has a fraction or may not be exact."""
    where = f"at `$.readings[{index}].seq`"
    if not seq.is_integer():
        raise WireError(f"Expected `int`, got `float` {seq!r} with a fraction - {where}")
    if abs(seq) > MAX_FLOAT_SEQ:
        raise WireError(
            f"Expected `int`, got `float` {seq!r}, above 2**53 where a float is not exact; "
            f"send the seq as a JSON integer - {where}"
        )
    return int(seq)


def decode_ack(body: bytes) -> Ack:
    """Decode the server's acknowledgement; raise WireError if it is not one."""
    try:
        return _ack_decoder.decode(body)
    except msgspec.DecodeError as err:
        raise WireError(str(err)) from err
