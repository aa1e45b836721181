"""Serving the app from create_app on its port: the loopback rule, the port probe, signals."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

import aiohttp
from aiohttp import web

from agent import APP_NAME
from agent.app import create_app
from agent.autostart import Autostart
from agent.config import LiveConfig
from agent.control import Control, dashboard_url
from agent.keys import AUTOSTART, CONTROL, LOG_FILES
from pulse_common.hosts import is_loopback
from pulse_common.logs import HourlyFileHandler

logger = logging.getLogger(__name__)

# the exit code of a config the agent cannot run with
EXIT_CONFIG = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PROBE_TIMEOUT_S = 2.0


async def _who_listens(host: str, port: int) -> str | None:
    """None if the port is free, "agent" if a Pulse agent answers there, else "other"."""
    url = dashboard_url(host, port) + "api/health"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as session,
            session.get(url) as resp,
        ):
            data = await resp.json(content_type=None)
    except aiohttp.ClientConnectorError:
        return None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return "other"
    is_agent = isinstance(data, dict) and data.get("app") == APP_NAME
    return "agent" if is_agent else "other"


async def _port_taken(host: str, port: int, who: str) -> int:
    """One agent per port: show the running one's dashboard, or name the port in the way."""
    if who == "agent":
        url = dashboard_url(host, port)
        logger.info("a Pulse agent is already running on port %d; opening %s", port, url)
        # imported only here, the one time it is needed
        import webbrowser

        await asyncio.to_thread(webbrowser.open, url)
        return 0
    logger.error(
        "port %d is in use by another program; set dashboard.port in the config to a free port",
        port,
    )
    return 1


async def serve(
    live: LiveConfig,
    autostart: Autostart | None = None,
    on_ready: Callable[[Control], None] | None = None,
    log_files: HourlyFileHandler | None = None,
) -> int:
    """Run the app and its dashboard until SIGTERM/SIGINT, a quit or a fatal worker error."""
    cfg = live.config.dashboard
    if not is_loopback(cfg.host) and not cfg.password:
        logger.error(
            "refusing to serve the dashboard on %s: $.dashboard.password must be set to listen "
            "on anything but 127.0.0.1, ::1 or localhost",
            cfg.host,
        )
        return EXIT_CONFIG
    who = await _who_listens(cfg.host, cfg.port)
    if who is not None:
        return await _port_taken(cfg.host, cfg.port, who)
    stop = asyncio.Event()
    exit_code = 0

    def request_stop(reason: str | None) -> None:
        nonlocal exit_code
        if reason:
            logger.error("shutting down: %s", reason)
            exit_code = 1
        stop.set()

    app = create_app(live, request_stop=request_stop)
    if log_files is not None:
        app[LOG_FILES] = log_files
    if autostart is not None:
        app[AUTOSTART] = autostart
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.host, cfg.port)
        await site.start()
    except OSError as err:
        logger.error(
            "cannot serve the dashboard on %s port %d: %s", cfg.host, cfg.port, err.strerror
        )
        await runner.cleanup()
        return 1
    control = app[CONTROL]
    # the secret in the URL unlocks the controls; the dashboard trades it for a cookie
    logger.info("dashboard: %s", control.dashboard_url)
    if threading.current_thread() is threading.main_thread():
        _handle_signals(asyncio.get_running_loop(), stop.set)
    if on_ready is not None:
        on_ready(control)
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        await runner.cleanup()
    logger.info("stopped cleanly")
    return exit_code


def _handle_signals(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `callback` on the loop (main thread only)."""
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, callback)
        except NotImplementedError:  # Windows' event loops have no signal handlers
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(callback))
