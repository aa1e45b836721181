"""Users, sessions and failed logins in the collector's database (SQLite or PostgreSQL).

Sessions live here, not in memory: several server processes may share one PostgreSQL, and
a restart keeps everyone signed in. A session is stored by the SHA-256 of its token only,
so a copy of the database signs nobody in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from pathlib import Path
from typing import NamedTuple

from collector.database import Database, PostgresDatabase, SqliteDatabase, as_time

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created {ts} NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created {ts} NOT NULL,
    expires {ts} NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (username);
CREATE TABLE IF NOT EXISTS login_failures (
    id {id},
    username TEXT NOT NULL,
    address TEXT NOT NULL,
    at {ts} NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_user ON login_failures (username, at);
CREATE INDEX IF NOT EXISTS login_failures_by_address ON login_failures (address, at);
"""

SESSION_DAYS = 14
SESSION_TTL = dt.timedelta(days=SESSION_DAYS)
# a session used within the hour keeps its expiry: one write per hour, not one per request
REFRESH_EVERY = dt.timedelta(hours=1)
TOKEN_BYTES = 32

PUT_USER = """
INSERT INTO users (name, password_hash, created) VALUES (?, ?, ?)
ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash
"""


class Session(NamedTuple):
    """A signed-in session as the middleware needs it; `refreshed` if its expiry moved now."""

    user: str
    csrf: str
    expires: dt.datetime
    refreshed: bool


class NewSession(NamedTuple):
    """A session just created: the token goes into the cookie, and only there."""

    token: str
    csrf: str
    expires: dt.datetime


class Failures(NamedTuple):
    """The times of failed logins within a window, by user name and by client address."""

    by_name: list[dt.datetime]
    by_address: list[dt.datetime]


def token_hash(token: str) -> str:
    """The SHA-256 of a session token, as stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class AccountStore:
    """The account tables, on a connection (or pool) of their own."""

    def __init__(self, db: Database):
        self._db = db

    @classmethod
    async def open(cls, *, db: str, database_url: str) -> AccountStore:
        """PostgreSQL when `database_url` is set, else the SQLite file `db`; tables created."""
        database: Database
        if database_url:
            database = await PostgresDatabase.open(database_url, SCHEMA)
        else:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            database = await SqliteDatabase.open(db, SCHEMA)
        return cls(database)

    async def close(self) -> None:
        """Release the connection(s)."""
        await self._db.close()

    # --- users ----------------------------------------------------------------------

    async def has_users(self) -> bool:
        """True if at least one user exists."""
        return bool(await self._db.fetch("SELECT 1 FROM users LIMIT 1"))

    async def password_hash(self, name: str) -> str | None:
        """The stored hash of `name`'s password, or None for an unknown user."""
        rows = await self._db.fetch("SELECT password_hash FROM users WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    async def set_password(self, name: str, hashed: str, now: dt.datetime) -> bool:
        """Create the user or change its password, ending its sessions; True if created."""
        async with self._db.transaction() as tx:
            found = await tx.fetch("SELECT 1 FROM users WHERE name = ?", (name,))
            await tx.execute(PUT_USER, (name, hashed, now))
            await tx.execute("DELETE FROM sessions WHERE username = ?", (name,))
        return not found

    async def update_hash(self, name: str, hashed: str) -> None:
        """Replace a hash with a stronger one of the same password; sessions stay."""
        async with self._db.transaction() as tx:
            await tx.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hashed, name))

    async def delete_user(self, name: str) -> bool:
        """Delete a user and its sessions; False if unknown."""
        async with self._db.transaction() as tx:
            found = await tx.fetch("SELECT 1 FROM users WHERE name = ?", (name,))
            await tx.execute("DELETE FROM sessions WHERE username = ?", (name,))
            await tx.execute("DELETE FROM users WHERE name = ?", (name,))
        return bool(found)

    # --- sessions -------------------------------------------------------------------

    async def create_session(self, user: str, now: dt.datetime) -> NewSession:
        """A new session for `user`; expired sessions of anyone are cleared on the way."""
        new = NewSession(
            secrets.token_urlsafe(TOKEN_BYTES),
            secrets.token_urlsafe(TOKEN_BYTES),
            now + SESSION_TTL,
        )
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            await tx.execute(
                "INSERT INTO sessions (token_hash, username, csrf, created, expires)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash(new.token), user, new.csrf, now, new.expires),
            )
        return new

    async def session(self, token: str, now: dt.datetime) -> Session | None:
        """The live session of `token`, its expiry moved on if an hour has passed; else None."""
        key = token_hash(token)
        rows = await self._db.fetch(
            "SELECT username, csrf, expires FROM sessions WHERE token_hash = ? AND expires > ?",
            (key, now),
        )
        if not rows:
            return None
        user, csrf, expires_at = rows[0]
        expires = as_time(expires_at)
        renewed = now + SESSION_TTL
        if renewed - expires < REFRESH_EVERY:
            return Session(str(user), str(csrf), expires, refreshed=False)
        async with self._db.transaction() as tx:
            await tx.execute("UPDATE sessions SET expires = ? WHERE token_hash = ?", (renewed, key))
        return Session(str(user), str(csrf), renewed, refreshed=True)

    async def end_session(self, token: str) -> None:
        """Forget the session of `token`, if there is one."""
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),))

    # --- failed logins --------------------------------------------------------------

    async def add_failure(
        self, name: str, address: str, now: dt.datetime, keep: dt.timedelta
    ) -> None:
        """Record a failed login; failures older than `keep` are dropped on the way."""
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM login_failures WHERE at <= ?", (now - keep,))
            await tx.execute(
                "INSERT INTO login_failures (username, address, at) VALUES (?, ?, ?)",
                (name, address, now),
            )

    async def failures(self, name: str, address: str, since: dt.datetime) -> Failures:
        """Failures after `since` of this user name and of this address, oldest first."""
        rows = await self._db.fetch(
            "SELECT username = ?, address = ?, at FROM login_failures"
            " WHERE at > ? AND (username = ? OR address = ?)",
            (name, address, since, name, address),
        )
        by_name = sorted(as_time(at) for same_name, _, at in rows if same_name)
        by_address = sorted(as_time(at) for _, same_address, at in rows if same_address)
        return Failures(by_name, by_address)

    async def clear_failures(self, name: str) -> None:
        """Forget the failures of `name` after it signed in."""
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM login_failures WHERE username = ?", (name,))
