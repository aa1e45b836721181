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
