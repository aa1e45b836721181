"""GET /api/v1/series: a device's readings over a time range, downsampled by the database."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

import msgspec
from aiohttp import web

from collector.handlers import STORE, parse_query, refuse
from collector.store import SeriesPoint
from pulse_common.http import json_response
from pulse_wire import DeviceId

logger = logging.getLogger(__name__)

DEFAULT_POINTS = 500
MAX_POINTS = 5000

# RFC3339 demands an offset; a naive time would silently mean the server's zone
AwareDatetime = Annotated[dt.datetime, msgspec.Meta(tz=True)]


class SeriesQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The query string of GET /api/v1/series."""

    device_id: DeviceId
    start: AwareDatetime = msgspec.field(name="from")
    end: AwareDatetime = msgspec.field(name="to")
    points: Annotated[int, msgspec.Meta(ge=1, le=MAX_POINTS)] = DEFAULT_POINTS


class Series(msgspec.Struct):
    """The answer: the device and its non-empty buckets, oldest first."""

    device_id: str
    points: list[SeriesPoint]


async def get_series(request: web.Request) -> web.StreamResponse:
    """At most `points` buckets of a device's readings in [from, to): min, max, avg, count."""
    query = parse_query(request, SeriesQuery)
    if isinstance(query, web.Response):
        return query
    try:
        # the stores compare in UTC; an offset can push year 1 or 9999 out of datetime's range
        start, end = query.start.astimezone(dt.UTC), query.end.astimezone(dt.UTC)
    except OverflowError:
        text = "query parameter from/to: must lie within 0001-01-01..9999-12-31 UTC"
        return refuse(request, 400, text)
    # [from, to) with to <= from holds no reading: an empty series, as the schema allows
    points = (
        await request.app[STORE].series(query.device_id, start, end, query.points)
        if start < end
        else []
    )
    return json_response(Series(query.device_id, points))
