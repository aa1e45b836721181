"""GET /api/v1/overview and GET /api/v1/devices/{device_id}: the UI's device data.

Both read the per-stream summaries the store keeps with every batch, never an aggregate over
all readings: the overview pages and searches devices in SQL, then reads readings only for
the page's devices, by their (device_id, datetime) index, so 10,000 devices cost no more
than 50.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from aiohttp import web

from collector.alerts.worker import ALERTS
from collector.handlers import STORE, parse_query, refuse
from collector.live_socket import add_live_socket
from collector.store import Activity, DeviceSummary, SeriesPoint
from pulse_common.http import json_response
from pulse_wire import DeviceId

# a device is live while its newest reading was received this recently
LIVE_WINDOW = dt.timedelta(seconds=120)
SPARK_SPAN = dt.timedelta(hours=1)
SPARK_POINTS = 30
RATE_MINUTES = 5
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_GAPS = 100
MAX_SEARCH = 128
# SQLite adds LIMIT to OFFSET in 64 bits; far beyond any fleet, and far from overflowing
MAX_OFFSET = 2**31 - 1


# no NUL: PostgreSQL text cannot hold one, and no device id has one
Search = Annotated[str, msgspec.Meta(max_length=MAX_SEARCH, pattern=r"^[^\x00]*$(?!\n)")]


class OverviewQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The query string of GET /api/v1/overview."""

    q: Search | None = None
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT


class OverviewDevice(msgspec.Struct):
    """One device of the overview: its state, rate, gaps, open alerts and last hour."""

    device_id: str
    last_seen: dt.datetime
    live: bool
    count: int
    missing: int
    readings_per_min: float
    open_alerts: int
    spark: list[SeriesPoint]
    # the agent it came through, when that agent relays several devices
    hub: str | None = None


class Overview(msgspec.Struct):
    """A page of the overview, as of `now`."""

    total: int
    offset: int
    limit: int
    now: dt.datetime
    devices: list[OverviewDevice]


class StreamDetail(msgspec.Struct):
    """One stream of a device, with its first missing seq ranges (inclusive)."""

    stream: str
    first_seq: int
    last_seq: int
    count: int
    missing: int
    gaps: list[tuple[int, int]]


class DeviceDetail(msgspec.Struct):
    """What the device page shows above its chart."""

    device_id: str
    count: int
    last_seen: dt.datetime
    live: bool
    streams: list[StreamDetail]
    hub: str | None = None


def add_device_routes(app: web.Application) -> None:
    """Register the overview, device detail and live routes."""
    app.router.add_get("/api/v1/overview", get_overview)
    app.router.add_get("/api/v1/devices/{device_id}", get_device)
    add_live_socket(app)


async def get_overview(request: web.Request) -> web.StreamResponse:
    """A page of devices sorted by id, optionally only those whose id contains `q`."""
    query = parse_query(request, OverviewQuery)
    if isinstance(query, web.Response):
        return query
    store = request.app[STORE]
    now = store.now()
    page = await store.device_page(query.q, query.offset, query.limit)
    ids = [row.device_id for row in page.devices]
    recent = now - dt.timedelta(minutes=RATE_MINUTES)
    activity = await store.activity(ids, now - SPARK_SPAN, now, SPARK_POINTS, recent)
    alerts = await request.app[ALERTS].store.open_counts(ids)
    devices = [
        _overview_device(row, now, activity.get(row.device_id), alerts.get(row.device_id, 0))
        for row in page.devices
    ]
    return json_response(Overview(page.total, query.offset, query.limit, now, devices))


def _overview_device(
    row: DeviceSummary, now: dt.datetime, activity: Activity | None, open_alerts: int
) -> OverviewDevice:
    activity = activity or Activity([], 0)
    return OverviewDevice(
        device_id=row.device_id,
        last_seen=row.last_seen,
        live=is_live(row.last_seen, now),
        count=row.count,
        missing=sum(s.missing for s in row.streams),
        readings_per_min=activity.recent / RATE_MINUTES,
        open_alerts=open_alerts,
        spark=activity.points,
        hub=row.hub,
    )


def is_live(last_seen: dt.datetime, now: dt.datetime) -> bool:
    """A reading was received in the last LIVE_WINDOW (a clock set back counts as live)."""
    return now - last_seen <= LIVE_WINDOW


async def get_device(request: web.Request) -> web.StreamResponse:
    """One device's streams with their seq ranges and first gaps; 404 if it is unknown."""
    try:
        device_id = msgspec.convert(request.match_info["device_id"], DeviceId)
    except msgspec.ValidationError as err:
        return refuse(request, 400, f"path parameter device_id: {err}")
    store = request.app[STORE]
    now = store.now()
    summary = await store.device(device_id)
    if summary is None:
        return refuse(request, 404, f"no device {device_id!r}: it has sent no reading")
    streams = [
        StreamDetail(
            s.stream,
            s.first_seq,
            s.last_seq,
            s.count,
            s.missing,
            # a stream without missing seqs needs no scan of its readings
            await store.gaps(device_id, s.stream, MAX_GAPS) if s.missing else [],
        )
        for s in summary.streams
    ]
    detail = DeviceDetail(
        device_id,
        summary.count,
        summary.last_seen,
        is_live(summary.last_seen, now),
        streams,
        summary.hub,
    )
    return json_response(detail)
