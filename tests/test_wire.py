"""The wire contract: batches validate strictly and errors name the bad path."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agent import wire

READING_ID = "0190a4b2-7c1e-7abc-8def-0123456789ab"


def good_batch() -> dict[str, Any]:
    return {
        "device_id": "desk-1",
        "stream": "abc123",
        "readings": [
            {
                "id": READING_ID,
                "seq": 1,
                "datetime": "2026-11-26T23:00:00.250Z",
                "message": {"value": 72, "unit": "bpm"},
            }
        ],
    }


def decode(raw: dict[str, Any]) -> wire.Batch:
    return wire.decode_batch(json.dumps(raw).encode())


def test_a_good_batch_decodes() -> None:
    batch = decode(good_batch())
    assert batch.device_id == "desk-1"
    assert batch.stream == "abc123"
    (reading,) = batch.readings
    assert reading.id == uuid.UUID(READING_ID)
    assert reading.seq == 1
    assert reading.datetime == dt.datetime(2026, 11, 26, 23, 0, 0, 250_000, tzinfo=dt.UTC)
    assert reading.message == wire.Message(72, "bpm")


def test_encode_then_decode_round_trips() -> None:
    batch = decode(good_batch())
    assert wire.decode_batch(wire.encode(batch)) == batch


def _set(path: list[str | int], value: object) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        target: Any = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "where", "words"),
    [
        (_set(["readings", 0, "extra"], 1), "$.readings[0]", "unknown field `extra`"),
        (_set(["readings", 0, "message", "x"], 1), "$.readings[0].message", "unknown field `x`"),
        (_set(["readings", 0, "seq"], 0), "$.readings[0].seq", ">= 1"),
        (_set(["readings", 0, "seq"], -5), "$.readings[0].seq", ">= 1"),
        (
            _set(["readings", 0, "datetime"], "2026-11-26T23:00:00"),
            "$.readings[0].datetime",
            "timezone",
        ),
        (_set(["readings", 0, "id"], "not-a-uuid"), "$.readings[0].id", "UUID"),
        (_set(["readings"], []), "$.readings", "length >= 1"),
        (_set(["device_id"], "two words"), "$.device_id", "regex"),
        (_set(["device_id"], ""), "$.device_id", "length >= 1"),
        (_set(["readings", 0, "message", "value"], "72"), "$.readings[0].message.value", "`str`"),
        (_set(["readings", 0, "message", "unit"], ""), "$.readings[0].message.unit", ">= 1"),
    ],
)
def test_bad_batches_name_the_path(
    change: Callable[[dict[str, Any]], None], where: str, words: str
) -> None:
    raw = copy.deepcopy(good_batch())
    change(raw)
    with pytest.raises(wire.WireError) as info:
        decode(raw)
    message = str(info.value)
    assert message.endswith(f"at `{where}`")
    assert words in message


def test_unknown_top_level_field_is_named() -> None:
    raw = good_batch()
    raw["extra"] = True
    with pytest.raises(wire.WireError, match="unknown field `extra`"):
        decode(raw)


def test_second_reading_error_names_its_index() -> None:
    raw = good_batch()
    second = copy.deepcopy(raw["readings"][0])
    second["seq"] = 0
    raw["readings"].append(second)
    with pytest.raises(wire.WireError, match=r"at `\$\.readings\[1\]\.seq`"):
        decode(raw)


def test_missing_field_is_named() -> None:
    raw = good_batch()
    del raw["readings"][0]["datetime"]
    with pytest.raises(wire.WireError, match="missing required field `datetime`"):
        decode(raw)


def test_too_many_readings_are_refused() -> None:
    raw = good_batch()
    raw["readings"] = raw["readings"] * (wire.MAX_BATCH_READINGS + 1)
    with pytest.raises(wire.WireError, match=r"length <= 10000 - at `\$\.readings`"):
        decode(raw)


def test_not_json_is_a_wire_error() -> None:
    with pytest.raises(wire.WireError):
        wire.decode_batch(b'{"device_id": ')


def test_decode_ack_defaults_and_errors() -> None:
    ack = wire.decode_ack(b'{"accepted": 3, "duplicates": 1}')
    assert ack == wire.Ack(3, 1, [])
    ack = wire.decode_ack(
        b'{"accepted": 0, "duplicates": 0, "rejected": [{"id": "a", "error": "e"}]}'
    )
    assert ack.rejected == [wire.Rejection("a", "e")]
    with pytest.raises(wire.WireError):
        wire.decode_ack(b'{"accepted": "3", "duplicates": 0}')
    with pytest.raises(wire.WireError):
        wire.decode_ack(b"<html>")


def test_new_ids_are_unique_and_time_ordered() -> None:
    ids = [wire.new_reading_id() for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids, key=lambda u: u.bytes)
    streams = {wire.new_stream_id() for _ in range(50)}
    assert len(streams) == 50
    assert all(len(s) <= wire.STREAM_MAX for s in streams)
