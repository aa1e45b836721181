"""Live events for the UI's websockets: accepted batches and alert changes, fanned out in-process.

Each subscriber gets a bounded queue. A subscriber that falls behind loses the events it has
not read yet and is told so (`{"type": "lagged"}`: refetch), so one slow browser never holds
up ingest. With several processes on one PostgreSQL database, a relay (live_postgres.py)
carries each published event to the other processes, which `deliver` it to their own
subscribers; handlers only ever `publish`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

Event = dict[str, Any]
Relay = Callable[[Event], None]

QUEUE_SIZE = 256
LAGGED: Event = {"type": "lagged"}


class Subscription:
    """One subscriber's queue, filtered to the devices it watches (None: every device)."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.devices: set[str] | None = None

    def wants(self, event: Event) -> bool:
        """Whether `event` concerns this subscriber (an event of no device concerns all)."""
        device = event.get("device_id")
        return device is None or self.devices is None or device in self.devices

    def offer(self, event: Event) -> None:
        """Queue `event` if it concerns this subscriber; when full, drop what is queued."""
        if not self.wants(event):
            return
        if self.queue.full():
            # the subscriber refetches on "lagged", which makes every older event stale
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(LAGGED)
        self.queue.put_nowait(event)

    async def next(self) -> Event:
        """The next event that concerns the subscriber now, waiting for one."""
        while True:
            event = await self.queue.get()
            # the filter may have changed since the event was queued
            if self.wants(event):
                return event


class LiveHub:
    """Publishes events to every current subscription; never blocks the publisher."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        # set while events are relayed to other processes; never blocks either
        self.relay: Relay | None = None

    def publish(self, event: Event) -> None:
        """Offer `event` to every subscriber here, and hand it to the relay if there is one."""
        self.deliver(event)
        if self.relay is not None:
            self.relay(event)

    def deliver(self, event: Event) -> None:
        """Offer `event` to this process's subscribers only (an event from another process)."""
        for subscription in self._subscriptions:
            subscription.offer(event)

    @contextlib.contextmanager
    def subscribe(self, size: int = QUEUE_SIZE) -> Iterator[Subscription]:
        """A subscription for the duration of the `with` block."""
        subscription = Subscription(size)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    @property
    def wanted(self) -> bool:
        """Whether a published event reaches anyone: a subscriber here, or the relay."""
        return bool(self._subscriptions) or self.relay is not None

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)


LIVE = web.AppKey("live", LiveHub)
