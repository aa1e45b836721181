"""JSON answers for aiohttp handlers, encoded by msgspec (structs, dicts, lists alike)."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


def json_response(
    data: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An answer with `data` encoded as JSON."""
    return web.Response(
        body=_encoder.encode(data), status=status, content_type="application/json", headers=headers
    )


def json_error(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An error answer, `{"error": text}`, with this status."""
    return json_response({"error": text}, status, headers)


# every answer of both programs' web apps: no framing (clickjacking), no inline script or
# style from a page's content, no sniffing a JSON answer into HTML, no URL passed on
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # the address bar may hold a secret (the agent's unlock link); never pass it on
    "Referrer-Policy": "no-referrer",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the security headers on every answer, errors and websockets too."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
