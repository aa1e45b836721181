"""The control API that the dashboard and the tray drive the agent through."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from agent.config import LiveConfig
from agent.sender import Sender
from agent.status import Event, StatusHub
from agent.store import Store

logger = logging.getLogger(__name__)


class Control:
    """Actions and state of a running agent; call on the event loop's thread only.

    The tray runs on another thread and crosses over with call_soon_threadsafe or
    run_coroutine_threadsafe.
    """

    def __init__(
        self,
        live: LiveConfig,
        hub: StatusHub,
        store: Store,
        sender: Sender,
        request_stop: Callable[[], None],
    ):
        self.live = live
        self.hub = hub
        self.store = store
        self.sender = sender
        self._request_stop = request_stop
        self.dashboard_url = ""

    @property
    def is_paused(self) -> bool:
        """True while sending is paused."""
        return self.sender.paused

    @property
    def logs_dir(self) -> Path:
        """The folder of the hour-named log files."""
        return self.live.loaded.logs_dir

    def snapshot(self) -> Event:
        """The current status as a snapshot event."""
        return self.hub.snapshot()

    def send_now(self) -> None:
        """Send the oldest batch at once."""
        self.sender.send_now()

    def pause(self) -> None:
        """Stop sending; readings keep queueing."""
        self.sender.pause()

    def resume(self) -> None:
        """Start sending again."""
        self.sender.resume()

    async def retry_dead(self) -> int:
        """Move every dead letter back into the queue and send."""
        moved = await self.store.retry_dead()
        counts = await self.store.counts()
        self.hub.update(pending=counts.pending, dead_total=counts.dead)
        logger.info("%d dead letters queued again", moved)
        self.sender.send_now()
        return moved

    def quit(self) -> None:
        """Shut the agent down cleanly."""
        logger.info("quit requested")
        self._request_stop()
