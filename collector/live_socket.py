"""GET /api/v1/live: the UI's websocket, the LiveHub's events as JSON text messages.

The client may send `{"devices": ["id", ...]}` to watch only those devices, or
`{"devices": null}` to watch all (the default). Once a filter is in force the server answers
`{"type": "watching", "devices": <the list as sent, or null>}`: every event after that answer
is filtered by that list, so a page that refetches its data once it has the answer misses
nothing. Anything else is answered with `{"type": "error", "error": "..."}`, the filter stays
as it was and the socket stays open. Every message to the client is sent by one task per
socket, in the order it was queued, so answers and events never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from collector.live import LIVE, Event, Subscription
from pulse_wire import DeviceId

logger = logging.getLogger(__name__)

# pings keep proxies from closing an idle socket and find a vanished client
HEARTBEAT_S = 30.0
# how long a closing socket waits for the client's close frame (at shutdown, too)
CLOSE_TIMEOUT_S = 2.0
# a page shows at most 200 devices; this leaves room and still bounds the filter
MAX_WATCHED = 1000

SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("live_sockets")

_encoder = msgspec.json.Encoder()


class Watch(msgspec.Struct, forbid_unknown_fields=True):
    """A client's message: the devices to watch, or None for every device."""

    devices: Annotated[list[DeviceId], msgspec.Meta(max_length=MAX_WATCHED)] | None


def add_live_socket(app: web.Application) -> None:
    """Register GET /api/v1/live, and close its open sockets when the server shuts down."""
    app[SOCKETS] = set()
    app.router.add_get("/api/v1/live", live_socket)
    app.on_shutdown.append(close_sockets)


async def live_socket(request: web.Request) -> web.StreamResponse:
    """Stream live events to one client until it or the server closes the socket."""
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, timeout=CLOSE_TIMEOUT_S)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        with request.app[LIVE].subscribe() as subscription:
            sender = asyncio.create_task(run_sender(ws, subscription))
            try:
                await _receive(ws, subscription)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
    finally:
        sockets.discard(ws)
    return ws


async def _receive(ws: web.WebSocketResponse, subscription: Subscription) -> None:
    """Apply each client message to the filter until the socket closes."""
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            answer = watch(subscription, message.data)
        else:
            answer = {"type": "error", "error": "expected a JSON text message"}
        # through the sender's queue, behind the events queued so far: the order holds
        subscription.offer(answer)


def watch(subscription: Subscription, text: str) -> Event:
    """Set the filter from a client's message; the answer: "watching", or what was wrong."""
    try:
        wanted = msgspec.json.decode(text, type=Watch)
    except msgspec.DecodeError as err:
        return {"type": "error", "error": f'expected {{"devices": ["id", ...] or null}}: {err}'}
    subscription.devices = None if wanted.devices is None else set(wanted.devices)
    return {"type": "watching", "devices": wanted.devices}


async def run_sender(ws: web.WebSocketResponse, subscription: Subscription) -> None:
    """Send each event the subscription yields, until cancelled or the client is gone."""
    while True:
        event: Event = await subscription.next()
        try:
            await ws.send_str(_encoder.encode(event).decode())
        except ConnectionError:
            # the client went away; the receive loop ends on its own
            return


async def close_sockets(app: web.Application) -> None:
    """Close every open live socket (on_shutdown), so the server stops without waiting."""
    open_sockets = app[SOCKETS]
    sockets = list(open_sockets)
    if sockets:
        logger.info("closing %d live sockets", len(sockets))
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in sockets),
        return_exceptions=True,
    )
