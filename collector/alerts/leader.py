"""Alert leadership: of several collectors on one PostgreSQL schema, one evaluates at a time.

The leader holds a session-level advisory lock on a connection of its own. The lock lives
exactly as long as that connection: when the process dies, even by SIGKILL, the server sees
the socket close and frees it. The others try again every RETRY_S, so one of them takes over
within a few seconds. The key is derived from the schema, so that collectors (or test runs)
on other schemas of the same database do not elect each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

RETRY_S = 2.0
TRY_LOCK = (
    "SELECT pg_try_advisory_lock(hashtextextended('pulse alert leader ' || current_schema(), 0))"
)
# what a lost or hung connection raises; anything else is a bug and ends the worker
LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

Lead = Callable[[], Coroutine[Any, Any, None]]
Sleep = Callable[[float], Awaitable[None]]


class AdvisoryLock:
    """The leader lock: a dedicated asyncpg connection that holds it while it is open."""

    def __init__(self, url: str, timeout_s: float = RETRY_S):
        self._url = url
        self._timeout = timeout_s
        self._conn: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        """Try once to take the lock, connecting first if needed; True if it is ours now."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._url,
                timeout=self._timeout,
                server_settings={"application_name": "pulse alert leader"},
            )
        try:
            return bool(await self._conn.fetchval(TRY_LOCK, timeout=self._timeout))
        except LOST:
            self.drop()
            raise

    async def is_held(self) -> bool:
        """Whether the lock is still ours: nothing here unlocks it, so its connection answering
        is the proof. A connection that does not answer in time is dropped, freeing the lock."""
        if self._conn is None or self._conn.is_closed():
            return False
        try:
            await self._conn.fetchval("SELECT 1", timeout=self._timeout)
        except LOST:
            self.drop()
            return False
        return True

    def drop(self) -> None:
        """Close the connection at once (never waiting on a server that may be gone)."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def release(self) -> None:
        """Close the connection politely, so that another process takes over at once."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=self._timeout)
            except LOST:
                conn.terminate()


class _StateLog:
    """Logs "alerts: leading" or "alerts: standing by" once per change."""

    def __init__(self) -> None:
        self._state: str | None = None

    def set(self, state: str) -> None:
        if state != self._state:
            logger.info("alerts: %s", state)
            self._state = state


async def run_leadership(
    lock: AdvisoryLock, lead: Lead, retry_s: float = RETRY_S, sleep: Sleep = asyncio.sleep
) -> None:
    """Run `lead` whenever this process holds the lock, stopping it when the lock is lost;
    retry every `retry_s` while another process leads. Until cancelled; the lock is freed."""
    states = _StateLog()
    unreachable = False
    try:
        while True:
            try:
                held = await lock.try_acquire()
            except LOST as err:
                if not unreachable:
                    logger.warning("alerts: cannot reach PostgreSQL for the leader lock: %s", err)
                unreachable, held = True, False
            else:
                unreachable = False
            if held:
                states.set("leading")
                await _lead_while_held(lock, lead, retry_s)
            states.set("standing by")
            await sleep(retry_s)
    finally:
        await lock.release()


async def _lead_while_held(lock: AdvisoryLock, lead: Lead, retry_s: float) -> None:
    """Run `lead` as an owned task, checking the lock every `retry_s`; cancel it on loss."""
    task = asyncio.create_task(lead())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=retry_s)
            if done:
                task.result()  # raises what ended it
                raise RuntimeError("the alert evaluation returned")
            if not await lock.is_held():
                # another process may lead from now on: stop at once, even mid-step
                logger.warning("alerts: lost the leader lock's connection")
                return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
