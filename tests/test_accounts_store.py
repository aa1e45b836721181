"""The account store on a real SQLite file and a real PostgreSQL schema, and the rate limit."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collector.accounts.passwords import Passwords, name_problem, password_problem
from collector.accounts.service import FAILURE_LIMIT, FAILURE_WINDOW, retry_after
from collector.accounts.store import REFRESH_EVERY, SESSION_TTL, AccountStore, token_hash
from tests.test_collector_postgres import postgres_schema

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
BACKENDS = ["sqlite", "postgres"]


@contextlib.asynccontextmanager
async def open_store(backend: str, tmp_path: Path) -> AsyncIterator[AccountStore]:
    """A fresh store: a SQLite file in a folder not made yet, or a fresh PostgreSQL schema."""
    if backend == "sqlite":
        store = await AccountStore.open(db=str(tmp_path / "new" / "c.db"), database_url="")
        try:
            yield store
        finally:
            await store.close()
        return
    async with postgres_schema() as url:
        store = await AccountStore.open(db="", database_url=url)
        try:
            yield store
        finally:
            await store.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_users_are_created_changed_and_deleted(backend: str, tmp_path: Path) -> None:
    async with open_store(backend, tmp_path) as store:
        assert not await store.has_users()
        assert await store.set_password("alice", "hash-1", T0) is True
        assert await store.has_users()
        assert await store.password_hash("alice") == "hash-1"
        assert await store.password_hash("bob") is None
        assert await store.set_password("alice", "hash-2", T0) is False
        assert await store.password_hash("alice") == "hash-2"
        assert await store.delete_user("alice") is True
        assert await store.delete_user("alice") is False
        assert not await store.has_users()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_session_is_stored_by_its_hash_and_ends(backend: str, tmp_path: Path) -> None:
    async with open_store(backend, tmp_path) as store:
        await store.set_password("alice", "hash", T0)
        new = await store.create_session("alice", T0)
        assert new.expires == T0 + SESSION_TTL
        assert len(new.token) >= 43
        assert new.csrf
        assert new.csrf != new.token
        found = await store.session(new.token, T0 + dt.timedelta(minutes=1))
        assert found is not None
        assert (found.user, found.csrf, found.refreshed) == ("alice", new.csrf, False)
        # the token itself is nowhere in the database, only its hash
        assert await store.session(token_hash(new.token), T0) is None
        assert await store.session("not-a-token", T0) is None
        await store.end_session(new.token)
        assert await store.session(new.token, T0) is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_session_is_refreshed_at_most_hourly_and_expires(
    backend: str, tmp_path: Path
) -> None:
    async with open_store(backend, tmp_path) as store:
        await store.set_password("alice", "hash", T0)
        token = (await store.create_session("alice", T0)).token
        soon = await store.session(token, T0 + REFRESH_EVERY - dt.timedelta(seconds=1))
        assert soon is not None
        assert not soon.refreshed
        assert soon.expires == T0 + SESSION_TTL
        later = T0 + REFRESH_EVERY
        moved = await store.session(token, later)
        assert moved is not None
        assert moved.refreshed
        assert moved.expires == later + SESSION_TTL
        # unused for the whole lifetime after the last refresh: gone
        assert await store.session(token, later + SESSION_TTL) is None
        assert await store.session(token, later + SESSION_TTL - dt.timedelta(seconds=1))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_new_password_or_deletion_ends_the_users_sessions(
    backend: str, tmp_path: Path
) -> None:
    async with open_store(backend, tmp_path) as store:
        await store.set_password("alice", "hash", T0)
        await store.set_password("bob", "hash", T0)
        alice = await store.create_session("alice", T0)
        bob = await store.create_session("bob", T0)
        alice_2 = await store.create_session("alice", T0)
        await store.set_password("alice", "new-hash", T0)
        assert await store.session(alice.token, T0) is None
        assert await store.session(alice_2.token, T0) is None
        assert await store.session(bob.token, T0) is not None
        await store.delete_user("bob")
        assert await store.session(bob.token, T0) is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_failures_are_counted_by_name_and_by_address(backend: str, tmp_path: Path) -> None:
    async with open_store(backend, tmp_path) as store:
        for i, (name, address) in enumerate(
            [("alice", "10.0.0.1"), ("alice", "10.0.0.2"), ("bob", "10.0.0.1")]
        ):
            await store.add_failure(name, address, T0 + dt.timedelta(seconds=i), FAILURE_WINDOW)
        found = await store.failures("alice", "10.0.0.1", T0 - FAILURE_WINDOW)
        assert len(found.by_name) == 2
        assert len(found.by_address) == 2
        assert found.by_name == sorted(found.by_name)
        # only failures after `since` count
        recent = await store.failures("alice", "10.0.0.1", T0)
        assert (len(recent.by_name), len(recent.by_address)) == (1, 1)
        await store.clear_failures("alice")
        left = await store.failures("alice", "10.0.0.1", T0 - FAILURE_WINDOW)
        assert (len(left.by_name), len(left.by_address)) == (0, 1)
        # a failure after the window drops the old ones
        await store.add_failure("carol", "10.0.0.9", T0 + 2 * FAILURE_WINDOW, FAILURE_WINDOW)
        old = await store.failures("bob", "10.0.0.1", T0 - FAILURE_WINDOW)
        assert old.by_name == []


def test_retry_after_waits_for_the_failure_that_brings_the_count_below_the_limit() -> None:
    from collector.accounts.store import Failures

    times = [T0 + dt.timedelta(minutes=i) for i in range(FAILURE_LIMIT + 1)]
    assert retry_after(Failures(times[: FAILURE_LIMIT - 1], []), T0) is None
    now = T0 + dt.timedelta(minutes=6)
    # 6 failures: the 2nd oldest must expire, at T0 + 1 min + 15 min
    assert retry_after(Failures([], times), now) == 10 * 60
    assert retry_after(Failures(times[:FAILURE_LIMIT], []), now) == 9 * 60
    # never 0: a client told to wait 0 s would retry at once
    assert retry_after(Failures(times[:FAILURE_LIMIT], []), T0 + FAILURE_WINDOW) == 1


async def test_passwords_verify_and_refuse_without_a_user() -> None:
    passwords = Passwords()
    hashed = await passwords.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert await passwords.verify(hashed, "correct horse")
    assert not await passwords.verify(hashed, "wrong horse")
    assert not await passwords.verify(None, "correct horse")
    assert not await passwords.verify("not a hash", "correct horse")
    assert not passwords.needs_rehash(hashed)
    assert passwords.needs_rehash("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")


def test_names_and_passwords_are_checked() -> None:
    assert name_problem("alice") is None
    for bad in ("", "a b", "x" * 65, "tab\there"):
        assert name_problem(bad) is not None
    assert password_problem("12345678") is None
    assert password_problem("1234567") == "the password must have at least 8 characters"
    assert password_problem("x" * 1025) is not None
