"""Notifications through Apprise: its URL check, a grouped send per channel, a test send.

Apprise is imported lazily: the base install serves SQLite without the server extra. There
the engine still evaluates, and each send fails with a logged error that names the extra to
install, its notices kept in the outbox. A send blocks, so it runs in a thread, with a timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import warnings
from types import ModuleType

from collector.alerts.evaluation import Notice
from collector.alerts.message import compose
from collector.alerts.rules import Channel

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0
# a test send answers an HTTP request: it must end well before a client gives up waiting
TEST_TIMEOUT_S = 8.0
MISSING = "notifications need the server extra: pip install 'pulse-agent[server]'"


class AlertsUnavailable(RuntimeError):
    """Apprise is not installed: notifications cannot be sent, nor URLs checked."""


@functools.cache
def load_apprise() -> ModuleType:
    """The apprise module with its plugins loaded; AlertsUnavailable if it is missing."""
    try:
        # loading its plugins imports optional libraries (gi for dbus) that warn as they go
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import apprise
            from apprise.manager_plugins import NotificationManager

            NotificationManager().load_modules()  # type: ignore[no-untyped-call]
    except ImportError as err:
        raise AlertsUnavailable(f"{MISSING} ({err})") from err
    return apprise


def url_problem(url: str) -> str | None:
    """Why Apprise cannot use `url`, or None if it can."""
    apprise = load_apprise()
    if apprise.Apprise.instantiate(url) is None:
        return f"Apprise cannot use this URL: {_shown(url)}"
    return None


def _shown(url: str) -> str:
    # a channel URL often carries a password or a bot token: show its scheme and host only
    scheme, sep, rest = url.partition("://")
    host = rest.rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}{sep}{host}…" if sep else "(no scheme://)"


def _send_blocking(urls: list[str], title: str, body: str) -> str | None:
    """Why Apprise did not deliver to every URL, or None if it did."""
    apprise = load_apprise()
    sender = apprise.Apprise()
    for url in urls:
        if not sender.add(url):
            return f"Apprise cannot use the URL {_shown(url)}"
    if not sender.notify(title=title, body=body):
        return "not delivered to every URL (the collector's log says why)"
    return None


class Notifier:
    """Sends messages to channels through Apprise, never blocking the event loop."""

    def __init__(self, timeout_s: float = SEND_TIMEOUT_S, test_timeout_s: float = TEST_TIMEOUT_S):
        self._timeout_s = timeout_s
        self._test_timeout_s = test_timeout_s
        # channels whose last send failed: a failure is logged once, not at every retry
        self._failing: set[str] = set()

    async def send(self, channel: Channel, title: str, body: str) -> bool:
        """Send one message to every URL of `channel`; False (logged) if any did not take it."""
        why = await self._attempt(channel, title, body, self._timeout_s)
        if why is not None and channel.name not in self._failing:
            logger.error("channel %s: %s; will retry at each evaluation", channel.name, why)
            self._failing.add(channel.name)
        elif why is None and channel.name in self._failing:
            logger.info("channel %s: delivering again", channel.name)
            self._failing.discard(channel.name)
        return why is None

    async def _attempt(
        self, channel: Channel, title: str, body: str, timeout_s: float
    ) -> str | None:
        """Why the message was not delivered, or None if it was."""
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.to_thread(_send_blocking, channel.urls, title, body)
        except TimeoutError:
            return f"no answer within {timeout_s:g} s"
        except AlertsUnavailable as err:
            return str(err)

    async def deliver(self, channel: Channel, notices: list[Notice]) -> bool:
        """One message about all of `notices` to `channel`."""
        title, body = compose(notices)
        return await self.send(channel, title, body)

    async def send_test(self, channel: Channel) -> str | None:
        """A test message, for the "send a test notification" button: None if delivered, else
        why not (logged). Bounded by the test timeout, as a person waits for the answer."""
        body = f"A test notification from Pulse to the channel {channel.name}."
        why = await self._attempt(channel, "[test] Pulse notification", body, self._test_timeout_s)
        if why is not None:
            logger.warning("test notification to channel %s failed: %s", channel.name, why)
        return why
