"""Alerts end to end in one process: readings stored by the collector's real store, the
engine evaluating them with an injected clock, and notices delivered through Apprise to a
real webhook receiver (aiohttp on loopback) and a real SMTP server (aiosmtpd on loopback),
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import pulse_wire as wire
from collector.alerts.engine import AlertEngine
from collector.alerts.notify import Notifier
from collector.alerts.rules import Channel, Rule
from collector.alerts.store import AlertStore
from collector.store import ReadingStore
from collector.store_sqlite import SqliteStore
from tests.conftest import reading
from tests.receivers import Mailbox, Webhook
from tests.test_collector_postgres import postgres_schema


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Backend:
    """The collector's reading store and the alert store on one database, reopenable."""

    def __init__(self, readings: ReadingStore, db: str, url: str):
        self.readings = readings
        self.db, self.url = db, url

    async def open_alerts(self) -> AlertStore:
        return await AlertStore.open(db=self.db, database_url=self.url)


@contextlib.asynccontextmanager
async def backend_for(name: str, tmp_path: Path, clock: Clock) -> AsyncIterator[Backend]:
    """A fresh SQLite file or PostgreSQL schema with the collector's reading store open."""
    if name == "sqlite":
        db = str(tmp_path / "c.db")
        sqlite = await SqliteStore.open(db, clock=clock)
        try:
            yield Backend(sqlite, db, "")
        finally:
            await sqlite.close()
        return
    from collector.store_postgres import PostgresStore

    async with postgres_schema() as url:
        postgres = await PostgresStore.open(url, clock=clock)
        try:
            yield Backend(postgres, "", url)
        finally:
            await postgres.close()


@contextlib.asynccontextmanager
async def stores(
    name: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[tuple[ReadingStore, AlertStore]]:
    """The reading store and an alert store, both closed at the end."""
    async with backend_for(name, tmp_path, clock) as backend:
        alerts = await backend.open_alerts()
        try:
            yield backend.readings, alerts
        finally:
            await alerts.close()


IDS = itertools.count(1)


async def send(store: ReadingStore, device: str, seq: int, *values: float) -> None:
    """Store readings of `device` from `seq` on, through the collector's store."""
    batch = {
        "device_id": device,
        "stream": "hr",
        "readings": [reading(seq + i, value=v, id_=next(IDS)) for i, v in enumerate(values)],
    }
    ack = await store.store_batch(wire.decode_batch(wire.encode(batch)))
    assert ack.accepted == len(values)


HIGH = Rule(
    name="High heart rate", when="above", threshold=120, clear=110, for_s=30, channels=["ops"]
)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_rule_fires_and_resolves_through_a_webhook_and_smtp(
    backend: str, tmp_path: Path, webhook: Webhook, mailbox: tuple[Mailbox, str]
) -> None:
    box, mail_url = mailbox
    clock = Clock()
    async with stores(backend, tmp_path, clock) as (readings, alerts):
        await alerts.seed([HIGH], [Channel(name="ops", urls=[webhook.url, mail_url])])
        engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
        await engine.step()
        clock.advance(1)
        await send(readings, "dev-7", 1, 118, 131, 135)
        await engine.step()
        assert [a.state for a in await engine.alerts()] == ["pending"]
        clock.advance(30)
        await engine.step()
        clock.advance(5)
        await send(readings, "dev-7", 4, 115, 112)  # between clear and threshold: no change
        await engine.step()
        clock.advance(5)
        await send(readings, "dev-7", 6, 104)
        await engine.step()
        for _ in range(3):
            clock.advance(5)
            await engine.step()
        (alert,) = await engine.alerts()
        assert (alert.rule, alert.device_id, alert.state, alert.value) == (
            "High heart rate",
            "dev-7",
            "resolved",
            104,
        )
    for texts in (webhook.texts(), box.messages):
        assert len(texts) == 2, texts
        firing, resolved = texts
        assert "firing" in firing
        assert "resolved" not in firing
        assert "resolved" in resolved
        assert "firing" not in resolved
        for text in texts:
            assert "High heart rate" in text
            assert "dev-7" in text


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_fifty_devices_going_silent_at_once_make_one_message_per_channel(
    backend: str, tmp_path: Path, webhook: Webhook, mailbox: tuple[Mailbox, str]
) -> None:
    box, mail_url = mailbox
    clock = Clock()
    silent = Rule(name="Device silent", when="silent", for_s=300, channels=["hook", "mail"])
    async with stores(backend, tmp_path, clock) as (readings, alerts):
        channels = [Channel(name="hook", urls=[webhook.url]), Channel(name="mail", urls=[mail_url])]
        await alerts.seed([silent], channels)
        engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
        await engine.step()
        clock.advance(1)
        for n in range(50):
            await send(readings, f"dev-{n:02}", 1, 70)
        await engine.step()
        clock.advance(300)
        await engine.step()
        assert len(await engine.alerts("firing")) == 50
        clock.advance(5)
        await engine.step()
    assert len(webhook.received) == 1
    assert len(box.messages) == 1
    (text,) = webhook.texts()
    assert "Device silent" in text
    assert "firing on 50 devices" in text
    assert "dev-00" in text
    assert "and 30 more" in text
    assert "firing on 50 devices" in box.messages[0]


async def test_a_failed_send_is_kept_and_retried_at_the_next_evaluation(
    tmp_path: Path, webhook: Webhook
) -> None:
    clock = Clock()
    instant = Rule(name="High", when="above", threshold=120, channels=["ops"])
    async with stores("sqlite", tmp_path, clock) as (readings, alerts):
        await alerts.seed([instant], [Channel(name="ops", urls=[webhook.url])])
        engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
        await engine.step()
        webhook.fail = True
        clock.advance(1)
        await send(readings, "d", 1, 150)
        await engine.step()
        clock.advance(1)
        await send(readings, "d", 2, 100)
        await engine.step()
        assert webhook.received == []
        assert len(await alerts.outbox()) == 2
        webhook.fail = False
        clock.advance(5)
        await engine.step()
        assert await alerts.outbox() == []
    # both notices, in one message, in order
    (text,) = webhook.texts()
    assert text.index("firing") < text.index("resolved")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_state_survives_a_restart(backend: str, tmp_path: Path, webhook: Webhook) -> None:
    clock = Clock()
    start = clock.now
    channels = [Channel(name="ops", urls=[webhook.url])]
    async with backend_for(backend, tmp_path, clock) as db:
        alerts = await db.open_alerts()
        try:
            await alerts.seed([HIGH], channels)
            engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
            await engine.step()
            clock.advance(1)
            await send(db.readings, "done-dev", 1, 130)
            await engine.step()
            clock.advance(30)
            await engine.step()
            clock.advance(1)
            await send(db.readings, "done-dev", 2, 100)
            await engine.step()
            clock.advance(8)
            await send(db.readings, "pending-dev", 1, 130)  # pending from start + 40
            await engine.step()
        finally:
            await alerts.close()
        assert webhook.texts()[-1].startswith("[resolved]")
        # the restart: a new store and engine over the same database
        clock.advance(15)
        alerts = await db.open_alerts()
        try:
            await alerts.seed([HIGH], channels)
            engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
            await engine.step()
            states = {a.device_id: (a.state, a.since) for a in await engine.alerts()}
            assert states == {
                "done-dev": ("resolved", start + dt.timedelta(seconds=32)),
                "pending-dev": ("pending", start + dt.timedelta(seconds=40)),
            }
            clock.advance(15)  # 30 s after the pending began, 15 of them before the restart
            await engine.step()
            assert [a.state for a in await engine.alerts()] == ["resolved", "firing"]
            for _ in range(3):
                clock.advance(60)
                await engine.step()
        finally:
            await alerts.close()
    told = [text.split("\n")[0] for text in webhook.texts()]
    assert told == [
        "[firing] High heart rate on done-dev",
        "[resolved] High heart rate on done-dev",
        "[firing] High heart rate on pending-dev",
    ]


async def test_seeding_is_idempotent_and_keeps_state_and_user_edits(tmp_path: Path) -> None:
    clock = Clock()
    async with stores("sqlite", tmp_path, clock) as (readings, alerts):
        ops = Channel(name="ops", urls=["json://127.0.0.1:9/a"])
        await alerts.seed([HIGH], [ops])
        engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
        await engine.step()
        clock.advance(1)
        await send(readings, "d", 1, 130)
        await engine.step()
        await alerts.seed([HIGH], [ops])
        assert await alerts.rules() == [HIGH]
        assert [a.state for a in await alerts.alerts()] == ["pending"]
        # a changed config file updates the rule, a user's edit wins over the file
        changed = Rule(name=HIGH.name, when="above", threshold=125, channels=["ops"])
        await alerts.seed([changed], [ops])
        assert await alerts.rules() == [changed]
        edited = Rule(name=HIGH.name, when="above", threshold=140, channels=["ops"])
        await alerts.put_rule(edited)
        await alerts.seed([HIGH], [ops])
        assert await alerts.rules() == [edited]
        assert [a.state for a in await alerts.alerts()] == ["pending"]
        assert await alerts.channels() == [ops]


async def test_acknowledge_silence_history_and_a_test_send(
    tmp_path: Path, webhook: Webhook
) -> None:
    clock = Clock()
    async with stores("sqlite", tmp_path, clock) as (readings, alerts):
        instant = Rule(name="High", when="above", threshold=120, channels=["ops"])
        await alerts.seed([instant], [Channel(name="ops", urls=[webhook.url])])
        engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
        await engine.step()
        clock.advance(1)
        await send(readings, "d", 1, 150)
        await engine.step()
        assert await engine.acknowledge("High", "d")
        assert not await engine.acknowledge("High", "nope")
        until = clock.now + dt.timedelta(hours=1)
        assert await engine.silence("High", "d", until)
        (alert,) = await engine.alerts("firing")
        assert (alert.acknowledged, alert.silenced_until) == (True, until)
        states = [h.state for h in await engine.history("High", "d")]
        assert states == ["silenced", "acknowledged", "firing", "pending"]
        assert await engine.send_test(Channel(name="ops", urls=[webhook.url])) is None
        webhook.fail = True
        why = await engine.send_test(Channel(name="ops", urls=[webhook.url]))
        assert why is not None
        assert "not delivered" in why
    assert webhook.texts()[-1].startswith("[test]")


async def test_the_app_runs_alerts_even_without_rules_in_the_config(
    tmp_path: Path, aiohttp_client: Any, webhook: Webhook
) -> None:
    """Rules can be created in the UI, so the engine runs whatever the config holds."""
    import sqlite3

    from collector.alerts.worker import ALERTS
    from collector.app import create_app
    from collector.config import AlertsConfig, CollectorConfig

    def tables(db: Path) -> set[str]:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {name for (name,) in rows}

    plain = create_app(CollectorConfig(db=str(tmp_path / "plain.db")))
    client = await aiohttp_client(plain)
    assert await plain[ALERTS].store.rules() == []
    await client.close()
    assert {"alerts", "alert_rules", "alert_cursor"} <= tables(tmp_path / "plain.db")

    alerts = AlertsConfig(channels={"ops": [webhook.url]}, rules=[HIGH], interval_s=0.05)
    app = create_app(CollectorConfig(db=str(tmp_path / "alerts.db"), alerts=alerts))
    client = await aiohttp_client(app)
    assert await app[ALERTS].store.rules() == [HIGH]
    await asyncio.sleep(0.2)  # the worker runs a few steps
    await client.close()
    assert {"alerts", "alert_rules", "alert_cursor"} <= tables(tmp_path / "alerts.db")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_an_acknowledgement_made_during_an_evaluation_is_kept(
    backend: str, tmp_path: Path
) -> None:
    """The API acknowledges while the worker evaluates: the evaluation's write, made from
    what it read before, must not undo the acknowledgement (a repeat would follow)."""
    from collector.alerts.evaluation import Outcome

    clock = Clock()
    repeating = Rule(name="High", when="above", threshold=120, repeat_s=60)
    async with stores(backend, tmp_path, clock) as (readings, alerts):
        await alerts.seed([repeating], [])
        engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
        await engine.step()
        clock.advance(1)
        await send(readings, "d", 1, 150)
        await engine.step()
        read = {a.key: a for a in await alerts.alerts()}  # the evaluation reads...
        assert await engine.acknowledge("High", "d")  # ...the API acknowledges...
        outcome = Outcome(read)
        (alert,) = read.values()
        alert.last_notified_at = clock.now  # ...the evaluation repeats and writes
        outcome.put(alert)
        await alerts.apply(outcome, clock.now)
        (stored,) = await alerts.alerts()
        assert (stored.state, stored.acknowledged) == ("firing", True)
        # a move to another state still clears it, as firing again must be acknowledged anew
        clock.advance(1)
        await send(readings, "d", 2, 100)
        await engine.step()
        (stored,) = await alerts.alerts()
        assert (stored.state, stored.acknowledged) == ("resolved", False)


async def test_a_replaced_rule_keeps_only_the_alerts_it_would_still_make(tmp_path: Path) -> None:
    """A pending alert of a device the rule no longer watches would otherwise still fire."""
    clock = Clock()
    async with stores("sqlite", tmp_path, clock) as (readings, alerts):
        await alerts.seed([HIGH], [Channel(name="ops", urls=["json://127.0.0.1:9/a"])])
        engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
        await engine.step()
        clock.advance(1)
        await send(readings, "a", 1, 130)
        await send(readings, "b", 1, 130)
        await engine.step()
        assert [a.device_id for a in await alerts.alerts("pending")] == ["a", "b"]
        assert not await alerts.put_rule(msgspec.structs.replace(HIGH, threshold=125))
        assert len(await alerts.alerts()) == 2
        assert not await alerts.put_rule(msgspec.structs.replace(HIGH, device="a"))
        assert [a.device_id for a in await alerts.alerts()] == ["a"]
        silent = Rule(name=HIGH.name, device="a", when="silent", for_s=600)
        assert not await alerts.put_rule(silent)
        assert await alerts.alerts() == []
        assert await alerts.put_rule(msgspec.structs.replace(HIGH, name="New"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_receipts_taken_while_no_rule_exists_count_once_a_rule_does(
    backend: str, tmp_path: Path, webhook: Webhook
) -> None:
    """With no rule the engine reads no readings back; a rule added later still sees the
    newest receipts, not the ones it knew before the rules went away."""
    clock = Clock()
    silent = Rule(name="Silent", when="silent", for_s=300, channels=["ops"])
    async with stores(backend, tmp_path, clock) as (readings, alerts):
        await alerts.seed([HIGH], [Channel(name="ops", urls=[webhook.url])])
        engine = AlertEngine(alerts, Notifier(timeout_s=10), clock, read_lag_s=0)
        await engine.step()
        clock.advance(1)
        await send(readings, "dev-a", 1, 70)
        await engine.step()  # knows dev-a's receipt at +1
        assert await alerts.delete_rule(HIGH.name)
        clock.advance(200)
        await send(readings, "dev-a", 2, 71)  # the newest receipt, +201, while no rule exists
        await engine.step()
        await alerts.put_rule(silent)
        clock.advance(150)  # 350 s after the first receipt, 150 after the newest
        await engine.step()
        assert await engine.alerts() == []
        clock.advance(151)  # 301 s after the newest
        await engine.step()
        assert [(a.device_id, a.state) for a in await engine.alerts()] == [("dev-a", "firing")]
