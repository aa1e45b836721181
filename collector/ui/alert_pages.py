"""The alerts page, and the rules and channels page.

Both pages are server-rendered shells: the data comes from the alerts JSON API, fetched by
the page's own script, so that the page and any other client see the same answers and the
same errors. The alerts page refetches when the live websocket says alerts changed.
"""

from __future__ import annotations

from typing import Annotated, Literal

import aiohttp_jinja2
import msgspec
from aiohttp import web

from collector.ui.context import page_context, repeated_parameter
from pulse_wire import DEVICE_ID_MAX
from pulse_wire.types import NO_SPACE

# a device id, or "" for every device: what the filter form's empty field sends
NO_SPACE_OR_EMPTY = NO_SPACE.replace("]+$", "]*$")

AlertState = Literal["", "pending", "firing", "resolved"]
STATES: tuple[AlertState, ...] = ("firing", "pending", "resolved")
# the alerts page shows this many of the latest history entries
HISTORY_LIMIT = 100


class AlertsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The alerts page's optional filters, as its query string holds them ("" is no filter).

    No `| None`: the lax conversion of a query string would read `state=null` as None.
    """

    device_id: Annotated[str, msgspec.Meta(max_length=DEVICE_ID_MAX, pattern=NO_SPACE_OR_EMPTY)] = (
        ""
    )
    state: AlertState = ""


def _filters(request: web.Request) -> tuple[AlertsQuery, str]:
    """The page's filters, and what is wrong with them ("" if nothing)."""
    # the filter form sends an empty field for "any": that is no filter, not an error
    twice = repeated_parameter(request)
    if twice is not None:
        return AlertsQuery(), f"{twice}: given more than once"
    raw = dict(request.query.items())
    try:
        return msgspec.convert(raw, AlertsQuery, strict=False), ""
    except msgspec.ValidationError as err:
        text, _, where = str(err).partition(" - at `$.")
        name = where.rstrip("`")
        return AlertsQuery(), f"{name}: {text}" if name else text


async def alerts_page(request: web.Request) -> web.StreamResponse:
    """Every alert, its actions, and the history; a bad filter is named on the page itself."""
    query, problem = _filters(request)
    context = page_context(
        request,
        "alerts",
        device_id=query.device_id,
        state=query.state,
        states=STATES,
        problem=problem,
        history_limit=HISTORY_LIMIT,
    )
    # a person typed this address: the answer is the page with the reason, not bare JSON
    return aiohttp_jinja2.render_template(
        "alerts.html", request, context, status=400 if problem else 200
    )


async def rules_page(request: web.Request) -> web.StreamResponse:
    """The rules and the channels, with their editors."""
    return aiohttp_jinja2.render_template("rules.html", request, page_context(request, "rules"))


def add_alert_pages(app: web.Application) -> None:
    """Register the alerts page and the rules and channels page."""
    app.router.add_get("/alerts", alerts_page)
    app.router.add_get("/rules", rules_page)
