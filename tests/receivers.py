"""Real notification receivers on loopback for the alert tests: a webhook (aiohttp) and an
SMTP server (aiosmtpd), what Apprise's json:// and mailto:// URLs reach."""

from __future__ import annotations

import contextlib
import email
import email.policy
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.harness import free_port


class Webhook:
    """An aiohttp server on loopback that keeps every JSON body POSTed to /hook."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.port = free_port()
        self.fail = False

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        if self.fail:
            return web.Response(status=503)
        self.received.append(await request.json())
        return web.Response(text="ok")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Webhook]:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            yield self
        finally:
            await runner.cleanup()

    def texts(self) -> list[str]:
        return [f"{m['title']}\n{m['message']}" for m in self.received]


class Mailbox:
    """An aiosmtpd handler that keeps each message's subject and text."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = [p for p in message.walk() if p.get_content_type() == "text/plain"]
        text = "\n".join(str(p.get_content()) for p in parts)
        self.messages.append(f"{message['subject']}\n{text}")
        return "250 OK"


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, str]]:
    """A real SMTP server on loopback, and the mailto:// URL that reaches it."""
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        # Apprise's mailto:// is plain SMTP (no TLS, no login) to the host and port given
        yield box, f"mailto://127.0.0.1:{port}?from=pulse@example.com&to=ops@example.com"
    finally:
        controller.stop()
