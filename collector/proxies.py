"""The client behind a reverse proxy: request.remote, scheme and secure as the client's.

Behind nginx every peer is 127.0.0.1: the failed-login limit would lump every client
together and the logs would name nginx. aiohttp-remotes reads X-Forwarded-For and
X-Forwarded-Proto; this module decides when to let it. Its XForwardedStrict wants exactly
one X-Forwarded-For entry per trusted hop and answers 400 to anything else, a direct health
check included, so XForwardedFiltered does the reading (the rightmost untrusted address is
the client), and only for a peer that is itself a trusted proxy: Filtered alone never looks
at the peer, so any client could name itself 203.0.113.7.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from aiohttp_remotes import XForwardedFiltered
from multidict import CIMultiDict

from pulse_common.http import json_error

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _is_from(networks: Sequence[Network], peer: str | None) -> bool:
    """True if the socket's peer address is in one of the networks."""
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:  # a Unix socket's peer has no IP address
        return False
    return any(address in network for network in networks)


def _without_forwarded_host(request: web.Request) -> web.Request:
    """The request without X-Forwarded-Host: our nginx never sets it, so one that arrives is
    the client's own, and the same-origin check must keep comparing with nginx's Host."""
    if hdrs.X_FORWARDED_HOST not in request.headers:
        return request
    headers = CIMultiDict(request.headers)
    headers.popall(hdrs.X_FORWARDED_HOST)
    return request.clone(headers=headers)


def create_proxy_middleware(trusted: Sequence[str]) -> Middleware:
    """A middleware that takes the client's address and scheme from a trusted proxy's
    X-Forwarded-* headers; a bad header from it is a JSON 400 (the error middleware runs
    inside this one, so it could not answer it)."""
    networks = [ipaddress.ip_network(entry) for entry in trusted]
    remotes = XForwardedFiltered(set(trusted))

    @web.middleware
    async def proxy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not _is_from(networks, peer[0] if peer else None):
            return await handler(request)
        reached = False

        async def inner(forwarded: web.Request) -> web.StreamResponse:
            nonlocal reached
            reached = True
            return await handler(forwarded)

        try:
            return await remotes.middleware(_without_forwarded_host(request), inner)
        except web.HTTPBadRequest as exc:
            if reached:  # the application's own 400: not ours to reword
                raise
            return json_error(400, f"bad forwarding headers from the proxy: {exc.reason}")

    return proxy_middleware
