"""Alert state in the collector's database: rules, channels, alerts, history, the outbox.

Tables of their own, created idempotently at open and kept out of the readings' schema
version. Plus one index on readings(received_at), so that an evaluation reads only what
arrived since the last one. State lives here, not in memory: a restart keeps a pending
alert's start and a resolved alert's end, and the evaluation cursor.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Literal, NamedTuple

import msgspec

from collector.alerts.evaluation import Alert, Key, Notice, Outcome, Sample, State, Transition
from collector.alerts.rules import EVERY_DEVICE, Channel, Rule
from collector.database import (
    Connection,
    Database,
    PostgresDatabase,
    SqliteDatabase,
    as_time,
    maybe_time,
)

logger = logging.getLogger(__name__)

Source = Literal["config", "user"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_rules (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_channels (
    name TEXT PRIMARY KEY,
    urls TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    rule TEXT NOT NULL,
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    since {ts} NOT NULL,
    value DOUBLE PRECISION,
    acknowledged BOOLEAN NOT NULL,
    silenced_until {ts},
    last_notified_at {ts},
    PRIMARY KEY (rule, device_id)
);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state);
CREATE TABLE IF NOT EXISTS alert_history (
    id {id},
    rule TEXT NOT NULL,
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at {ts} NOT NULL,
    value DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS alert_history_by_alert ON alert_history (rule, device_id, id);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id {id},
    channel TEXT NOT NULL,
    notice TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    received_at {ts} NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_received_at ON readings (received_at);
"""

# from the config file: replaced when the file changes, unless a user edited it since
SEED_RULE = """
INSERT INTO alert_rules (name, definition, source) VALUES (?, ?, 'config')
ON CONFLICT (name) DO UPDATE SET definition = excluded.definition
WHERE alert_rules.source = 'config'
"""
SEED_CHANNEL = """
INSERT INTO alert_channels (name, urls, source) VALUES (?, ?, 'config')
ON CONFLICT (name) DO UPDATE SET urls = excluded.urls
WHERE alert_channels.source = 'config'
"""
PUT_RULE = """
INSERT INTO alert_rules (name, definition, source) VALUES (?, ?, 'user')
ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, source = 'user'
"""
PUT_CHANNEL = """
INSERT INTO alert_channels (name, urls, source) VALUES (?, ?, 'user')
ON CONFLICT (name) DO UPDATE SET urls = excluded.urls, source = 'user'
"""
ALERT_COLUMNS = (
    "rule, device_id, state, since, value, acknowledged, silenced_until, last_notified_at"
)
# silenced_until is only ever set by silence(): an evaluation that ran alongside keeps it.
# Likewise an acknowledgement made alongside: an evaluation only ever clears one, when the
# alert moves (fires or resolves), so it is kept while state and since stay.
PUT_ALERT = f"""
INSERT INTO alerts ({ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (rule, device_id) DO UPDATE SET
    state = excluded.state, since = excluded.since, value = excluded.value,
    acknowledged = CASE WHEN alerts.state = excluded.state AND alerts.since = excluded.since
        THEN alerts.acknowledged OR excluded.acknowledged ELSE excluded.acknowledged END,
    last_notified_at = excluded.last_notified_at
"""
ADD_HISTORY = "INSERT INTO alert_history (rule, device_id, state, at, value) VALUES (?, ?, ?, ?, ?)"
PUT_CURSOR = """
INSERT INTO alert_cursor (id, received_at) VALUES (1, ?)
ON CONFLICT (id) DO UPDATE SET received_at = excluded.received_at
"""
SAMPLES = """
SELECT device_id, value, received_at FROM readings
WHERE received_at > ? AND received_at <= ?
ORDER BY received_at, datetime
"""
# from the reading store's per-stream summaries, kept in each batch's transaction: one row
# per stream instead of an aggregate over every reading ever received
LAST_RECEIPTS = "SELECT device_id, MAX(last_seen) FROM stream_summaries GROUP BY device_id"


class HistoryEntry(NamedTuple):
    """One line of an alert's history, newest first in `history()`."""

    id: int
    rule: str
    device_id: str
    state: str
    at: dt.datetime
    value: float | None


class Queued(NamedTuple):
    """A notice waiting in the outbox for one channel."""

    id: int
    channel: str
    notice: Notice


def _alert_row(a: Alert) -> tuple[object, ...]:
    value = None if a.value is None else float(a.value)
    return (
        a.rule,
        a.device_id,
        a.state,
        a.since,
        value,
        a.acknowledged,
        a.silenced_until,
        a.last_notified_at,
    )


def _alert(row: tuple[object, ...]) -> Alert:
    rule, device_id, state, since, value, acknowledged, silenced, notified = row
    return Alert(
        rule=str(rule),
        device_id=str(device_id),
        state=msgspec.convert(state, State),
        since=as_time(since),
        value=None if value is None else float(str(value)),
        acknowledged=bool(acknowledged),
        silenced_until=maybe_time(silenced),
        last_notified_at=maybe_time(notified),
    )


def _history_row(t: Transition) -> tuple[object, ...]:
    return (t.rule, t.device_id, t.state, t.at, None if t.value is None else float(t.value))


class AlertStore:
    """Rules, channels and alert state in the collector's SQLite file or PostgreSQL schema."""

    def __init__(self, db: Database):
        self._db = db

    @classmethod
    async def open(cls, *, db: str, database_url: str) -> AlertStore:
        """PostgreSQL when `database_url` is set, else the SQLite file `db`; tables created."""
        database: Database
        if database_url:
            database = await PostgresDatabase.open(database_url, SCHEMA)
        else:
            database = await SqliteDatabase.open(db, SCHEMA)
        return cls(database)

    async def close(self) -> None:
        """Release the connection(s)."""
        await self._db.close()

    # --- rules and channels -----------------------------------------------------------

    async def seed(self, rules: list[Rule], channels: list[Channel]) -> None:
        """Write the config file's rules and channels; alert state and user edits stay."""
        async with self._db.transaction() as tx:
            await tx.execute_many(SEED_CHANNEL, [(c.name, _json(c.urls)) for c in channels])
            await tx.execute_many(SEED_RULE, [(r.name, _json(r)) for r in rules])

    async def rules(self) -> list[Rule]:
        """Every rule, by name."""
        rows = await self._db.fetch("SELECT definition FROM alert_rules ORDER BY name")
        return [msgspec.json.decode(str(text), type=Rule) for (text,) in rows]

    async def put_rule(self, rule: Rule) -> bool:
        """Create or replace a rule (a user's edit: the config file no longer overrides it);
        True if it is new. A replaced rule's alerts that no longer fit it are removed."""
        async with self._db.transaction() as tx:
            found = await tx.fetch(
                "SELECT definition FROM alert_rules WHERE name = ?", (rule.name,)
            )
            await tx.execute(PUT_RULE, (rule.name, _json(rule)))
            if found:
                old = msgspec.json.decode(str(found[0][0]), type=Rule)
                await _drop_misfits(tx, old, rule)
        return not found

    async def delete_rule(self, name: str) -> bool:
        """Delete a rule and its current alerts (their history stays); False if unknown."""
        async with self._db.transaction() as tx:
            found = await tx.fetch("SELECT name FROM alert_rules WHERE name = ?", (name,))
            await tx.execute("DELETE FROM alerts WHERE rule = ?", (name,))
            await tx.execute("DELETE FROM alert_rules WHERE name = ?", (name,))
        return bool(found)

    async def channels(self) -> list[Channel]:
        """Every channel, by name."""
        rows = await self._db.fetch("SELECT name, urls FROM alert_channels ORDER BY name")
        return [
            Channel(name=str(name), urls=msgspec.json.decode(str(urls), type=list[str]))
            for name, urls in rows
        ]

    async def put_channel(self, channel: Channel) -> bool:
        """Create or replace a channel (a user's edit); True if it is new."""
        async with self._db.transaction() as tx:
            found = await tx.fetch(
                "SELECT name FROM alert_channels WHERE name = ?", (channel.name,)
            )
            await tx.execute(PUT_CHANNEL, (channel.name, _json(channel.urls)))
        return not found

    async def delete_channel(self, name: str) -> list[str] | None:
        """Delete a channel and its queued notices, unless rules use it: None if unknown,
        else the names of the rules that use it ([] when it was deleted)."""
        async with self._db.transaction() as tx:
            found = await tx.fetch("SELECT name FROM alert_channels WHERE name = ?", (name,))
            if not found:
                return None
            rows = await tx.fetch("SELECT definition FROM alert_rules ORDER BY name")
            rules = [msgspec.json.decode(str(text), type=Rule) for (text,) in rows]
            users = [r.name for r in rules if name in r.channels]
            if not users:
                await tx.execute("DELETE FROM alert_outbox WHERE channel = ?", (name,))
                await tx.execute("DELETE FROM alert_channels WHERE name = ?", (name,))
        return users

    # --- alerts -------------------------------------------------------------------------

    async def alerts(self, state: State | None = None) -> list[Alert]:
        """Every current alert, or those in `state`, by rule and device."""
        sql = f"SELECT {ALERT_COLUMNS} FROM alerts"
        args: tuple[object, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state,)
        rows = await self._db.fetch(sql + " ORDER BY rule, device_id", args)
        return [_alert(row) for row in rows]

    async def state_counts(self) -> dict[str, int]:
        """How many current alerts are in each state, counted by the database."""
        rows = await self._db.fetch("SELECT state, COUNT(*) FROM alerts GROUP BY state", ())
        return {str(state): int(count) for state, count in rows}

    async def alert(self, rule: str, device_id: str) -> Alert | None:
        """The current alert of `rule` on `device_id`, or None."""
        rows = await self._db.fetch(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE rule = ? AND device_id = ?",
            (rule, device_id),
        )
        return _alert(rows[0]) if rows else None

    async def open_counts(self, device_ids: list[str]) -> dict[str, int]:
        """How many pending or firing alerts each of `device_ids` has; absent means none."""
        if not device_ids:
            return {}
        marks = ", ".join("?" * len(device_ids))
        rows = await self._db.fetch(
            "SELECT device_id, COUNT(*) FROM alerts"
            f" WHERE state IN ('pending', 'firing') AND device_id IN ({marks})"
            " GROUP BY device_id",
            tuple(device_ids),
        )
        return {str(device): int(count) for device, count in rows}

    async def acknowledge(self, rule: str, device_id: str, at: dt.datetime) -> bool:
        """Mark an alert acknowledged (no more repeats); False if there is no such alert."""
        return await self._mark(rule, device_id, "acknowledged = ?", True, "acknowledged", at)

    async def silence(
        self, rule: str, device_id: str, until: dt.datetime | None, at: dt.datetime
    ) -> bool:
        """Hold back an alert's notifications until `until` (None lifts it); False if unknown."""
        return await self._mark(rule, device_id, "silenced_until = ?", until, "silenced", at)

    async def _mark(
        self, rule: str, device_id: str, assignment: str, value: object, what: str, at: dt.datetime
    ) -> bool:
        async with self._db.transaction() as tx:
            found = await tx.fetch(
                "SELECT rule FROM alerts WHERE rule = ? AND device_id = ?", (rule, device_id)
            )
            if found:
                await tx.execute(
                    f"UPDATE alerts SET {assignment} WHERE rule = ? AND device_id = ?",
                    (value, rule, device_id),
                )
                await tx.execute(ADD_HISTORY, (rule, device_id, what, at, None))
        return bool(found)

    async def history(
        self, rule: str | None = None, device_id: str | None = None, limit: int = 100
    ) -> list[HistoryEntry]:
        """The newest `limit` history lines, of one rule and/or device if given."""
        rows = await self._db.fetch(
            "SELECT id, rule, device_id, state, at, value FROM alert_history"
            " WHERE (CAST(? AS TEXT) IS NULL OR rule = ?)"
            " AND (CAST(? AS TEXT) IS NULL OR device_id = ?)"
            " ORDER BY id DESC LIMIT ?",
            (rule, rule, device_id, device_id, limit),
        )
        return [
            HistoryEntry(int(i), str(r), str(d), str(s), as_time(at), _float(v))
            for i, r, d, s, at, v in rows
        ]

    # --- what the evaluation reads and writes ------------------------------------------

    async def cursor(self) -> dt.datetime | None:
        """The receipt time up to which readings have been evaluated, or None at first."""
        rows = await self._db.fetch("SELECT received_at FROM alert_cursor WHERE id = 1")
        return as_time(rows[0][0]) if rows else None

    async def samples(self, after: dt.datetime, upto: dt.datetime) -> list[Sample]:
        """The readings received in (after, upto], in receipt order, then reading order."""
        rows = await self._db.fetch(SAMPLES, (after, upto))
        return [Sample(str(d), float(v), as_time(at)) for d, v, at in rows]

    async def last_receipts(self) -> dict[str, dt.datetime]:
        """Each device's newest receipt time."""
        rows = await self._db.fetch(LAST_RECEIPTS)
        return {str(device): as_time(at) for device, at in rows}

    async def apply(self, outcome: Outcome, cursor: dt.datetime) -> None:
        """Write one evaluation's changes, history and notices with its cursor, atomically."""
        async with self._db.transaction() as tx:
            changed = [outcome.alerts[key] for key in sorted(outcome.changed)]
            await tx.execute_many(PUT_ALERT, [_alert_row(a) for a in changed])
            await _delete_alerts(tx, sorted(outcome.removed))
            await tx.execute_many(ADD_HISTORY, [_history_row(t) for t in outcome.transitions])
            await tx.execute_many(
                "INSERT INTO alert_outbox (channel, notice) VALUES (?, ?)",
                [(ch, _json(n)) for n in outcome.notices for ch in n.channels],
            )
            await tx.execute(PUT_CURSOR, (cursor,))

    async def outbox(self) -> list[Queued]:
        """Every notice not yet delivered, oldest first."""
        rows = await self._db.fetch("SELECT id, channel, notice FROM alert_outbox ORDER BY id")
        return [
            Queued(int(i), str(ch), msgspec.json.decode(str(n), type=Notice)) for i, ch, n in rows
        ]

    async def delivered(self, ids: list[int]) -> None:
        """Remove delivered (or undeliverable) notices from the outbox."""
        async with self._db.transaction() as tx:
            await tx.execute_many("DELETE FROM alert_outbox WHERE id = ?", [(i,) for i in ids])


async def _drop_misfits(tx: Connection, old: Rule, new: Rule) -> None:
    """Remove the current alerts of a replaced rule that its new definition would never
    have made: all of them if its kind changed, else those of devices it no longer watches
    (a pending one would otherwise still fire). Their history stays."""
    if old.when != new.when:
        await tx.execute("DELETE FROM alerts WHERE rule = ?", (new.name,))
    elif new.device != EVERY_DEVICE:
        await tx.execute(
            "DELETE FROM alerts WHERE rule = ? AND device_id <> ?", (new.name, new.device)
        )


async def _delete_alerts(tx: Connection, keys: list[Key]) -> None:
    await tx.execute_many("DELETE FROM alerts WHERE rule = ? AND device_id = ?", keys)


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _float(value: object) -> float | None:
    return None if value is None else float(str(value))
