"""The local web app: pages, the JSON API, /ws, and the security around them."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

import aiohttp_jinja2
import jinja2
import msgspec
from aiohttp import WSMsgType, web

from agent import APP_NAME, __version__
from agent.config import Config, LoadedConfig, validate_dict
from agent.keys import AUTOSTART, CONFIG, CONTROL, HUB, SENDER, STORE
from agent.logs import log_file_name, set_level, tail
from agent.resources import resource_path
from agent.security import (
    Auth,
    add_security_headers,
    create_guard,
    failed_login_delay,
    is_loopback,
    is_same_origin,
    session_id,
    set_session_cookie,
)
from agent.settings_form import (
    MASK,
    RESTART_KEYS,
    SECRET_KEYS,
    changed_keys,
    field_errors,
    flatten,
    form_sections,
    masked,
    merge_update,
)
from agent.status import Event

logger = logging.getLogger(__name__)

RECENT_WINDOW_S = 300.0
RECENT_MAX_POINTS = 6000
LOG_LINES = 50
LOG_PREFIX = "agent"
ACTIONS = ("send-now", "pause", "resume", "retry-dead")
WS_HEARTBEAT_S = 20.0
# how long closing waits for the browser's answer; shutdown closes every socket at once
WS_CLOSE_TIMEOUT_S = 2.0
# PUT /api/config?confirm_drop=true: the user agreed to lose what a lower queue cap drops
CONFIRM_DROP_PARAM = "confirm_drop"


class Recent:
    """The last minutes of readings: the chart's history and the readings/min figure."""

    def __init__(self, window_s: float = RECENT_WINDOW_S, clock: Callable[[], float] = time.time):
        self.window_s = window_s
        self._clock = clock
        self._points: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=RECENT_MAX_POINTS
        )

    def on_event(self, event: Event) -> None:
        """Hub listener: keep each reading's time and value."""
        if event["type"] != "reading":
            return
        reading = event["reading"]
        when = dt.datetime.fromisoformat(reading["datetime"]).timestamp()
        self._points.append((when, float(reading["value"])))
        self._prune(when)

    def _prune(self, now: float) -> None:
        while self._points and self._points[0][0] < now - self.window_s:
            self._points.popleft()

    def columns(self) -> dict[str, list[float]]:
        """{"t": [epoch seconds], "v": [values]} for the chart."""
        self._prune(self._clock())
        return {"t": [p[0] for p in self._points], "v": [p[1] for p in self._points]}

    def per_minute(self) -> int:
        """How many readings arrived in the last 60 seconds."""
        since = self._clock() - 60.0
        return sum(1 for when, _ in self._points if when >= since)


class Dashboard:
    """The dashboard's own state: auth, recent readings, open sockets, and the running config."""

    def __init__(self, running: LoadedConfig):
        # restart-only settings keep the values the process started with
        self.running = running
        cfg = running.config.dashboard
        self.auth = Auth(cfg.host, cfg.password)
        self.recent = Recent()
        self.sockets: set[web.WebSocketResponse] = set()
        self.save_lock = asyncio.Lock()
        self.login_lock = asyncio.Lock()

    def restart_needed(self, config: Config) -> list[str]:
        """Saved settings that differ from the running ones and only apply after a restart."""
        before, after = flatten(self.running.config), flatten(config)
        return [key for key in after if key in RESTART_KEYS and before[key] != after[key]]


DASHBOARD = web.AppKey("dashboard", Dashboard)


def unlock_url(app: web.Application, host: str, port: int) -> str:
    """The dashboard's address with this run's secret, as printed at start and in the tray."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={app[DASHBOARD].auth.secret}"


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def _bad_request(error: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=msgspec.json.encode({"error": error}).decode(), content_type="application/json"
    )


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as err:
        raise _bad_request(f"body is not JSON: {err}") from err


def info(app: web.Application) -> dict[str, Any]:
    """Where things are and what runs: the page's fixed facts."""
    dash = app[DASHBOARD]
    live = app[CONFIG]
    cfg = live.config
    return {
        "app": APP_NAME,
        "version": __version__,
        "server_url": cfg.server.url,
        # the id resolved once and kept in the queue file, not today's host name
        "device_id": app[STORE].device_for(cfg.device_id)
        if STORE in app
        else cfg.effective_device_id,
        "config_path": str(live.loaded.path),
        "queue_file": str(dash.running.storage_path),
        "data_dir": str(dash.running.storage_path.parent),
        "logs_dir": str(dash.running.logs_dir),
        "readings_per_min": dash.recent.per_minute(),
        "restart_needed": dash.restart_needed(cfg),
    }


# --- pages -------------------------------------------------------------------------------


async def _autostart_state(app: web.Application) -> bool | None:
    """HOOK (desktop issue): None hides the start-at-login switch; main sets app[AUTOSTART]."""
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
    response = aiohttp_jinja2.render_template(template, request, context)
    # the page carries the CSRF token: keep it out of every cache
    response.headers["Cache-Control"] = "no-store"
    return response


async def index(request: web.Request) -> web.Response:
    """The status page."""
    return await _page(request, "index.html", {"page": "status"})


async def settings_page(request: web.Request) -> web.Response:
    """The settings editor."""
    values = flatten(request.app[CONFIG].config)
    for key in SECRET_KEYS:
        if values[key]:
            values[key] = MASK
    return await _page(
        request,
        "settings.html",
        {"page": "settings", "sections": form_sections(), "values": values},
    )


# --- JSON API ----------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    """Name and version, so a second agent can recognise the first."""
    return _json({"app": APP_NAME, "version": __version__})


async def status(request: web.Request) -> web.Response:
    """The status snapshot, with the page's fixed facts under "info"."""
    return _json({**request.app[HUB].snapshot(), "info": info(request.app)})


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
    live = request.app[CONFIG]
    return _json(
        {
            "config": masked(live.config),
            "path": str(live.loaded.path),
            "restart_needed": request.app[DASHBOARD].restart_needed(live.config),
        }
    )


def _apply_live(app: web.Application, old: Config, new: Config) -> None:
    """Put what the workers do not re-read each cycle into force now."""
    if new.logs.level != old.logs.level:
        set_level(new.logs.level)
    if new.storage.max_pending != old.storage.max_pending:
        app[STORE].max_pending = new.storage.max_pending
    # a new address, token or interval should not wait out the current sleep or backoff
    if (new.server, new.sender, new.device_id) != (old.server, old.sender, old.device_id):
        app[SENDER].send_now()


def _is_drop_confirmed(request: web.Request) -> bool:
    """True for ?confirm_drop=true, False without it; any other value is a 400."""
    values = request.query.getall(CONFIRM_DROP_PARAM, [])
    if not values:
        return False
    if values == ["true"]:
        return True
    got = msgspec.json.encode(values[0] if len(values) == 1 else values).decode()
    raise _bad_request(f'?{CONFIRM_DROP_PARAM}: expected "true", got {got}')


def _would_drop(pending: int, old: Config, new: Config) -> int:
    """How many queued readings a lower storage.max_pending would drop at the next reading."""
    cap = new.storage.max_pending
    # an unchanged or raised cap drops nothing it would not have dropped anyway
    if cap >= old.storage.max_pending:
        return 0
    return max(0, pending - cap)


def _refusal(
    app: web.Application, old: Config, new: Config, confirmed: bool
) -> web.Response | None:
    """The answer for a valid config that must not be saved as asked, or None to save it."""
    if not is_loopback(new.dashboard.host) and not new.dashboard.password:
        # the agent would refuse to start with this; say so now, not at the next start
        problem = "a network address needs a dashboard password (set dashboard.password)"
        return _json({"errors": {"dashboard.host": problem}, "general": []}, status=422)
    drop = _would_drop(app[STORE].pending, old, new)
    if drop and not confirmed:
        # losing queued readings is the one edit that cannot be undone: the user must agree
        problem = (
            f"lowering the cap to {new.storage.max_pending} would drop the {drop} oldest "
            f"queued reading{'' if drop == 1 else 's'}; confirm to drop them"
        )
        body = {"errors": {"storage.max_pending": problem}, "general": [], "would_drop": drop}
        return _json(body, status=409)
    return None


async def put_config(request: web.Request) -> web.Response:
    """Validate with the config model, save atomically, and apply what can be applied live.

    A storage.max_pending below the queued count is refused with 409 and `would_drop`
    unless the request carries ?confirm_drop=true.
    """
    confirmed = _is_drop_confirmed(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        return _json({"errors": {}, "general": ["$: expected an object"]}, status=422)
    app = request.app
    live = app[CONFIG]
    dash = app[DASHBOARD]
    async with dash.save_lock:
        old = live.config
        new, errors = validate_dict(merge_update(old, body))
        if new is None:
            by_field, general = field_errors(errors)
            return _json({"errors": by_field, "general": general}, status=422)
        refusal = _refusal(app, old, new, confirmed)
        if refusal is not None:
            return refusal
        changed = changed_keys(old, new)
        if changed:
            drop = _would_drop(app[STORE].pending, old, new)
            try:
                await asyncio.to_thread(live.replace, new)
            except OSError as err:
                logger.error("cannot save the settings to %s: %s", live.loaded.path, err)
                return _json({"error": f"cannot save {live.loaded.path}: {err}"}, status=500)
            _apply_live(app, old, new)
            if drop:
                logger.warning(
                    "queue limit lowered to %d with confirmation: the %d oldest queued "
                    "readings are dropped",
                    new.storage.max_pending,
                    drop,
                )
            logger.info("settings saved from the dashboard: %s", ", ".join(changed))
            app[HUB].publish("config", info=info(app))
    return _json(
        {
            "saved": True,
            "changed": changed,
            "applied_live": [key for key in changed if key not in RESTART_KEYS],
            "restart_needed": dash.restart_needed(new),
            "config": masked(new),
        }
    )


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
    dash = request.app[DASHBOARD]
    name = log_file_name(LOG_PREFIX, dt.datetime.now())
    lines = await asyncio.to_thread(tail, dash.running.logs_dir / name, LOG_LINES)
    secret = dash.auth.secret
    return _json({"file": name, "lines": [line.replace(secret, "…") for line in lines]})


async def dead_letters(request: web.Request) -> web.Response:
    """The dead-lettered readings with the server's reasons."""
    return _json({"dead": await request.app[STORE].dead_letters(50)})


# --- live updates ------------------------------------------------------------------------


async def _pump(ws: web.WebSocketResponse, app: web.Application) -> None:
    """Send the snapshot, then every event, until the socket or the task ends."""
    events = cast(AsyncGenerator[Event, None], app[HUB].subscribe())
    try:
        async for event in events:
            if event["type"] == "snapshot":
                event = {**event, "info": info(app), "recent": app[DASHBOARD].recent.columns()}
            await ws.send_str(msgspec.json.encode(event).decode())
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
    remove = app[HUB].add_listener(app[DASHBOARD].recent.on_event)
    yield
    remove()


def setup_dashboard(app: web.Application) -> None:
    """Register the pages, API, websocket, templates and security on the agent's app."""
    dash = Dashboard(app[CONFIG].loaded)
    app[DASHBOARD] = dash
    app.middlewares.append(create_guard(dash.auth))
    app.on_response_prepare.append(add_security_headers)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.append(_recent_ctx)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(resource_path("web", "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
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
