"""The wire contract: batches validate strictly, errors name the bad path, fast paths agree."""

from __future__ import annotations

import copy
import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import pulse_wire as wire

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


def test_sqlite_json_and_batch_body_decode_with_the_contract() -> None:
    """The agent's fast paths (SQLite's JSON, the body template) build what decode_batch reads."""
    other_id = "0190a4b2-7c1e-7abc-8def-0123456789ac"
    rows = [
        (1, READING_ID, "2026-11-26T23:00:00.250Z", 72.0, "bpm"),
        (2, other_id, "2026-11-26T23:00:03.000Z", 71.5, 'u"\\\u00e9'),
    ]
    con = sqlite3.connect(":memory:")
    # the agent queue's column types: NUMERIC stores 72.0 as the integer 72
    con.execute(
        "CREATE TABLE q (seq INTEGER PRIMARY KEY, id TEXT, ts TEXT, value NUMERIC, unit TEXT)"
    )
    con.executemany("INSERT INTO q VALUES (?, ?, ?, ?, ?)", rows)
    texts = [text for (text,) in con.execute(f"SELECT {wire.READING_JSON_SQL} FROM q ORDER BY seq")]
    con.close()
    device = 'odd"device\\\u00e9'

    batch = wire.decode_batch(wire.batch_body(device, "stream-1", texts))

    expected = [
        wire.Reading(uuid.UUID(id_), seq, dt.datetime.fromisoformat(ts), wire.Message(value, unit))
        for seq, id_, ts, value, unit in rows
    ]
    assert batch == wire.Batch(device_id=device, stream="stream-1", readings=expected)
    # msgspec's own encoding of the same structs reads back the same
    assert wire.decode_batch(wire.encode(batch)) == batch


# --- a seq sent as a float (schemathesis ST202): JSON Schema counts 6689.0 as an integer ----


def _with_seq(seq: object) -> dict[str, Any]:
    raw = good_batch()
    raw["readings"][0]["seq"] = seq
    return raw


@pytest.mark.parametrize("text", ["6689.0", "6.689e3", "6689.000", "9007199254740992.0"])
def test_a_seq_with_a_zero_fraction_is_that_integer(text: str) -> None:
    body = json.dumps(_with_seq(0)).replace('"seq": 0', f'"seq": {text}').encode()
    (reading,) = wire.decode_batch(body).readings
    assert reading.seq == int(float(text))
    assert type(reading.seq) is int
    # the batch is the one its integer spelling makes
    assert wire.decode_batch(body) == decode(_with_seq(int(float(text))))


@pytest.mark.parametrize(
    ("seq", "words"),
    [
        (6689.5, "`float` 6689.5 with a fraction"),
        (0.5, "with a fraction"),
        (2.0**53 + 2, "above 2**53"),
        (1e20, "above 2**53"),
        (0.0, ">= 1"),
        (-3.0, ">= 1"),
        ("17", "got `str`"),
        ("17.0", "got `str`"),
        (True, "got `bool`"),
        (None, "got `null`"),
    ],
)
def test_a_seq_that_is_not_an_integer_is_refused_naming_it(seq: object, words: str) -> None:
    with pytest.raises(wire.WireError) as info:
        decode(_with_seq(seq))
    message = str(info.value)
    assert message.endswith("at `$.readings[0].seq`"), message
    assert words in message


def test_a_float_seq_does_not_hide_another_error() -> None:
    raw = _with_seq(5.0)
    second = copy.deepcopy(raw["readings"][0])
    second.update(seq=6.0, id="not-a-uuid")
    raw["readings"].append(second)
    with pytest.raises(wire.WireError, match=r"Invalid UUID - at `\$\.readings\[1\]\.id`"):
        decode(raw)
    raw["readings"][1].update(id=str(uuid.uuid4()), seq=6.5)
    with pytest.raises(wire.WireError, match=r"fraction - at `\$\.readings\[1\]\.seq`"):
        decode(raw)


# --- ids and units mean the same to the server and to a JSON Schema validator --------------


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (["device_id"], "dev\n"),
        (["device_id"], "dev\x1c1"),
        (["device_id"], "dev\x85"),
        (["device_id"], "\ufeffdev"),
        (["device_id"], "dev\x00"),
        (["stream"], "s\x00"),
        (["stream"], "s\n"),
        (["readings", 0, "message", "unit"], "bpm\x00"),
    ],
)
def test_whitespace_of_either_regex_dialect_and_nul_are_refused(
    path: list[str | int], text: str
) -> None:
    raw = good_batch()
    _set(path, text)(raw)
    with pytest.raises(wire.WireError, match="regex"):
        decode(raw)


def test_a_nul_anywhere_in_a_unit_is_refused_by_name_and_its_lookalike_is_not() -> None:
    """The units' NUL check runs once per body: a NUL in the second reading is still named,
    and a unit spelling a backslash and "u0000" is a unit like any other, decoded as Batch."""
    raw = good_batch()
    second = dict(raw["readings"][0], seq=2, id="018f0000-0000-7000-8000-000000000002")
    raw["readings"].append(dict(second, message={"value": 1, "unit": "W\x00"}))
    with pytest.raises(wire.WireError, match=r"regex.*\$\.readings\[1\]\.message\.unit"):
        decode(raw)
    raw["readings"][1]["message"]["unit"] = "W\\u0000"
    body = json.dumps(raw).encode()
    assert b"\\\\u0000" in body
    batch = wire.decode_batch(body)
    assert type(batch) is wire.Batch
    assert type(batch.readings[1].message) is wire.Message
    assert batch.readings[1].message.unit == "W\\u0000"
    assert wire.decode_batch(wire.encode(batch)) == batch
