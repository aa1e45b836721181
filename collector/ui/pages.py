"""The UI's pages, templates and static files: the devices overview and the device page.

The pages are server-rendered shells; each one's script fetches the JSON API and follows
/api/v1/live, so the page and any other API client see the same data.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
import msgspec
from aiohttp import web

from collector import __version__
from collector.handlers import STORE
from collector.ui.alert_pages import add_alert_pages
from collector.ui.context import page_context, repeated_parameter
from pulse_wire import DeviceId

PACKAGE = Path(__file__).resolve().parent.parent
TEMPLATES = PACKAGE / "templates"
STATIC = PACKAGE / "static"

# what the search box accepts; the API would refuse a longer query anyway
QUERY_MAX = 128


def add_ui(app: web.Application) -> None:
    """Register the pages, the templates (autoescaped) and the static files."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    )
    env.globals["version"] = __version__
    app.router.add_static("/static", STATIC)
    app.router.add_get("/", overview_page)
    app.router.add_get("/devices/{device_id}", device_page)
    add_alert_pages(app)


async def overview_page(request: web.Request) -> web.Response:
    """Every device, paged and searchable; the rows come from /api/v1/overview."""
    twice = repeated_parameter(request)
    if twice is not None:
        message = f"The query parameter “{twice}” is given more than once."
        context = page_context(request, "error", status=400, title="Bad request", message=message)
        return aiohttp_jinja2.render_template("error.html", request, context, status=400)
    query = request.query.get("q", "")[:QUERY_MAX]
    # the empty state tells how to point an agent here: at the address this page came from
    context = page_context(
        request,
        "devices",
        query=query,
        server_host=request.url.host or "127.0.0.1",
        server_port=request.url.port or 80,
    )
    return aiohttp_jinja2.render_template("overview.html", request, context)


async def device_page(request: web.Request) -> web.Response:
    """One device's chart, streams and alert history; an HTML 404 for an unknown device."""
    device_id = request.match_info["device_id"]
    if not is_device_id(device_id) or not await has_readings(request.app, device_id):
        return not_found(request, f"No device is called “{device_id}”.")
    return aiohttp_jinja2.render_template(
        "device.html", request, page_context(request, "device", device_id=device_id)
    )


def is_device_id(text: str) -> bool:
    """Whether `text` could name a device at all (the wire contract's DeviceId)."""
    try:
        msgspec.convert(text, DeviceId)
    except msgspec.ValidationError:
        return False
    return True


async def has_readings(app: web.Application, device_id: str) -> bool:
    """Whether the store holds the device: every stored device has at least one reading."""
    return bool(await app[STORE].readings(device_id, None, 1, None))


def not_found(request: web.Request, message: str) -> web.Response:
    """The HTML 404 page; a page's 404 is for a person, not the JSON error an API gives."""
    context = page_context(request, "error", status=404, title="Not found", message=message)
    return aiohttp_jinja2.render_template("error.html", request, context, status=404)
