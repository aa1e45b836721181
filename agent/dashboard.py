"""The local web app: pages, the JSON API, /ws, and the security around them."""

from __future__ import annotations

import array
import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

import msgspec
from aiohttp import WSMsgType, web

from agent import APP_NAME, __version__
from agent.config import LoadedConfig
from agent.control import DropUnconfirmed, Invalid, Saved, SaveFailed, SettingsResult
from agent.keys import AUTOSTART, CONTROL
from agent.resources import resource_path
from agent.security import (
    Auth,
    create_guard,
    failed_login_delay,
    is_same_origin,
    session_id,
    set_session_cookie,
)
from agent.settings_form import MASK, SECRET_KEYS, flatten, form_sections, masked
from agent.status import Event, Info, ReadingEvent, SnapshotEvent, Status
from agent.templates import Templates
from pulse_common.http import add_security_headers
from pulse_common.http import json_response as _json
from pulse_common.logs import log_file_name, tail

logger = logging.getLogger(__name__)

RECENT_WINDOW_S = 300.0
RECENT_MAX_POINTS = 6000
# a source's dropped points are given back once they are this many and half its points
COMPACT_AFTER = 1024
LOG_LINES = 50
LOG_PREFIX = "agent"
ACTIONS = ("send-now", "pause", "resume", "retry-dead")
WS_HEARTBEAT_S = 20.0
# how long closing waits for the browser's answer; shutdown closes every socket at once
WS_CLOSE_TIMEOUT_S = 2.0
# PUT /api/config?confirm_drop=true: the user agreed to lose what a lower queue cap drops
CONFIRM_DROP_PARAM = "confirm_drop"
# settings the form shows but cannot edit (lists of objects): shown as JSON, never sent back
READONLY_KEYS = ("sources",)


class Points:
    """One source's recent (time, value) points, oldest first, packed as C doubles.

    16 bytes a point, where a deque of tuples takes about 110: a source fed 10 times a
    second keeps 3,000 points in its five minutes, and a hub may have several.
    """

    def __init__(self, maxlen: int = RECENT_MAX_POINTS) -> None:
        self._t = array.array("d")
        self._v = array.array("d")
        self._start = 0  # points before it are dropped, their room not yet given back
        self._maxlen = maxlen

    def __len__(self) -> int:
        return len(self._t) - self._start

    def append(self, when: float, value: float) -> None:
        """Add the newest point; past `maxlen` the oldest is dropped."""
        self._t.append(when)
        self._v.append(value)
        if len(self) > self._maxlen:
            self._start += 1
        self._compact()

    def prune(self, before: float) -> None:
        """Drop the oldest points while they are older than `before`."""
        t, start = self._t, self._start
        while start < len(t) and t[start] < before:
            start += 1
        self._start = start
        self._compact()

    def _compact(self) -> None:
        # give the dropped points' room back once they are half the arrays
        if self._start > COMPACT_AFTER and 2 * self._start > len(self._t):
            del self._t[: self._start]
            del self._v[: self._start]
            self._start = 0

    def times(self) -> list[float]:
        """The points' times, oldest first."""
        return self._t[self._start :].tolist()

    def values(self) -> list[float]:
        """The points' values, in the same order."""
        return self._v[self._start :].tolist()

    def pairs(self) -> list[tuple[float, float]]:
        """(time, value) of each point, oldest first."""
        return list(zip(self.times(), self.values(), strict=True))


class Recent:
    """The last minutes of readings: the charts' history and the readings/min figure.

    Each source (by device id) keeps its own points; the page's main chart shows them all.
    """

    def __init__(self, window_s: float = RECENT_WINDOW_S, clock: Callable[[], float] = time.time):
        self.window_s = window_s
        self._clock = clock
        self._sources: dict[str, Points] = {}

    def on_event(self, event: Event) -> None:
        """Status listener: keep each reading's time and value, by its source."""
        if not isinstance(event, ReadingEvent):
            return
        when = dt.datetime.fromisoformat(event.reading.datetime).timestamp()
        points = self._sources.get(event.device_id)
        if points is None:
            points = self._sources[event.device_id] = Points()
        points.append(when, float(event.reading.value))
        points.prune(when - self.window_s)

    def _pruned(self) -> dict[str, Points]:
        cutoff = self._clock() - self.window_s
        for points in self._sources.values():
            points.prune(cutoff)
        return self._sources

    def columns(self) -> dict[str, list[float]]:
        """{"t": [epoch seconds], "v": [values]} for the chart, every source's."""
        sources = list(self._pruned().values())
        if len(sources) == 1:
            return {"t": sources[0].times(), "v": sources[0].values()}
        points = sorted(p for points in sources for p in points.pairs())
        return {"t": [p[0] for p in points], "v": [p[1] for p in points]}

    def by_source(self) -> dict[str, dict[str, list[float]]]:
        """{device id: {"t": [...], "v": [...]}}: each source's chart."""
        return {
            device_id: {"t": points.times(), "v": points.values()}
            for device_id, points in self._pruned().items()
        }

    def per_minute(self) -> int:
        """How many readings arrived in the last 60 seconds, over every source."""
        since = self._clock() - 60.0
        sources = self._pruned().values()
        return sum(1 for points in sources for when in points.times() if when >= since)


class Dashboard:
    """The dashboard's own state: auth, recent readings and open sockets."""

    def __init__(self, running: LoadedConfig):
        # the address and password it was started with guard it until the restart
        cfg = running.config.dashboard
        self.auth = Auth(cfg.host, cfg.password)
        self.recent = Recent()
        self.templates = Templates(resource_path("web", "templates"))
        self.sockets: set[web.WebSocketResponse] = set()
        self.login_lock = asyncio.Lock()


DASHBOARD = web.AppKey("dashboard", Dashboard)


class StatusAnswer(msgspec.Struct, kw_only=True, tag_field="type", tag="snapshot"):
    """GET /api/status: the snapshot event, with the page's fixed facts."""

    seq: int
    status: Status
    info: Info


class WsSnapshot(StatusAnswer, kw_only=True, tag="snapshot"):
    """The first message on /ws: the snapshot, the facts, and the chart's recent readings."""

    recent: dict[str, list[float]]
    # each source's chart, by device id
    recent_sources: dict[str, dict[str, list[float]]] = msgspec.field(default_factory=dict)


def _bad_request(error: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=msgspec.json.encode({"error": error}).decode(), content_type="application/json"
    )


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as err:
        raise _bad_request(f"body is not JSON: {err}") from err


def info(app: web.Application) -> Info:
    """Where things are and what runs: the page's fixed facts."""
    control = app[CONTROL]
    # the folders in use until the restart, not the ones saved since
    running = control.running
    return Info(
        app=APP_NAME,
        version=__version__,
        server_url=control.config.server.url,
        # the id resolved once and kept in the queue file, not today's host name
        device_id=control.device_id,
        config_path=str(control.config_path),
        queue_file=str(running.storage_path),
        data_dir=str(running.storage_path.parent),
        logs_dir=str(control.logs_dir),
        readings_per_min=app[DASHBOARD].recent.per_minute(),
        restart_needed=control.restart_needed(),
    )


# --- pages -------------------------------------------------------------------------------


async def _autostart_state(app: web.Application) -> bool | None:
    """HOOK (desktop issue): None hides the start-at-login switch; serve sets app[AUTOSTART]."""
    autostart = app.get(AUTOSTART)
    if autostart is None:
        return None
    return await asyncio.to_thread(autostart.is_enabled)


async def _page(request: web.Request, template: str, extra: dict[str, Any]) -> web.Response:
    dash = request.app[DASHBOARD]
    csrf = dash.auth.csrf_for(session_id(request))
    context = {
        "info": info(request.app),
        "unlocked": csrf is not None,
        "csrf": csrf or "",
        "password_login": bool(dash.auth.password),
        "unlock_failed": request.query.get("unlock") == "failed",
        "autostart": await _autostart_state(request.app),
        **extra,
    }
    response = dash.templates.response(template, context)
    # the page carries the CSRF token: keep it out of every cache
    response.headers["Cache-Control"] = "no-store"
    return response


async def index(request: web.Request) -> web.Response:
    """The status page."""
    return await _page(request, "index.html", {"page": "status"})


async def settings_page(request: web.Request) -> web.Response:
    """The settings editor; `sources` shows as read-only JSON (edited in config.json)."""
    config = request.app[CONTROL].config
    values = flatten(config)
    for key in SECRET_KEYS:
        if values[key]:
            values[key] = MASK
    readonly = {
        key: msgspec.json.format(msgspec.json.encode(values[key]), indent=2).decode()
        for key in READONLY_KEYS
    }
    sections = form_sections()
    if config.sources:
        # with sources the one `sensor` is not used, and the two together are refused
        sections = [s for s in sections if not all(f.key.startswith("sensor.") for f in s.fields)]
    return await _page(
        request,
        "settings.html",
        {
            "page": "settings",
            "sections": sections,
            "values": values,
            "readonly": readonly,
        },
    )


# --- JSON API ----------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    """Name and version, so a second agent can recognise the first."""
    return _json({"app": APP_NAME, "version": __version__})


async def status(request: web.Request) -> web.Response:
    """The status snapshot, with the page's fixed facts under "info"."""
    snapshot = request.app[CONTROL].snapshot()
    return _json(StatusAnswer(seq=snapshot.seq, status=snapshot.status, info=info(request.app)))


async def session(request: web.Request) -> web.Response:
    """Whether this browser is unlocked, and its CSRF token if so."""
    dash = request.app[DASHBOARD]
    csrf = dash.auth.csrf_for(session_id(request))
    return _json(
        {"unlocked": csrf is not None, "csrf": csrf, "password_login": bool(dash.auth.password)}
    )


async def login(request: web.Request) -> web.Response:
    """Unlock with the dashboard password, when one is set."""
    auth = request.app[DASHBOARD].auth
    if not auth.password:
        return _json({"error": "no dashboard password is set"}, status=404)
    body = await _json_body(request)
    password = body.get("password") if isinstance(body, dict) else None
    # one guess at a time, each wrong one slowed down
    async with request.app[DASHBOARD].login_lock:
        if not isinstance(password, str) or not auth.check_password(password):
            auth.note_refusal("password", "a wrong dashboard password")
            await failed_login_delay(auth)
            return _json({"error": "wrong password"}, status=403)
    sid = auth.open_session()
    response = _json({"unlocked": True, "csrf": auth.csrf_for(sid)})
    set_session_cookie(request, response, sid)
    logger.info("dashboard unlocked with the password")
    return response


async def logout(request: web.Request) -> web.Response:
    """Lock this browser again."""
    request.app[DASHBOARD].auth.close_session(session_id(request))
    return _json({"unlocked": False})


async def get_config(request: web.Request) -> web.Response:
    """The config with its secrets masked."""
    control = request.app[CONTROL]
    return _json(
        {
            "config": masked(control.config),
            "path": str(control.config_path),
            "restart_needed": control.restart_needed(),
        }
    )


def _is_drop_confirmed(request: web.Request) -> bool:
    """True for ?confirm_drop=true, False without it; any other value is a 400."""
    values = request.query.getall(CONFIRM_DROP_PARAM, [])
    if not values:
        return False
    if values == ["true"]:
        return True
    got = msgspec.json.encode(values[0] if len(values) == 1 else values).decode()
    raise _bad_request(f'?{CONFIRM_DROP_PARAM}: expected "true", got {got}')


def _settings_answer(result: SettingsResult) -> web.Response:
    """The HTTP answer for what Control.apply_settings did."""
    if isinstance(result, Invalid):
        return _json({"errors": result.errors, "general": result.general}, status=422)
    if isinstance(result, DropUnconfirmed):
        errors = {"storage.max_pending": result.problem}
        body = {"errors": errors, "general": [], "would_drop": result.would_drop}
        return _json(body, status=409)
    if isinstance(result, SaveFailed):
        return _json({"error": result.error}, status=500)
    return _json(
        {
            "saved": True,
            "changed": result.changed,
            "applied_live": result.applied_live,
            "restart_needed": result.restart_needed,
            "config": masked(result.config),
        }
    )


async def put_config(request: web.Request) -> web.Response:
    """Validate with the config model, save atomically, and apply what can be applied live.

    A storage.max_pending below the queued count is refused with 409 and `would_drop`
    unless the request carries ?confirm_drop=true.
    """
    confirmed = _is_drop_confirmed(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        return _json({"errors": {}, "general": ["$: expected an object"]}, status=422)
    control = request.app[CONTROL]
    result = await control.apply_settings(body, confirm_drop=confirmed)
    if isinstance(result, Saved) and result.changed:
        control.publish_config(info(request.app))
    return _settings_answer(result)


async def action(request: web.Request) -> web.Response:
    """POST /api/actions/{send-now,pause,resume,retry-dead}."""
    control = request.app[CONTROL]
    name = request.match_info["action"]
    result: dict[str, Any] = {"ok": True, "action": name}
    if name == "send-now":
        control.send_now()
    elif name == "pause":
        control.pause()
    elif name == "resume":
        control.resume()
    else:
        result["moved"] = await control.retry_dead()
    result["paused"] = control.is_paused
    return _json(result)


async def autostart_action(request: web.Request) -> web.Response:
    """POST /api/actions/autostart {"enabled": bool}; only when the desktop hook is set."""
    autostart = request.app.get(AUTOSTART)
    if autostart is None:
        return _json({"error": "start at login is not available"}, status=404)
    body = await _json_body(request)
    enabled = body.get("enabled") if isinstance(body, dict) else None
    if not isinstance(enabled, bool):
        return _json({"error": "$.enabled: expected true or false"}, status=422)
    try:
        await asyncio.to_thread(autostart.enable if enabled else autostart.disable)
    except OSError as err:
        logger.error("cannot change start at login at %s: %s", autostart.location, err)
        return _json({"error": f"cannot change {autostart.location}: {err}"}, status=409)
    logger.info("start at login %s from the dashboard", "enabled" if enabled else "disabled")
    return _json({"ok": True, "enabled": await asyncio.to_thread(autostart.is_enabled)})


async def logs(request: web.Request) -> web.Response:
    """The last lines of the current hour's log file, without this run's secret."""
    name = log_file_name(LOG_PREFIX, dt.datetime.now())
    logs_dir = request.app[CONTROL].logs_dir
    lines = await asyncio.to_thread(tail, logs_dir / name, LOG_LINES)
    secret = request.app[DASHBOARD].auth.secret
    return _json({"file": name, "lines": [line.replace(secret, "…") for line in lines]})


async def dead_letters(request: web.Request) -> web.Response:
    """The dead-lettered readings with the server's reasons."""
    return _json({"dead": await request.app[CONTROL].dead_letters()})


# --- live updates ------------------------------------------------------------------------


async def _pump(ws: web.WebSocketResponse, app: web.Application) -> None:
    """Send the snapshot, then every event, until the socket or the task ends."""
    events = cast(AsyncGenerator[Event, None], app[CONTROL].subscribe())
    try:
        async for event in events:
            message: Event | WsSnapshot = event
            if isinstance(event, SnapshotEvent):
                message = WsSnapshot(
                    seq=event.seq,
                    status=event.status,
                    info=info(app),
                    recent=app[DASHBOARD].recent.columns(),
                    recent_sources=app[DASHBOARD].recent.by_source(),
                )
            await ws.send_str(msgspec.json.encode(message).decode())
    except ConnectionResetError:
        pass  # the browser went away mid-send
    finally:
        await events.aclose()
        await ws.close()


async def websocket(request: web.Request) -> web.StreamResponse:
    """/ws: a full snapshot on connect, then each numbered event as it happens."""
    origin = request.headers.get("Origin")
    # browsers always send Origin; a foreign one is cross-site websocket hijacking
    if origin is not None and not is_same_origin(request, origin):
        request.app[DASHBOARD].auth.note_refusal("websocket", f"Origin {origin!r}")
        return _json({"error": "cross-origin websocket refused"}, status=403)
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, timeout=WS_CLOSE_TIMEOUT_S)
    await ws.prepare(request)
    sockets = request.app[DASHBOARD].sockets
    sockets.add(ws)
    pump = asyncio.create_task(_pump(ws, request.app), name="ws-pump")
    try:
        async for msg in ws:  # the page sends nothing; this ends when it goes
            if msg.type is WSMsgType.ERROR:
                break
    finally:
        sockets.discard(ws)
        pump.cancel()
        await asyncio.wait([pump])
        if not pump.cancelled() and (err := pump.exception()) is not None:
            logger.error("websocket stopped sending", exc_info=err)
    return ws


async def _close_sockets(app: web.Application) -> None:
    """on_shutdown: close the websockets, or the server waits for them to time out."""
    sockets = list(app[DASHBOARD].sockets)
    await asyncio.gather(*(ws.close(code=1001, message=b"agent stopping") for ws in sockets))


async def _recent_ctx(app: web.Application) -> AsyncIterator[None]:
    remove = app[CONTROL].add_listener(app[DASHBOARD].recent.on_event)
    yield
    remove()


def setup_dashboard(app: web.Application, running: LoadedConfig) -> None:
    """Register the pages, API, websocket, templates and security on the agent's app.

    Its handlers reach the agent through app[CONTROL] alone, which the workers' context sets.
    """
    dash = Dashboard(running)
    app[DASHBOARD] = dash
    app.middlewares.append(create_guard(dash.auth))
    app.on_response_prepare.append(add_security_headers)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_recent_ctx)
    r = app.router
    r.add_get("/", index)
    r.add_get("/settings", settings_page)
    r.add_get("/ws", websocket)
    r.add_get("/api/health", health)
    r.add_get("/api/status", status)
    r.add_get("/api/session", session)
    r.add_post("/api/login", login)
    r.add_post("/api/logout", logout)
    r.add_get("/api/config", get_config)
    r.add_put("/api/config", put_config)
    r.add_post("/api/actions/autostart", autostart_action)
    r.add_post("/api/actions/{action:" + "|".join(ACTIONS) + "}", action)
    r.add_get("/api/logs", logs)
    r.add_get("/api/dead-letters", dead_letters)
    r.add_static("/static", resource_path("web", "static"))
