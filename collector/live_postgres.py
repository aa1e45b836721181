"""Live events between collector processes on one PostgreSQL schema: NOTIFY out, LISTEN in.

Each process delivers its own events to its own subscribers at once, and also NOTIFYs them
on a channel named after the schema, marked with a random origin id; it LISTENs on the same
channel and delivers what other origins sent, skipping its own. One dedicated asyncpg
connection does both. A NOTIFY payload must stay under 8000 bytes: a batch with too many
points sends the newest that fit and says how many it dropped (`points_dropped`).

When the connection drops, it is made again with backoff, logged once. What was published
elsewhere in between is lost, so the local subscribers are told `lagged` (they refetch);
and if this process had to drop events of its own, the first thing sent is a `lagged` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from collector.lifecycle import request_stop
from collector.live import LAGGED, LIVE, Event, LiveHub

logger = logging.getLogger(__name__)

# NOTIFY refuses a payload of 8000 bytes or more
MAX_PAYLOAD = 7999
QUEUE_SIZE = 4096
# several queued events leave in one statement: one round trip however busy ingest is
SEND_MAX = 256
HEARTBEAT_S = 2.0
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
NOTIFY_MANY = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"
# what a lost or hung connection raises; anything else is a bug and ends the worker
LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

Sleep = Callable[[float], Awaitable[None]]


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """A NOTIFY payload: who sent the event (`o`, to skip one's own) and the event (`e`)."""

    o: str
    e: dict[str, Any]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def channel_name(schema: str) -> str:
    """The NOTIFY channel of one schema: its name if short enough, else a hash of it."""
    # an identifier holds 63 bytes; schemas are the unit of a deployment (and of a test)
    tail = schema if len(schema) <= 48 else hashlib.sha256(schema.encode()).hexdigest()[:32]
    return f"pulse_live_{tail}"


def encode(event: Event, origin: str, limit: int = MAX_PAYLOAD) -> str | None:
    """The payload of `event`, within `limit` bytes: the newest points that fit if it has
    too many (with `points_dropped`), or None if even the event without points is too big."""
    text = _encoder.encode(Envelope(origin, event))
    if len(text) <= limit:
        return text.decode()
    points = event.get("points")
    if not isinstance(points, list):
        return None
    # the count of dropped points is at most len(points): its digits never grow below
    size = len(_encoder.encode(Envelope(origin, {**event, "points": [], "points_dropped": 0})))
    size += len(str(len(points))) - 1
    kept = 0
    for point in reversed(points):
        extra = len(_encoder.encode(point)) + (1 if kept else 0)
        if size + extra > limit:
            break
        size += extra
        kept += 1
    newest = points[len(points) - kept :]
    trimmed = {**event, "points": newest, "points_dropped": len(points) - kept}
    text = _encoder.encode(Envelope(origin, trimmed))
    return text.decode() if len(text) <= limit else None


class LiveBridge:
    """Relays a LiveHub's events to the other processes and theirs to it."""

    def __init__(self, hub: LiveHub, url: str, origin: str | None = None):
        self._hub = hub
        self._url = url
        self.origin = origin or uuid.uuid4().hex
        self._queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._conn: asyncpg.Connection | None = None
        self._channel = ""
        self._dropped = False

    def relay(self, event: Event) -> None:
        """Queue `event` for the other processes; never blocks (the LiveHub's relay)."""
        payload = encode(event, self.origin)
        if payload is None:
            logger.warning("live: an event too large to send was dropped: %s", event.get("type"))
            self._dropped = True
            return
        if self._queue.full():
            if not self._dropped:
                logger.warning("live: %d events wait for PostgreSQL; dropping", QUEUE_SIZE)
            self._dropped = True
            return
        self._queue.put_nowait(payload)

    async def connect(self) -> None:
        """Open the connection and LISTEN (before the server answers: nothing is missed)."""
        conn = await asyncpg.connect(
            self._url,
            timeout=HEARTBEAT_S * 2,
            # the process id tells an operator (and a test) whose connection this is
            server_settings={"application_name": f"pulse live {os.getpid()}"},
        )
        try:
            self._channel = channel_name(str(await conn.fetchval("SELECT current_schema()")))
            await conn.add_listener(self._channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            envelope = _decoder.decode(payload)
        except msgspec.DecodeError as err:
            logger.warning("live: ignored a notification that is not an event: %s", err)
            return
        if envelope.o != self.origin:
            self._hub.deliver(envelope.e)

    async def run(self, sleep: Sleep = asyncio.sleep) -> None:
        """Send the queued events until cancelled, reconnecting with backoff when the
        connection drops; the connection is closed at the end."""
        failures = 0
        try:
            while True:
                try:
                    if self._conn is None:
                        await self.connect()
                        logger.info("live: reconnected to PostgreSQL")
                        # whatever other processes published in between never arrived here
                        self._hub.deliver(LAGGED)
                    failures = 0
                    await self._send()
                except LOST as err:
                    if failures == 0:
                        logger.warning("live: lost PostgreSQL (%s); reconnecting", err)
                    self._drop()
                    await sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])
                    failures += 1
        finally:
            await self._close()

    async def _send(self) -> None:
        """Send queued events in groups; a quiet connection is checked every HEARTBEAT_S."""
        assert self._conn is not None
        conn = self._conn
        while True:
            if self._dropped:
                # the other processes missed some of this one's events: they refetch
                self._dropped = False
                await conn.execute(NOTIFY_MANY, self._channel, [encode(LAGGED, self.origin)])
            try:
                first = await asyncio.wait_for(self._queue.get(), HEARTBEAT_S)
            except TimeoutError:
                await conn.fetchval("SELECT 1", timeout=HEARTBEAT_S)
                continue
            payloads = [first]
            while len(payloads) < SEND_MAX and not self._queue.empty():
                payloads.append(self._queue.get_nowait())
            try:
                await conn.execute(NOTIFY_MANY, self._channel, payloads, timeout=HEARTBEAT_S)
            except LOST:
                self._dropped = True
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=HEARTBEAT_S)
            except LOST:
                conn.terminate()


def live_context(url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the app's LiveHub relayed through PostgreSQL while the app runs."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        hub = app[LIVE]
        bridge = LiveBridge(hub, url)
        await bridge.connect()
        hub.relay = bridge.relay
        task = asyncio.create_task(bridge.run())
        task.add_done_callback(_watch(app))
        try:
            yield
        finally:
            hub.relay = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return context


def _watch(app: web.Application) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback: the relay only ends by cancellation; anything else stops the server."""

    def done(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        err = task.exception()
        logger.error("the live relay stopped unexpectedly", exc_info=err)
        request_stop(app, f"the live relay stopped: {err!r}")

    return done
