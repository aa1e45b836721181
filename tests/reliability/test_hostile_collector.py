"""Hostile input to the collector: fuzzed batches, oversized, deep, huge, NaN, non-UTF-8.

Never a 5xx, never a partly stored batch: a refused batch stores nothing, and an accepted
one stores exactly what its ack says. The fuzz runs against docs/openapi.yaml: every
answer must be one the document lists, with the body it promises.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pulse_wire as wire
from collector.store import StoredReading
from tests.harness import ROOT, Proc, get_json, start_collector, wait_until
from tests.reliability.figures import Scenario, scaled
from tests.reliability.hostile import UNCHANGED, Answer, Fuzzed, request, tally
from tests.reliability.pipeline import Pipeline, drain_and_check

OPENAPI = ROOT / "docs" / "openapi.yaml"
BODY_LIMIT = 64 * 1024
PATH = "/api/v1/readings"
JSON = {"Content-Type": "application/json"}
EXAMPLES = 300
_device_numbers = itertools.count()


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One collector with a 64 KiB body limit for the whole module."""
    folder = tmp_path_factory.mktemp("hostile-collector")
    config = folder / "collector.json"
    config.write_text(json.dumps({"body_limit_bytes": BODY_LIMIT}))
    proc = start_collector(folder, None, "--config", str(config))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    """docs/openapi.yaml, parsed."""
    doc: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return doc


def total_stored(collector: Proc) -> int:
    """How many readings the collector holds, over every device."""
    return sum(d["count"] for d in get_json(f"{collector.url}/api/v1/devices"))


def _components() -> dict[str, Any]:
    types = [wire.Batch, wire.Ack, wire.ErrorBody, StoredReading]
    _, comps = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    return comps


def _without_prose(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("title", "description")}


def test_openapi_matches_the_wire_contract(openapi: dict[str, Any]) -> None:
    """docs/openapi.yaml: its schemas are the wire contract's, and it promises no 5xx"""
    documented = openapi["components"]["schemas"]
    for name, schema in _components().items():
        assert _without_prose(documented[name]) == _without_prose(schema), name
    post = openapi["paths"][PATH]["post"]
    assert not [code for code in post["responses"] if code.startswith("5")]
    assert {"200", "400", "413", "415"} <= set(post["responses"])


def check_answer(openapi: dict[str, Any], answer: Answer) -> wire.Ack | None:
    """The answer is one the document lists for POST, with the body it promises."""
    responses = openapi["paths"][PATH]["post"]["responses"]
    assert str(answer.status) in responses, f"undocumented {answer.status}: {answer.body[:300]!r}"
    if answer.status == 200:
        return msgspec.json.decode(answer.body, type=wire.Ack, strict=True)
    msgspec.json.decode(answer.body, type=wire.ErrorBody, strict=True)
    return None


def post_and_check(collector: Proc, openapi: dict[str, Any], body: bytes) -> Answer:
    """POST a body; require a documented answer and no partly stored batch."""
    before = total_stored(collector)
    answer = request(collector.port, "POST", PATH, body, JSON)
    ack = check_answer(openapi, answer)
    after = total_stored(collector)
    if ack is None:
        assert after == before, f"a refused batch stored {after - before} readings"
        return answer
    readings = json.loads(body)["readings"]
    assert ack.accepted + ack.duplicates + len(ack.rejected) == len(readings)
    assert after - before == ack.accepted, "the ack does not match what was stored"
    ids = {str(r["id"]) for r in readings}
    assert {r.id for r in ack.rejected} <= ids
    return answer


# --- strategies ----------------------------------------------------------------------------

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
datetimes = st.one_of(
    st.datetimes(timezones=offsets),
    st.datetimes(
        min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=offsets
    ),
)
values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(40, 200),
)
units = st.one_of(st.just("bpm"), st.text(max_size=20))
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
any_json = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@st.composite
def readings(draw: st.DrawFn) -> dict[str, Any]:
    """One reading, plausible or not, in wire shape."""
    return {
        "id": str(draw(st.uuids())),
        "seq": draw(st.one_of(st.integers(1, 10**6), st.integers(-(2**65), 2**65))),
        "datetime": draw(datetimes).isoformat(),
        "message": {"value": draw(values), "unit": draw(units)},
    }


MUTATIONS = [
    "none",
    "drop key",
    "extra key",
    "replace value",
    "duplicate id",
    "reverse seq",
    "device_id text",
    "stream text",
    "lone surrogate",
]


@st.composite
def batches(draw: st.DrawFn) -> Fuzzed:
    """A batch in wire shape for a new device, with at most one mutation, as JSON bytes."""
    body: dict[str, Any] = {
        "device_id": f"fuzz-{next(_device_numbers)}",
        "stream": uuid.uuid4().hex,
        "readings": draw(st.lists(readings(), min_size=1, max_size=8)),
    }
    # the batch before the mutation: some mutations may draw what was already there
    original = json.dumps(body, allow_nan=True).encode()
    mutation = draw(st.sampled_from(MUTATIONS))
    target: dict[str, Any] = draw(
        st.sampled_from([body, *body["readings"], *(r["message"] for r in body["readings"])])
    )
    if mutation == "drop key":
        target.pop(draw(st.sampled_from(sorted(target))))
    elif mutation == "extra key":
        target[draw(st.text(max_size=10))] = draw(any_json)
    elif mutation == "replace value":
        target[draw(st.sampled_from(sorted(target)))] = draw(any_json)
    elif mutation == "duplicate id" and len(body["readings"]) > 1:
        body["readings"][-1]["id"] = body["readings"][0]["id"]
    elif mutation == "reverse seq":
        for i, reading in enumerate(reversed(body["readings"])):
            reading["seq"] = i + 1
    elif mutation == "device_id text":
        body["device_id"] = draw(st.text(max_size=200))
    elif mutation == "stream text":
        body["stream"] = draw(st.text(max_size=100))
    encoded = json.dumps(body, allow_nan=True).encode()
    if mutation == "lone surrogate":
        encoded = encoded.replace(b'"fuzz-', b'"\\ud800fuzz-', 1)
    return Fuzzed(mutation, encoded, changed=encoded != original)


# --- tests ---------------------------------------------------------------------------------


@settings(
    max_examples=scaled(EXAMPLES),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=batches())
def test_fuzzed_batches(
    collector: Proc, openapi: dict[str, Any], figures: Scenario, batch: Fuzzed
) -> None:
    """fuzzed POST /api/v1/readings: never a 5xx, never a partly stored batch"""
    answer = post_and_check(collector, openapi, batch.body)
    tally(figures, "fuzzed batch", batch)
    figures.notes[f"answer {answer.status}"] = figures.notes.get(f"answer {answer.status}", 0) + 1


@settings(max_examples=200, deadline=None, database=None)
@given(batch=batches())
def test_fuzzed_batches_know_whether_they_changed(batch: Fuzzed) -> None:
    """A "none" mutation never changes a batch; a dropped key or a lone surrogate always does."""
    if batch.mutation == "none":
        assert not batch.changed
    if batch.mutation in ("drop key", "lone surrogate"):
        assert batch.changed


def test_only_changed_input_counts_as_hostile() -> None:
    scenario = Scenario("t", "hostile_collector", "t")
    tally(scenario, "fuzzed batch", Fuzzed("drop key", b"{}", changed=True))
    tally(scenario, "fuzzed batch", Fuzzed("duplicate id", b"{}", changed=False))
    tally(scenario, "fuzzed batch", Fuzzed("none", b"{}", changed=False))
    assert scenario.hostile == {"fuzzed batch (drop key)": 1}
    assert scenario.notes == {UNCHANGED: 2}


@settings(
    max_examples=scaled(EXAMPLES // 3),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.one_of(st.binary(max_size=2000), any_json.map(lambda v: json.dumps(v).encode())))
def test_fuzzed_bytes_and_json(
    collector: Proc, openapi: dict[str, Any], figures: Scenario, body: bytes
) -> None:
    """random bytes and random JSON as a batch: refused with a 4xx, nothing stored"""
    answer = post_and_check(collector, openapi, body)
    assert answer.status in (400, 413), answer
    figures.hostile["random bytes or JSON"] += 1


def _reading(seq: int = 1, **changes: Any) -> dict[str, Any]:
    reading = {
        "id": str(uuid.uuid4()),
        "seq": seq,
        "datetime": dt.datetime.now(dt.UTC).isoformat(),
        "message": {"value": 70, "unit": "bpm"},
    }
    return {**reading, **changes}


def _batch(readings: list[dict[str, Any]], device: str = "hostile") -> bytes:
    return json.dumps({"device_id": device, "stream": "s1", "readings": readings}).encode()


def _deep(depth: int) -> bytes:
    return b'{"device_id": "d", "stream": "s", "readings": ' + b"[" * depth + b"]" * depth + b"}"


HOSTILE = {
    "body over the limit": (b"{" + b" " * BODY_LIMIT * 2 + b"}", 413),
    "deep nesting": (_deep(30_000), 400),
    "deep nesting inside a reading": (
        _batch([{**_reading(), "message": json.loads("[" * 500 + "]" * 500)}]),
        400,
    ),
    "huge integer value": (_batch([_reading(message={"value": 10**400})]), 200),
    "huge float": (_batch([_reading()]).replace(b'"value": 70', b'"value": 1e400'), 400),
    "seq past 2**63": (_batch([_reading(seq=2**63)]), 400),
    "NaN": (_batch([_reading()]).replace(b'"value": 70', b'"value": NaN'), 400),
    "Infinity": (_batch([_reading()]).replace(b'"value": 70', b'"value": -Infinity'), 400),
    "non-UTF-8 bytes": (_batch([_reading()]).replace(b'"hostile"', b'"host\xffile"'), 400),
    "device_id of 10,000 characters": (_batch([_reading()], device="x" * 10_000), 400),
    "10,001 readings": (_batch([_reading(seq=i + 1) for i in range(10_001)]), 413),
    "empty body": (b"", 400),
    "year 1 at +14:00": (_batch([_reading(datetime="0001-01-01T00:00:00+14:00")]), 200),
    "year 9999 at -14:00": (_batch([_reading(datetime="9999-12-31T23:59:59-14:00")]), 200),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_body(
    collector: Proc, openapi: dict[str, Any], figures: Scenario, case: str
) -> None:
    """a hand-made hostile body: the documented 4xx (or a 200 that rejects it), nothing partial"""
    body, status = HOSTILE[case]
    answer = post_and_check(collector, openapi, body)
    figures.hostile[case] += 1
    assert answer.status == status, answer
    if status == 200:
        ack = answer.json()
        assert ack["accepted"] == 0
        assert len(ack["rejected"]) == 1


def test_chunked_body_over_the_limit(collector: Proc, figures: Scenario) -> None:
    """a chunked body that never says its length and passes the limit: 413"""
    chunks = (b"[" + b" " * 8192 for _ in range(BODY_LIMIT // 8192 * 3))
    before = total_stored(collector)
    answer = request(collector.port, "POST", PATH, chunks, JSON, chunked=True)
    figures.hostile["chunked body over the limit"] += 1
    assert answer.status == 413
    assert total_stored(collector) == before


def test_wrong_content_type(collector: Proc, figures: Scenario) -> None:
    """a form post and a latin-1 JSON: 415, nothing stored"""
    for content_type in ("application/x-www-form-urlencoded", "application/json; charset=latin-1"):
        answer = request(
            collector.port, "POST", PATH, _batch([_reading()]), {"Content-Type": content_type}
        )
        figures.hostile["wrong Content-Type"] += 1
        assert answer.status == 415


def test_duplicate_ids_and_backward_seqs(collector: Proc, figures: Scenario) -> None:
    """a repeated id or a reused seq in a batch is a conflict, rejected; backward seqs stored"""
    device = f"dup-{uuid.uuid4().hex[:8]}"
    twin = _reading(seq=1)
    answer = request(collector.port, "POST", PATH, _batch([twin, {**twin, "seq": 2}], device), JSON)
    figures.hostile["duplicate ids in a batch"] += 1
    assert answer.status == 200
    id_error = (
        f"id {twin['id']} is already stored as seq 1 of stream s1 of device {device}; "
        "this reading has seq 2 (id conflict)"
    )
    assert answer.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [{"id": twin["id"], "error": id_error}],
    }
    answer = request(collector.port, "POST", PATH, _batch([twin], device), JSON)
    figures.hostile["duplicate ids in a batch"] += 1
    assert answer.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    backwards = [_reading(seq=s) for s in (9, 7, 5, 3)]
    answer = request(collector.port, "POST", PATH, _batch(backwards, device), JSON)
    figures.hostile["seq going backwards"] += 1
    assert answer.json() == {"accepted": 4, "duplicates": 0, "rejected": []}
    older = [_reading(seq=s) for s in (3, 2)]  # seq 3 again, under a new id
    answer = request(collector.port, "POST", PATH, _batch(older, device), JSON)
    figures.hostile["seq going backwards"] += 1
    seq_error = (
        f"seq 3 of stream s1 already holds reading {backwards[3]['id']}; "
        f"this reading has id {older[0]['id']} (seq conflict)"
    )
    assert answer.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [{"id": older[0]["id"], "error": seq_error}],
    }
    stored = get_json(f"{collector.url}/api/v1/readings?device_id={device}")
    assert [r["seq"] for r in stored] == [1, 2, 3, 5, 7, 9]
    (summary,) = [
        d for d in get_json(f"{collector.url}/api/v1/devices") if d["device_id"] == device
    ]
    assert summary["streams"][0]["missing"] == 3


def test_collector_still_serves_an_agent(
    collector: Proc, tmp_path: Path, figures: Scenario
) -> None:
    """after all of the above, the same collector takes a real agent's readings exactly once"""
    assert "unexpected error" not in collector.output()
    pipe = Pipeline(tmp_path, collector_port=collector.port)
    pipe.collector = collector
    try:
        pipe.start_agent()
        wait_until(lambda: pipe.status()["sent_total"] >= 50)
        drain_and_check(pipe, figures)
    finally:
        if pipe.agent is not None:
            pipe.agent.kill()
    assert "unexpected error" not in collector.output()
