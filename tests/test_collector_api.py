"""The collector's HTTP API on a real SQLite file: acks, errors, auth, queries, health."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import pulse_wire as wire
from collector import APP_NAME, __version__
from collector.app import create_app
from collector.config import CollectorConfig
from collector.errors import error_middleware
from tests.conftest import reading, rid

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
URL = "/api/v1/readings"
DEVICE = "dev-1"
STREAM = "0123456789abcdef0123456789abcdef"


def body(readings: list[dict[str, Any]], device: str = DEVICE) -> dict[str, Any]:
    return {"device_id": device, "stream": STREAM, "readings": readings}


@pytest.fixture
def config(tmp_path: Path) -> CollectorConfig:
    return CollectorConfig(db=str(tmp_path / "data" / "collector.db"), body_limit_bytes=64 * 1024)


@pytest.fixture
async def client(aiohttp_client: MakeClient, config: CollectorConfig) -> Client:
    return await aiohttp_client(create_app(config))


async def post(client: Client, payload: object, **kwargs: Any) -> tuple[int, Any]:
    resp = await client.post(URL, json=payload, **kwargs)
    assert resp.content_type == "application/json"
    return resp.status, await resp.json()


async def post_raw(client: Client, data: bytes, **headers: str) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **headers}
    resp = await client.post(URL, data=data, headers=headers)
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json()


async def get_readings(client: Client, query: str) -> list[dict[str, Any]]:
    resp = await client.get(f"{URL}?{query}")
    assert resp.status == 200, await resp.text()
    result: list[dict[str, Any]] = await resp.json()
    return result


async def test_healthz(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "app": APP_NAME, "version": __version__}


async def test_batch_is_acked_and_readable_in_wire_format(client: Client) -> None:
    sent = [reading(1, 61), reading(2, 62)]
    assert await post(client, body(sent)) == (200, {"accepted": 2, "duplicates": 0, "rejected": []})
    got = await get_readings(client, f"device_id={DEVICE}")
    assert [r.pop("stream") for r in got] == [STREAM, STREAM]
    # what comes back is a wire Reading again, with the same instant and value
    readings = [msgspec.convert(r, wire.Reading, strict=False) for r in got]
    assert [str(r.id) for r in readings] == [s["id"] for s in sent]
    assert [r.seq for r in readings] == [1, 2]
    assert [r.message.value for r in readings] == [61, 62]
    sent_times = [dt.datetime.fromisoformat(s["datetime"]) for s in sent]
    assert [r.datetime for r in readings] == sent_times


async def test_resent_batch_is_counted_as_duplicates(client: Client) -> None:
    payload = body([reading(s) for s in range(1, 6)])
    assert (await post(client, payload))[1]["accepted"] == 5
    assert await post(client, payload) == (200, {"accepted": 0, "duplicates": 5, "rejected": []})
    assert len(await get_readings(client, f"device_id={DEVICE}")) == 5


async def test_known_id_under_another_seq_is_an_id_conflict(client: Client) -> None:
    await post(client, body([reading(1)]))
    status, ack = await post(client, body([reading(9, id_=1), reading(10)]))
    assert (status, ack["accepted"], ack["duplicates"]) == (200, 1, 0)
    assert ack["rejected"] == [
        {
            "id": rid(1),
            "error": f"id {rid(1)} is already stored as seq 1 of stream {STREAM} of device "
            f"{DEVICE}; this reading has seq 9 (id conflict)",
        }
    ]
    got = await get_readings(client, f"device_id={DEVICE}")
    assert [r["seq"] for r in got] == [1, 10]


async def test_known_seq_under_another_id_is_a_seq_conflict(client: Client) -> None:
    await post(client, body([reading(1, value=60), reading(2)]))
    status, ack = await post(client, body([reading(2), reading(1, value=90, id_=77)]))
    assert (status, ack["accepted"], ack["duplicates"]) == (200, 0, 1)
    assert ack["rejected"] == [
        {
            "id": rid(77),
            "error": f"seq 1 of stream {STREAM} already holds reading {rid(1)}; "
            f"this reading has id {rid(77)} (seq conflict)",
        }
    ]
    got = await get_readings(client, f"device_id={DEVICE}")
    assert [(r["seq"], r["id"], r["message"]["value"]) for r in got] == [
        (1, rid(1), 60),
        (2, rid(2), 72),
    ]


async def test_implausible_readings_are_rejected_in_the_ack(client: Client) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    sent = [reading(1), reading(2, value=0), reading(3, value=1e6), reading(4, when=future)]
    status, ack = await post(client, body(sent))
    assert status == 200
    assert (ack["accepted"], ack["duplicates"]) == (1, 0)
    assert [r["id"] for r in ack["rejected"]] == [rid(2), rid(3), rid(4)]
    assert all(r["error"] for r in ack["rejected"])
    assert [r["seq"] for r in await get_readings(client, f"device_id={DEVICE}")] == [1]


async def test_schema_mismatch_is_400_naming_the_path(client: Client) -> None:
    bad = reading(1)
    bad["seq"] = "one"
    status, error = await post(client, body([reading(2), bad]))
    assert status == 400
    assert error == {"error": "Expected `int`, got `str` - at `$.readings[1].seq`"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{", "truncated"),
        (b"", "truncated"),
        (b"[]", "Expected `object`, got `array`"),
        (b'{"device_id": "d", "stream": "s", "readings": []}', "$.readings"),
        (b'{"device_id": "d", "stream": "s"}', "readings"),
        (b'{"device_id": "d", "stream": "s", "x": 1}', "unknown field `x`"),
        (
            json.dumps(body([reading(1)])).replace('"value": 72', '"value": 1e400').encode(),
            "out of range - at `$.readings[0].message.value`",
        ),
        (b'{"device_id": "d\xff", "stream": "s", "readings": []}', "UTF-8"),
        (b"\xff\xfe{}", "invalid"),
        (b'{"device_id": "a b", "stream": "s", "readings": []}', "$.device_id"),
    ],
)
async def test_bad_bodies_are_400_never_500(client: Client, data: bytes, expected: str) -> None:
    status, error = await post_raw(client, data)
    assert status == 400
    assert expected.lower() in error["error"].lower()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(seq=0),
        lambda r: r.update(seq=2**63),
        lambda r: r.update(seq=True),
        lambda r: r.update(id="not-a-uuid"),
        lambda r: r.update(datetime="2026-11-26T23:00:00"),
        lambda r: r.update(datetime="yesterday"),
        lambda r: r.update(message={"value": "72"}),
        lambda r: r.update(message={"value": 72, "unit": ""}),
        lambda r: r.update(message=None),
        lambda r: r.pop("id"),
    ],
)
async def test_bad_readings_are_400_never_500(
    client: Client, mutate: Callable[[dict[str, Any]], object]
) -> None:
    bad = reading(1)
    mutate(bad)
    status, error = await post(client, body([bad]))
    assert status == 400
    assert "$.readings[0]" in error["error"]


async def test_body_over_the_limit_is_413(client: Client, config: CollectorConfig) -> None:
    big = body([reading(s) for s in range(1, 2000)])
    data = json.dumps(big).encode()
    assert len(data) > config.body_limit_bytes
    status, error = await post_raw(client, data)
    assert status == 413
    assert str(config.body_limit_bytes) in error["error"]
    # the same readings in batches under the limit go through
    assert (await post(client, body(big["readings"][:100])))[0] == 200


async def test_chunked_body_over_the_limit_is_413(client: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"device_id": "d", "stream": "s", "readings": ['
        for _ in range(1000):
            yield json.dumps(reading(1)).encode() + b","
        yield b"]}"

    resp = await client.post(URL, data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert resp.status == 413
    assert "larger than" in (await resp.json())["error"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", None],
)
async def test_wrong_content_type_is_415(client: Client, content_type: str | None) -> None:
    data = json.dumps(body([reading(1)])).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await client.post(URL, data=data, headers=headers, skip_auto_headers=["Content-Type"])
    assert resp.status == 415
    assert "application/json" in (await resp.json())["error"]


async def test_json_with_utf8_charset_is_accepted(client: Client) -> None:
    data = json.dumps(body([reading(1)])).encode()
    status, ack = await post_raw(
        client, data, **{"Content-Type": "application/json; charset=utf-8"}
    )
    assert (status, ack["accepted"]) == (200, 1)


@pytest.fixture
async def auth_client(aiohttp_client: MakeClient, config: CollectorConfig) -> Client:
    tokens = {DEVICE: "secret-1", "dev-2": "secret-2"}
    return await aiohttp_client(create_app(CollectorConfig(db=config.db, tokens=tokens)))


async def test_missing_token_is_401(auth_client: Client) -> None:
    status, error = await post(auth_client, body([reading(1)]))
    assert status == 401
    assert "Authorization" in error["error"]
    resp = await auth_client.post(
        URL, json=body([reading(1)]), headers={"Authorization": "Basic x"}
    )
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("token", ["wrong", "secret-2", "secret-1x", "secret-"])
async def test_wrong_token_for_the_device_is_403(auth_client: Client, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    status, error = await post(auth_client, body([reading(1)]), headers=headers)
    assert status == 403
    assert DEVICE in error["error"]
    assert await get_readings(auth_client, f"device_id={DEVICE}") == []


async def test_unknown_device_is_403(auth_client: Client) -> None:
    headers = {"Authorization": "Bearer secret-1"}
    status, _ = await post(auth_client, body([reading(1)], device="dev-9"), headers=headers)
    assert status == 403


async def test_right_token_is_accepted(auth_client: Client) -> None:
    headers = {"Authorization": "Bearer secret-2"}
    status, ack = await post(auth_client, body([reading(1)], device="dev-2"), headers=headers)
    assert (status, ack["accepted"]) == (200, 1)


async def test_no_tokens_means_no_auth(client: Client) -> None:
    assert (await post(client, body([reading(1)])))[0] == 200


async def test_devices_report_counts_and_gaps(client: Client) -> None:
    await post(client, body([reading(s) for s in (1, 2, 4, 7)]))
    await post(client, body([reading(3, id_=103)], device="dev-2"))
    resp = await client.get("/api/v1/devices")
    assert resp.status == 200
    devices = await resp.json()
    assert [(d["device_id"], d["count"]) for d in devices] == [(DEVICE, 4), ("dev-2", 1)]
    assert devices[0]["streams"] == [
        {"stream": STREAM, "first_seq": 1, "last_seq": 7, "count": 4, "missing": 3}
    ]
    assert devices[1]["streams"][0]["missing"] == 2
    last_seen = dt.datetime.fromisoformat(devices[0]["last_seen"])
    assert abs(last_seen - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


async def test_readings_query_filters_and_pages(client: Client) -> None:
    for start in range(1, 1202, 300):
        await post(client, body([reading(s) for s in range(start, min(start + 300, 1202))]))
    other = {"device_id": DEVICE, "stream": "00", "readings": [reading(1, id_=5000)]}
    await post(client, other)
    default = await get_readings(client, f"device_id={DEVICE}")
    assert len(default) == 1000
    assert [(r["stream"], r["seq"]) for r in default[:2]] == [("00", 1), (STREAM, 1)]
    page = await get_readings(client, f"device_id={DEVICE}&stream={STREAM}&since=1195&limit=3")
    assert [r["seq"] for r in page] == [1196, 1197, 1198]
    tail = await get_readings(client, f"device_id={DEVICE}&stream={STREAM}&since=1199")
    assert [r["seq"] for r in tail] == [1200, 1201]
    assert await get_readings(client, "device_id=nobody") == []
    everything = await get_readings(client, f"device_id={DEVICE}&limit=10000&since=0")
    assert len(everything) == 1202


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "device_id"),
        ("device_id=d&since=abc", "since"),
        ("device_id=d&since=-1", "since"),
        ("device_id=d&limit=0", "limit"),
        ("device_id=d&limit=10001", "limit"),
        ("device_id=d&limit=1.5", "limit"),
        ("device_id=d&sinse=3", "sinse"),
    ],
)
async def test_bad_query_is_400_with_a_message(client: Client, query: str, expected: str) -> None:
    resp = await client.get(f"{URL}?{query}")
    assert resp.status == 400
    assert expected in (await resp.json())["error"]


async def test_unknown_route_and_method_answer_json(client: Client) -> None:
    missing = await client.get("/api/v1/nothing")
    assert missing.status == 404
    assert (await missing.json())["error"]
    wrong = await client.delete(URL)
    assert wrong.status == 405
    assert "POST" in wrong.headers["Allow"]
    assert (await wrong.json())["error"]


async def test_unexpected_exception_is_a_logged_500(
    aiohttp_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="collector.errors"):
        resp = await client.get("/broken")
    assert resp.status == 500
    assert "internal server error" in (await resp.json())["error"]
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


async def test_store_failure_is_a_500_not_an_ack(
    aiohttp_client: MakeClient, config: CollectorConfig
) -> None:
    client = await aiohttp_client(create_app(config))
    # drop the table under the running collector: the batch cannot be stored
    with sqlite3.connect(config.db) as db:
        db.execute("DROP TABLE readings")
    status, error = await post(client, body([reading(1)]))
    assert status == 500
    assert "accepted" not in error


# --- what schemathesis found (tests/test_openapi_schemathesis.py) ---------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        (f"device_id={DEVICE}&stream=", "stream"),
        (f"device_id={DEVICE}&since=", "since"),
        (f"device_id={DEVICE}&limit=", "limit"),
        ("device_id=", "device_id"),
        (f"device_id={DEVICE}&stream={STREAM}&stream=", "stream"),
    ],
)
async def test_an_empty_query_parameter_is_400_naming_it(
    client: Client, query: str, name: str
) -> None:
    """ST201: `stream=` is refused, not dropped (which answered every stream of the device)."""
    await post(client, body([reading(1)]))
    resp = await client.get(f"{URL}?{query}")
    assert resp.status == 400
    assert await resp.json() == {"error": f"query parameter {name}: must not be empty"}


async def test_since_null_is_400_not_everything(client: Client) -> None:
    await post(client, body([reading(1)]))
    resp = await client.get(f"{URL}?device_id={DEVICE}&since=null")
    assert resp.status == 400
    assert "query parameter since" in (await resp.json())["error"]


async def test_a_seq_with_a_zero_fraction_is_stored_as_that_integer(client: Client) -> None:
    """ST202: 6689.0 is the integer 6689, as the document's schema language says."""
    sent = reading(6689)
    sent["seq"] = 6689.0
    stored = await post(client, body([sent]))
    assert stored == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert [r["seq"] for r in await get_readings(client, f"device_id={DEVICE}")] == [6689]
    # the same reading with its seq spelled as an integer is the same reading
    resent = await post(client, body([reading(6689)]))
    assert resent == (200, {"accepted": 0, "duplicates": 1, "rejected": []})


async def test_a_seq_with_a_fraction_is_400_naming_it(client: Client) -> None:
    sent = reading(6690)
    sent["seq"] = 6689.5
    status, error = await post(client, body([reading(1), sent]))
    assert status == 400
    assert error["error"].endswith("with a fraction - at `$.readings[1].seq`")
    assert await get_readings(client, f"device_id={DEVICE}") == []


async def test_a_nul_in_an_id_or_unit_is_400_on_every_store(client: Client) -> None:
    """PostgreSQL text cannot hold a NUL, so the contract refuses it for SQLite too."""
    odd_unit = reading(1)
    odd_unit["message"]["unit"] = "bpm\x00"
    for batch, where in (
        (body([reading(1)], device="dev\x00"), "$.device_id"),
        ({**body([reading(1)]), "stream": "s\x00"}, "$.stream"),
        (body([odd_unit]), "$.readings[0].message.unit"),
    ):
        status, error = await post(client, batch)
        assert status == 400
        assert error["error"].endswith(f"at `{where}`")


@pytest.mark.parametrize("path", ["/", "/alerts", "/api/v1/devices", "/nowhere"])
async def test_every_answer_carries_the_security_headers(client: Client, path: str) -> None:
    """No framing of the pages (clickjacking), no inline script, no sniffing, no referrer."""
    response = await client.get(path)
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'self'; frame-ancestors 'none'"
    )
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_a_relayed_device_names_its_hub(client: Client) -> None:
    body = {"device_id": "kitchen-bulb", "stream": "s1", "readings": [reading(1)]}
    resp = await client.post("/api/v1/readings", json=body, headers={"Pulse-Hub": "home-pc"})
    assert resp.status == 200
    # a device sending for itself records no hub
    own = {"device_id": "home-pc", "stream": "s1", "readings": [reading(1, id_=2)]}
    resp = await client.post("/api/v1/readings", json=own, headers={"Pulse-Hub": "home-pc"})
    assert resp.status == 200
    devices = await (await client.get("/api/v1/devices")).json()
    assert {d["device_id"]: d["hub"] for d in devices} == {
        "home-pc": None,
        "kitchen-bulb": "home-pc",
    }
    detail = await (await client.get("/api/v1/devices/kitchen-bulb")).json()
    assert detail["hub"] == "home-pc"
    overview = await (await client.get("/api/v1/overview")).json()
    assert {d["device_id"]: d["hub"] for d in overview["devices"]} == {
        "home-pc": None,
        "kitchen-bulb": "home-pc",
    }
    # the hub moves: the newest wins
    again = {"device_id": "kitchen-bulb", "stream": "s1", "readings": [reading(2, id_=3)]}
    resp = await client.post("/api/v1/readings", json=again, headers={"Pulse-Hub": "new-pc"})
    assert resp.status == 200
    detail = await (await client.get("/api/v1/devices/kitchen-bulb")).json()
    assert detail["hub"] == "new-pc"


async def test_a_hub_header_that_is_no_device_id_is_refused(client: Client) -> None:
    body = {"device_id": "kitchen-bulb", "stream": "s1", "readings": [reading(1)]}
    resp = await client.post("/api/v1/readings", json=body, headers={"Pulse-Hub": "x" * 200})
    assert resp.status == 400
    assert "Pulse-Hub" in (await resp.json())["error"]
    devices = await (await client.get("/api/v1/devices")).json()
    assert devices == []
