"""HTTP handlers: POST a batch, list devices, page through readings, health."""

from __future__ import annotations

import logging
from typing import Annotated, TypeVar

import msgspec
from aiohttp import hdrs, web

from collector import APP_NAME, __version__
from collector.auth import bearer_token, is_authorized
from collector.config import CollectorConfig
from collector.hubs import HUBS, HubError, hub_of
from collector.live import LIVE, Event
from collector.metrics import METRICS
from collector.store import ReadingStore, Receipt
from pulse_common.http import json_error, json_response
from pulse_wire import Batch, DeviceId, StreamId, WireError, decode_batch

logger = logging.getLogger(__name__)

CONFIG = web.AppKey("config", CollectorConfig)
STORE: web.AppKey[ReadingStore] = web.AppKey("store")

QueryT = TypeVar("QueryT", bound=msgspec.Struct)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


class ReadingsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The query string of GET /api/v1/readings."""

    device_id: DeviceId
    # not `int | None`: the lax conversion of a query string would read `since=null` as None
    since: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT
    stream: StreamId | None = None


def refuse(request: web.Request, status: int, text: str) -> web.Response:
    """An error answer, logged once with who asked for what."""
    logger.warning(
        "refused %s %s from %s: %d %s", request.method, request.path, request.remote, status, text
    )
    response = json_error(status, text)
    if status == 401:
        response.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="pulse-collector"'
    return response


async def post_readings(request: web.Request) -> web.StreamResponse:
    """Store one batch and answer with its Ack, only after the commit."""
    config = request.app[CONFIG]
    token = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
    if config.tokens and token is None:
        return refuse(request, 401, "missing Authorization: Bearer <token>")
    if request.content_type != "application/json" or request.charset not in (None, "utf-8"):
        found = request.headers.get(hdrs.CONTENT_TYPE, "none")
        return refuse(request, 415, f"expected Content-Type application/json, got {found}")
    limit = config.body_limit_bytes
    if request.content_length is not None and request.content_length > limit:
        return _too_large(request, limit)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _too_large(request, limit)
    try:
        batch = decode_batch(body)
    except WireError as err:
        return refuse(request, 400, str(err))
    except UnicodeDecodeError as err:
        return refuse(request, 400, f"body is not valid UTF-8: {err}")
    if config.tokens and not is_authorized(config.tokens, batch.device_id, token or ""):
        return refuse(request, 403, f"token is not valid for device {batch.device_id!r}")
    try:
        hub = hub_of(request)
    except HubError as err:
        return refuse(request, 400, str(err))
    receipt = await request.app[STORE].receive(batch)
    ack = receipt.ack
    if hub is not None and (ack.accepted or ack.duplicates):
        await request.app[HUBS].note(request.app[STORE], batch.device_id, hub)
    request.app[METRICS].count_batch(ack)
    logger.debug(
        "batch of %d for %s/%s: %d accepted, %d duplicates, %d rejected",
        len(batch.readings),
        batch.device_id,
        batch.stream,
        ack.accepted,
        ack.duplicates,
        len(ack.rejected),
    )
    live = request.app[LIVE]
    # built only for someone: a catch-up drain with no page open skips it (0.85 ms a batch)
    if ack.accepted and live.wanted:
        live.publish(batch_event(batch, receipt))
    return json_response(ack)


def batch_event(batch: Batch, receipt: Receipt) -> Event:
    """The live event of a stored batch: the accepted readings' times and values.

    The accepted readings are the batch's minus the rejected ones; when duplicates are mixed
    in, nothing says which readings they were, so the points are left empty (the UI refetches).
    """
    ack = receipt.ack
    points: list[dict[str, object]] = []
    if not ack.duplicates:
        readings = batch.readings
        if ack.rejected:
            refused = {rejection.id for rejection in ack.rejected}
            readings = [r for r in readings if str(r.id) not in refused]
        if len(readings) == ack.accepted:
            # msgspec renders the datetimes to text in one call, far faster than one by one
            times = msgspec.to_builtins([r.datetime for r in readings])
            points = [
                {"t": t, "v": float(r.message.value)} for t, r in zip(times, readings, strict=True)
            ]
    # plain JSON values only: the hub hands the same event to every subscriber
    return {
        "type": "batch",
        "device_id": batch.device_id,
        "stream": batch.stream,
        "accepted": ack.accepted,
        "last_seen": msgspec.to_builtins(receipt.received_at),
        "points": points,
    }


def _too_large(request: web.Request, limit: int) -> web.Response:
    response = refuse(request, 413, f"body larger than {limit} bytes; send smaller batches")
    # the rest of the body is never read, so the connection cannot carry another request
    response.force_close()
    return response


async def get_devices(request: web.Request) -> web.StreamResponse:
    """Every device with its count, last receipt, and per-stream seq range and gaps."""
    return json_response(await request.app[STORE].devices())


async def get_readings(request: web.Request) -> web.StreamResponse:
    """A device's readings with seq > since, ordered by (stream, seq), at most `limit`."""
    query = parse_query(request, ReadingsQuery)
    if isinstance(query, web.Response):
        return query
    readings = await request.app[STORE].readings(
        query.device_id, query.since, query.limit, query.stream
    )
    return json_response(readings)


def parse_query(request: web.Request, kind: type[QueryT]) -> QueryT | web.Response:
    """The query string as a `kind` Struct, or a 400 that names the bad parameter."""
    # an empty value is a mistake to name, not a parameter to drop: dropping `stream=` would
    # silently widen the answer to every stream of the device
    empty = next((key for key, value in request.query.items() if value == ""), None)
    if empty is not None:
        return refuse(request, 400, f"query parameter {empty}: must not be empty")
    known = set(kind.__struct_encode_fields__)
    unknown = next((key for key in request.query if key not in known), None)
    if unknown is not None:
        expected = ", ".join(kind.__struct_encode_fields__)
        return refuse(request, 400, f"query parameter {unknown}: unknown; expected {expected}")
    raw = {key: value for key, value in request.query.items()}
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as err:
        text, _, where = str(err).partition(" - at `$.")
        name = where.rstrip("`")
        return refuse(request, 400, f"query parameter {name}: {text}" if name else text)


async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness, with the program's name and version."""
    return json_response({"status": "ok", "app": APP_NAME, "version": __version__})
