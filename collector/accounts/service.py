"""The accounts as the server uses them: open mode, sessions, read tokens and signing in.

One object per application (under ACCOUNTS), shared by the access middleware and the login
handlers. It owns the account store and the password hasher, and applies the rate limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from collector.accounts.passwords import MAX_LENGTH, NAME_MAX_LENGTH, Passwords
from collector.accounts.store import AccountStore, Failures, NewSession, Session
from collector.store import Clock

logger = logging.getLogger(__name__)

# failed logins allowed per user name and per client address within the window
FAILURE_LIMIT = 5
FAILURE_WINDOW = dt.timedelta(minutes=15)
# a user created or deleted by `create-user` in another process shows within this long
USERS_CACHE_S = 1.0


@dataclass(frozen=True)
class SignedIn:
    """The password was right: a new session for `user`."""

    user: str
    session: NewSession


@dataclass(frozen=True)
class WrongPassword:
    """The user name or the password was wrong (the answer does not say which)."""


@dataclass(frozen=True)
class Limited:
    """Too many failures lately: try again after `retry_after_s` seconds."""

    retry_after_s: int


LoginResult = SignedIn | WrongPassword | Limited


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def retry_after(failures: Failures, now: dt.datetime) -> int | None:
    """Seconds until a login may be tried again, or None if it may be tried now."""
    waits = [
        # the failure whose expiry brings the count below the limit
        times[len(times) - FAILURE_LIMIT] + FAILURE_WINDOW - now
        for times in (failures.by_name, failures.by_address)
        if len(times) >= FAILURE_LIMIT
    ]
    if not waits:
        return None
    return max(1, math.ceil(max(waits).total_seconds()))


class Accounts:
    """Who may read and change, as far as the database and the config say."""

    def __init__(
        self,
        store: AccountStore,
        passwords: Passwords,
        *,
        read_tokens: list[str],
        is_loopback: bool,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self._passwords = passwords
        self._read_tokens = [_encoded(t) for t in read_tokens]
        self._is_loopback = is_loopback
        self._clock = clock
        self._monotonic = monotonic
        self._has_users: bool | None = None
        self._checked_at = -math.inf
        self._refresh = asyncio.Lock()

    async def has_users(self) -> bool:
        """True if a user exists; read from the database at most once per USERS_CACHE_S."""
        async with self._refresh:
            if self._has_users is None or self._monotonic() - self._checked_at > USERS_CACHE_S:
                self._has_users = await self.store.has_users()
                self._checked_at = self._monotonic()
            return self._has_users

    async def is_open(self) -> bool:
        """True in open mode: on loopback, with no user and no read token."""
        # off loopback, losing the last user closes everything rather than opening it
        return self._is_loopback and not self._read_tokens and not await self.has_users()

    def is_read_token(self, token: str) -> bool:
        """True if `token` is one of the config's read tokens; constant time for each."""
        given = _encoded(token)
        found = False
        for expected in self._read_tokens:
            found |= hmac.compare_digest(expected, given)
        return found

    async def session(self, token: str) -> Session | None:
        """The live session of a cookie's token, or None."""
        return await self.store.session(token, self._clock())

    async def end_session(self, token: str) -> None:
        """Sign a session out."""
        await self.store.end_session(token)

    async def login(self, name: str, password: str, address: str) -> LoginResult:
        """Check a password under the rate limit; a new session if it is right."""
        # no user name or password is longer: cut, they cost no more work and still never match
        name, password = name[: NAME_MAX_LENGTH + 1], password[: MAX_LENGTH + 1]
        # a lone surrogate cannot go into the database; no user name has one to match
        name = name.encode("utf-8", "replace").decode()
        now = self._clock()
        failures = await self.store.failures(name, address, now - FAILURE_WINDOW)
        wait = retry_after(failures, now)
        if wait is not None:
            logger.warning(
                "login of %r from %s refused: too many failures, retry in %d s", name, address, wait
            )
            return Limited(wait)
        stored = await self.store.password_hash(name)
        if not await self._passwords.verify(stored, password):
            await self.store.add_failure(name, address, now, FAILURE_WINDOW)
            logger.warning("login of %r from %s failed: wrong user name or password", name, address)
            return WrongPassword()
        assert stored is not None  # verify() is never true without a stored hash
        if self._passwords.needs_rehash(stored):
            await self.store.update_hash(name, await self._passwords.hash(password))
        await self.store.clear_failures(name)
        session = await self.store.create_session(name, now)
        logger.info("%s signed in from %s", name, address)
        return SignedIn(name, session)


ACCOUNTS = web.AppKey("accounts", Accounts)
