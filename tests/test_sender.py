"""The sender: response classification, backoff, and delivery against a real HTTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
import statistics
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

import pulse_wire as wire
from agent.config import Config, LiveConfig, LoadedConfig, SenderConfig, ServerConfig
from agent.sender import (
    BACKOFF_BASE_S,
    BACKOFF_FLOOR_S,
    RETRY_AFTER_MAX_S,
    Sender,
    Verdict,
    backoff_delay,
    classify,
    encode_batch,
    parse_retry_after,
)
from agent.status import Event, State, StatusEvent, StatusHub
from agent.store import Store, open_store
from tests.conftest import T0
from tests.harness import free_port

NOW = 1_790_000_000.0


def ack_body(
    accepted: int, duplicates: int = 0, rejected: list[dict[str, str]] | None = None
) -> bytes:
    return msgspec.json.encode(
        {"accepted": accepted, "duplicates": duplicates, "rejected": rejected or []}
    )


# classify


def test_classify_a_valid_ack() -> None:
    outcome = classify(200, ack_body(3, 1), 4, None)
    assert outcome.verdict is Verdict.ACKED
    assert outcome.ack == wire.Ack(3, 1, [])


def test_classify_an_ack_with_rejections_covering_the_batch() -> None:
    body = ack_body(1, 0, [{"id": "x", "error": "bad"}])
    outcome = classify(200, body, 2, None)
    assert outcome.verdict is Verdict.ACKED
    assert outcome.ack is not None
    assert outcome.ack.rejected == [wire.Rejection("x", "bad")]


@pytest.mark.parametrize("body", [b"<html>ok</html>", b"", b'{"accepted": "all"}', b"[]"])
def test_classify_a_garbage_200_retries(body: bytes) -> None:
    outcome = classify(200, body, 3, None)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.ack is None
    assert outcome.reason.startswith("unreadable ack")


def test_classify_an_ack_not_covering_the_batch_retries() -> None:
    outcome = classify(200, ack_body(2), 5, None)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.reason == "ack covers 2 of 5 readings"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_classify_transient_statuses_retry_with_retry_after(status: int) -> None:
    outcome = classify(status, b'{"error": "busy"}', 3, 12.0)
    assert outcome.verdict is Verdict.RETRY
    assert outcome.retry_after == 12.0
    assert outcome.reason == f"HTTP {status}: busy"


@pytest.mark.parametrize("status", [401, 403])
def test_classify_auth_failures(status: int) -> None:
    outcome = classify(status, b'{"error": "bad token"}', 3, None)
    assert outcome.verdict is Verdict.UNAUTHORIZED
    assert outcome.reason == f"HTTP {status}: bad token"


def test_classify_413_shrinks() -> None:
    assert classify(413, b"", 100, None).verdict is Verdict.SHRINK


@pytest.mark.parametrize("status", [400, 404, 422])
def test_classify_other_client_errors_reject(status: int) -> None:
    outcome = classify(status, b"plain text reason", 3, None)
    assert outcome.verdict is Verdict.REJECTED
    assert outcome.reason == f"HTTP {status}: plain text reason"


def test_classify_names_an_empty_error_body() -> None:
    assert classify(500, b"", 1, None).reason == "HTTP 500: (empty body)"


# Retry-After


def test_parse_retry_after_seconds() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 7 ", NOW) == 7.0
    assert parse_retry_after("0", NOW) == 0.0
    assert parse_retry_after("99999999", NOW) == RETRY_AFTER_MAX_S


def test_parse_retry_after_http_date_uses_the_injected_now() -> None:
    when = dt.datetime.fromtimestamp(NOW + 90, dt.UTC)
    header = email.utils.format_datetime(when, usegmt=True)
    assert parse_retry_after(header, NOW) == pytest.approx(90.0)
    assert parse_retry_after(header, NOW + 30) == pytest.approx(60.0)
    # a date in the past means now
    assert parse_retry_after(header, NOW + 500) == 0.0
    far = email.utils.format_datetime(dt.datetime.fromtimestamp(NOW + 10**6, dt.UTC), usegmt=True)
    assert parse_retry_after(far, NOW) == RETRY_AFTER_MAX_S


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Mon, 99 Foo 2026"])
def test_parse_retry_after_ignores_what_it_cannot_read(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# backoff


def test_backoff_stays_within_its_bounds() -> None:
    rng = random.Random(1234)
    for attempt in range(12):
        ceiling = min(60.0, BACKOFF_BASE_S * 2**attempt)
        for _ in range(300):
            delay = backoff_delay(attempt, 60.0, rng)
            assert BACKOFF_FLOOR_S <= delay <= ceiling


def test_backoff_grows_until_its_cap() -> None:
    rng = random.Random(99)
    means = [statistics.mean(backoff_delay(a, 60.0, rng) for _ in range(2000)) for a in range(9)]
    # 0.5 * 2^7 = 64 > 60, so growth stops at attempt 7
    assert all(b > a * 1.5 for a, b in zip(means[:7], means[1:8], strict=True))
    assert means[8] == pytest.approx(30.0, rel=0.1)
    assert max(backoff_delay(10_000, 60.0, rng) for _ in range(500)) <= 60.0


def test_backoff_is_reproducible_with_a_seed() -> None:
    first = [backoff_delay(a, 30.0, random.Random(5)) for a in range(10)]
    second = [backoff_delay(a, 30.0, random.Random(5)) for a in range(10)]
    assert first == second


# a store, a hub and a recording collector


@dataclass
class Received:
    """One request as the collector saw it."""

    headers: dict[str, str]
    batch: wire.Batch
    pending_while_in_flight: int


Reply = Callable[[wire.Batch], web.Response]


def ack_all(batch: wire.Batch) -> web.Response:
    return web.Response(body=ack_body(len(batch.readings)), content_type="application/json")


def error(status: int, message: str = "no", headers: dict[str, str] | None = None) -> Reply:
    def reply(batch: wire.Batch) -> web.Response:
        return web.json_response({"error": message}, status=status, headers=headers)

    return reply


@dataclass
class Collector:
    """Records every batch; answers with scripted replies, then acks everything."""

    store: Store
    replies: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        batch = wire.decode_batch(await request.read())
        self.received.append(Received(dict(request.headers), batch, self.store.pending))
        self.arrived.set()
        reply = self.replies.pop(0) if self.replies else ack_all
        return reply(batch)

    @property
    def sizes(self) -> list[int]:
        return [len(r.batch.readings) for r in self.received]

    @property
    def seqs(self) -> list[int]:
        return [reading.seq for r in self.received for reading in r.batch.readings]


@dataclass
class Switch:
    """Stands in for Control's pause: the Sender asks it before each batch."""

    on: bool = False

    def __call__(self) -> bool:
        return self.on


@dataclass
class Rig:
    store: Store
    hub: StatusHub
    sender: Sender
    collector: Collector
    live: LiveConfig
    states: list[State]
    pause: Switch

    def configure(self, **sender: float) -> None:
        cfg = self.live.config
        changes = msgspec.structs.replace(cfg.sender, **sender)
        self.live.loaded = LoadedConfig(
            msgspec.structs.replace(cfg, sender=changes), self.live.loaded.path
        )

    def point_at(self, port: int, token: str = "") -> None:
        cfg = self.live.config
        server = msgspec.structs.replace(cfg.server, port=port, token=token)
        self.live.loaded = LoadedConfig(
            msgspec.structs.replace(cfg, server=server), self.live.loaded.path
        )


async def fill(store: Store, n: int) -> None:
    await store.add_many([(T0 + dt.timedelta(seconds=i), 60 + i % 40, "bpm") for i in range(n)])


@pytest.fixture
async def rig(tmp_path: Path, aiohttp_server: AiohttpServer) -> AsyncIterator[Rig]:
    async with open_store(tmp_path / "queue.db", 1_000_000) as store:
        collector = Collector(store)
        app = web.Application()
        app.router.add_post("/api/v1/readings", collector.handle)
        server = await aiohttp_server(app)
        assert server.port is not None
        collector.port = server.port
        config = Config(
            device_id="test-device",
            server=ServerConfig(host="127.0.0.1", port=server.port, timeout_s=5.0),
            sender=SenderConfig(
                interval_s=0.01, batch_size=5, catchup_batch_size=20, max_backoff_s=1.0
            ),
        )
        live = LiveConfig(LoadedConfig(config, tmp_path / "config.json"))
        hub = StatusHub()
        states: list[State] = []

        def on_event(event: Event) -> None:
            if isinstance(event, StatusEvent) and isinstance(event.changes.state, State):
                states.append(event.changes.state)

        hub.add_listener(on_event)
        pause = Switch()
        async with aiohttp.ClientSession() as session:
            sender = Sender(
                store,
                hub,
                session,
                lambda: live.config,
                rng=random.Random(7),
                clock=lambda: NOW,
                is_paused=pause,
            )
            yield Rig(store, hub, sender, collector, live, states, pause)


# delivery


async def test_readings_are_deleted_only_after_the_ack(rig: Rig) -> None:
    await fill(rig.store, 3)
    delay = await rig.sender.cycle()
    assert delay == 0.01
    (received,) = rig.collector.received
    assert received.pending_while_in_flight == 3
    assert received.batch.device_id == "test-device"
    assert received.batch.stream == rig.store.stream_id
    assert [r.seq for r in received.batch.readings] == [1, 2, 3]
    assert rig.store.pending == 0
    counts = await rig.store.counts()
    assert counts.sent == 3
    assert rig.hub.status.state is State.SENDING
    assert rig.hub.status.sent_total == 3
    assert rig.hub.status.last_send_at == NOW


async def test_an_empty_queue_sends_nothing(rig: Rig) -> None:
    assert await rig.sender.cycle() == 0.01
    assert rig.collector.received == []
    assert rig.hub.status.state is State.SENDING


async def test_a_500_keeps_the_readings_and_honours_retry_after(rig: Rig) -> None:
    await fill(rig.store, 3)
    rig.collector.replies = [error(500, "db down", {"Retry-After": "30"})]
    delay = await rig.sender.cycle()
    assert delay == 30.0
    assert rig.store.pending == 3
    assert (await rig.store.counts()).sent == 0
    assert rig.hub.status.state is State.RETRYING
    assert rig.hub.status.detail == "HTTP 500: db down"
    assert rig.hub.status.last_error == "HTTP 500: db down"
    assert rig.hub.status.last_error_at == NOW
    # the next cycle sends the same readings again
    assert await rig.sender.cycle() == 0.01
    assert rig.collector.seqs == [1, 2, 3, 1, 2, 3]
    assert rig.store.pending == 0
    assert rig.hub.status.state is State.SENDING


async def test_retry_after_as_a_date_uses_the_injected_clock(rig: Rig) -> None:
    await fill(rig.store, 1)
    when = email.utils.format_datetime(dt.datetime.fromtimestamp(NOW + 45, dt.UTC), usegmt=True)
    rig.collector.replies = [error(503, "busy", {"Retry-After": when})]
    assert await rig.sender.cycle() == pytest.approx(45.0)
    assert rig.hub.status.state is State.RETRYING


async def test_a_500_without_retry_after_backs_off_within_bounds(rig: Rig) -> None:
    await fill(rig.store, 1)
    delays = []
    for _ in range(6):
        rig.collector.replies = [error(500)]
        delays.append(await rig.sender.cycle())
    assert all(BACKOFF_FLOOR_S <= d <= 1.0 for d in delays)
    assert rig.store.pending == 1


async def test_a_refused_connection_is_offline_and_keeps_everything(rig: Rig) -> None:
    await fill(rig.store, 4)
    rig.point_at(free_port())
    delay = await rig.sender.cycle()
    assert BACKOFF_FLOOR_S <= delay <= 1.0
    assert rig.hub.status.state is State.OFFLINE
    assert rig.hub.status.last_error
    assert rig.store.pending == 4
    assert (await rig.store.counts()).sent == 0
    # back online: the same readings go out
    rig.point_at(rig.collector.port)
    await rig.sender.cycle()
    assert rig.collector.seqs == [1, 2, 3, 4]
    assert rig.hub.status.state is State.SENDING


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_unauthorized(rig: Rig, status: int) -> None:
    await fill(rig.store, 2)
    rig.collector.replies = [error(status, "bad token")]
    await rig.sender.cycle()
    assert rig.hub.status.state is State.UNAUTHORIZED
    assert rig.hub.status.detail == f"HTTP {status}: bad token"
    assert rig.store.pending == 2


async def test_a_4xx_for_every_reading_keeps_everything_queued(rig: Rig) -> None:
    await fill(rig.store, 3)
    rig.collector.replies = [error(404, "no such path")] * 10
    await rig.sender.cycle()
    assert rig.hub.status.state is State.REJECTED
    assert rig.hub.status.detail == "HTTP 404: no such path"
    # bisected down to single readings, none accepted: the request is at fault, not a reading
    assert rig.collector.sizes == [3, 2, 1, 1, 1]
    assert rig.store.pending == 3
    counts = await rig.store.counts()
    assert (counts.sent, counts.dead) == (0, 0)
    assert await rig.store.dead_letters() == []


def refuse_seqs(poison: set[int]) -> Reply:
    """422 for any batch holding one of the poison seqs, the ack otherwise."""

    def reply(batch: wire.Batch) -> web.Response:
        bad = [r.seq for r in batch.readings if r.seq in poison]
        if bad:
            return web.json_response({"error": f"cannot store seq {bad[0]}"}, status=422)
        return ack_all(batch)

    return reply


async def test_a_poison_reading_is_bisected_out_and_the_rest_delivered(rig: Rig) -> None:
    await fill(rig.store, 10)
    rig.collector.replies = [refuse_seqs({4, 9})] * 40
    rig.configure(batch_size=10)
    await rig.sender.cycle()
    dead = await rig.store.dead_letters()
    assert [d["seq"] for d in dead] == [4, 9]
    assert all("cannot store seq" in str(d["error"]) for d in dead)
    assert rig.store.pending == 0
    counts = await rig.store.counts()
    assert (counts.sent, counts.dead) == (8, 2)
    acked = [
        r.seq
        for got in rig.collector.received
        if not {r.seq for r in got.batch.readings} & {4, 9}
        for r in got.batch.readings
    ]
    assert sorted(acked) == [1, 2, 3, 5, 6, 7, 8, 10]


async def test_pause_stops_a_catch_up_within_one_batch(rig: Rig) -> None:
    await fill(rig.store, 500)
    rig.configure(batch_size=5, catchup_batch_size=20)
    gate = asyncio.Event()
    paused_after: list[int] = []

    def pause_on_third(batch: wire.Batch) -> web.Response:
        if len(rig.collector.received) == 3:
            rig.pause.on = True
            paused_after.append(len(rig.collector.received))
        gate.set()
        return ack_all(batch)

    rig.collector.replies = [pause_on_third] * 100
    await rig.sender.cycle()
    assert paused_after == [3]
    # the batch in flight when pause came may still land; nothing after it is sent
    assert len(rig.collector.received) <= 4
    assert rig.store.pending >= 500 - 5 - 20 * 3


async def test_a_413_halves_the_batch_on_the_retry(rig: Rig) -> None:
    rig.configure(batch_size=8, catchup_batch_size=1000)
    await fill(rig.store, 8)
    rig.collector.replies = [error(413, "too large")]
    assert await rig.sender.cycle() == 0.0
    assert rig.store.pending == 8
    await rig.sender.cycle()
    assert rig.collector.sizes == [8, 4]
    assert rig.store.pending == 4
    await rig.sender.cycle()
    assert rig.collector.sizes == [8, 4, 4]
    assert rig.collector.seqs == [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]
    assert rig.store.pending == 0


async def test_a_413_for_a_single_reading_is_rejected(rig: Rig) -> None:
    await fill(rig.store, 1)
    rig.collector.replies = [error(413, "too large")]
    delay = await rig.sender.cycle()
    assert delay > 0
    assert rig.hub.status.state is State.REJECTED
    assert rig.store.pending == 1


async def test_rejected_ids_in_an_ack_become_dead_letters(rig: Rig) -> None:
    await fill(rig.store, 3)

    def reject_second(batch: wire.Batch) -> web.Response:
        bad = str(batch.readings[1].id)
        body = ack_body(2, 0, [{"id": bad, "error": "value out of range"}])
        return web.Response(body=body, content_type="application/json")

    rig.collector.replies = [reject_second]
    await rig.sender.cycle()
    assert rig.store.pending == 0
    (dead,) = await rig.store.dead_letters()
    assert dead["seq"] == 2
    assert dead["id"] == str(rig.collector.received[0].batch.readings[1].id)
    assert dead["error"] == "value out of range"
    counts = await rig.store.counts()
    assert (counts.sent, counts.dead) == (2, 1)
    assert rig.hub.status.dead_total == 1


async def test_an_ack_that_does_not_cover_the_batch_keeps_it(rig: Rig) -> None:
    await fill(rig.store, 3)
    rig.collector.replies = [
        lambda batch: web.Response(body=ack_body(1), content_type="application/json")
    ]
    await rig.sender.cycle()
    assert rig.store.pending == 3
    assert rig.hub.status.state is State.RETRYING


async def test_catch_up_sends_back_to_back_until_below_one_batch(rig: Rig) -> None:
    await fill(rig.store, 48)
    delay = await rig.sender.cycle()
    assert delay == 0.01
    assert rig.collector.sizes == [5, 20, 20]
    assert rig.collector.seqs == list(range(1, 46))
    assert rig.store.pending == 3
    assert State.CATCHING_UP in rig.states
    assert rig.hub.status.state is State.SENDING
    assert (await rig.store.counts()).sent == 45


async def test_catch_up_empties_an_exact_multiple(rig: Rig) -> None:
    await fill(rig.store, 50)
    await rig.sender.cycle()
    assert rig.collector.sizes == [5, 20, 20, 5]
    assert rig.collector.seqs == list(range(1, 51))
    assert rig.store.pending == 0


async def test_a_failure_during_catch_up_keeps_the_rest(rig: Rig) -> None:
    await fill(rig.store, 48)
    rig.collector.replies = [ack_all, error(500)]
    await rig.sender.cycle()
    # the third batch was already in flight when the 500 came; it stays queued too
    assert rig.collector.sizes == [5, 20, 20]
    assert rig.store.pending == 43
    assert rig.hub.status.state is State.RETRYING
    await rig.sender.cycle()
    assert rig.collector.seqs[45:50] == [6, 7, 8, 9, 10]


async def test_the_token_is_sent_as_a_bearer_header(rig: Rig) -> None:
    await fill(rig.store, 1)
    await rig.sender.cycle()
    assert "Authorization" not in rig.collector.received[0].headers
    rig.point_at(rig.collector.port, token="s3cret")
    await fill(rig.store, 1)
    await rig.sender.cycle()
    assert rig.collector.received[1].headers["Authorization"] == "Bearer s3cret"
    assert rig.collector.received[1].headers["Content-Type"] == "application/json"


async def test_a_failing_collector_is_logged_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="agent.sender")
    await fill(rig.store, 1)
    for _ in range(4):
        rig.collector.replies = [error(503, "maintenance")]
        await rig.sender.cycle()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert "maintenance" in errors[0].getMessage()
    await rig.sender.cycle()
    back = [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back) == 1


async def test_run_sends_at_once_when_woken(rig: Rig) -> None:
    rig.configure(interval_s=3600.0)
    idle = asyncio.Event()
    # the first cycle finds nothing, says "sending", then waits an hour for the next tick
    rig.hub.add_listener(lambda e: idle.set() if rig.hub.status.state is State.SENDING else None)
    task = asyncio.create_task(rig.sender.run())
    try:
        await asyncio.wait_for(idle.wait(), 10)
        assert rig.collector.received == []
        await fill(rig.store, 2)
        rig.sender.send_now()
        await asyncio.wait_for(rig.collector.arrived.wait(), 10)
        assert rig.collector.seqs == [1, 2]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_survives_a_failing_cycle(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    real = rig.sender._get_config

    def flaky() -> Config:
        nonlocal calls
        calls += 1
        if calls == 1:
            rig.sender.send_now()  # skip the backoff so the test does not sleep
            raise RuntimeError("config went away")
        return real()

    rig.sender._get_config = flaky
    rig.configure(interval_s=3600.0)
    await fill(rig.store, 1)
    task = asyncio.create_task(rig.sender.run())
    try:
        await asyncio.wait_for(rig.collector.arrived.wait(), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert rig.collector.seqs == [1]
    failed = [r for r in caplog.records if r.getMessage() == "sender cycle failed"]
    assert len(failed) == 1
    assert failed[0].exc_info is not None


# the body


async def test_encode_batch_decodes_with_the_wire_contract(tmp_path: Path) -> None:
    async with open_store(tmp_path / "q.db", 100) as store:
        await fill(store, 4)
        batch = await store.oldest(10)
        assert batch is not None
        body = encode_batch('odd"device\\\u00e9', batch)
        decoded = wire.decode_batch(body)
    assert decoded.device_id == 'odd"device\\\u00e9'
    assert decoded.stream == store.stream_id
    assert [r.seq for r in decoded.readings] == [1, 2, 3, 4]
    assert [r.message.value for r in decoded.readings] == [60, 61, 62, 63]
    assert decoded.readings[0].datetime == T0


@pytest.mark.parametrize("ticks", range(6))
async def test_a_cancel_that_lands_with_a_wake_up_still_stops_the_loop(
    rig: Rig, ticks: int
) -> None:
    task = asyncio.create_task(rig.sender.run())
    await asyncio.sleep(0.05)  # let it reach its wait
    rig.pause.on = True
    rig.sender.send_now()  # wakes the loop...
    for _ in range(ticks):  # ...and the shutdown lands a few loop steps later
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
