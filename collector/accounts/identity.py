"""Who made a request, as the access middleware found out: the one record every handler reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

Via = Literal["anonymous", "open", "session", "token"]


@dataclass(frozen=True)
class Access:
    """Who made a request: a signed-in user, a read token, anyone (open mode), or nobody yet.

    `csrf` is the session's CSRF token ("" without a session); a page puts it in
    `<meta name="csrf-token">` and scripts send it as `X-CSRF-Token` on every change.
    `open_mode` is true while no user and no read token exist (loopback only).
    """

    via: Via
    user: str | None = None
    csrf: str = ""
    open_mode: bool = False


ACCESS = web.RequestKey("access", Access)
ANONYMOUS = Access("anonymous")


def access_of(request: web.Request) -> Access:
    """The request's Access, as the middleware set it; anonymous if it set none."""
    found = request.get(ACCESS)
    return found if found is not None else ANONYMOUS
