"""config → logging → asyncio (→ tray, when there is one)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from agent import APP_NAME, __version__
from agent.app import create_app
from agent.autostart import Autostart, create_autostart, launch_command
from agent.config import (
    ConfigError,
    LiveConfig,
    LoadedConfig,
    default_config_path,
    ensure_config,
    load_config,
)
from agent.dashboard import unlock_url
from agent.keys import AUTOSTART, CONTROL, LOG_FILES
from agent.logs import HourlyFileHandler, open_logging
from agent.security import is_loopback

if TYPE_CHECKING:
    from agent.tray import Tray

logger = logging.getLogger(__name__)

EXIT_CONFIG = 2
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: `run` (the default) or `check-config`."""
    parser = argparse.ArgumentParser(prog="pulse-agent", description="Pulse sensor agent")
    parser.add_argument("--version", action="version", version=f"pulse-agent {__version__}")
    parser.add_argument("--config", type=Path, help="config.json to use")
    parser.add_argument("--no-tray", action="store_true", help="run without a tray icon")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the agent (the default)")
    check = sub.add_parser("check-config", help="validate the config file and list every error")
    check.add_argument("--config", type=Path, dest="check_config", help="config.json to check")
    auto = sub.add_parser("autostart", help="start the agent at login: enable, disable, status")
    auto.add_argument("action", choices=["enable", "disable", "status"])
    auto.add_argument("--config", type=Path, dest="autostart_config", help="config.json to use")
    args = parser.parse_args(argv)
    if getattr(args, "check_config", None):
        args.config = args.check_config
    if getattr(args, "autostart_config", None):
        args.config = args.autostart_config
    return args


def find_config(explicit: Path | None) -> tuple[Path, str]:
    """The config path to use and why; the default one is created on first run."""
    if explicit is not None:
        return explicit.expanduser().resolve(), "given with --config"
    path, why = default_config_path()
    if ensure_config(path):
        why += ", created with defaults"
    return path, why


def _console(text: str) -> None:
    # a windowed build has no console: sys.stderr is None there
    if sys.stderr is not None:
        sys.stderr.write(text + "\n")


def check_config(path: Path) -> int:
    """Validate a config file; print every error and return 2 if there is one."""
    try:
        load_config(path)
    except ConfigError as err:
        _console(f"{path}: invalid config")
        for line in err.errors:
            _console(f"  {line}")
        return EXIT_CONFIG
    _console(f"{path}: OK")
    return 0


def _report_bad_config(path: Path, err: ConfigError) -> int:
    """Say so on the console and in the log beside the file, then exit without touching it."""
    with open_logging(path.parent / "logs", "agent", console=False):
        logger.error("invalid config %s:\n  %s", path, "\n  ".join(err.errors))
    _console(f"pulse-agent: invalid config {path}:")
    for line in err.errors:
        _console(f"  {line}")
    _console("Fix the file (or run `python -m agent check-config`) and start again.")
    return EXIT_CONFIG


def _probe_url(host: str, port: int) -> str:
    """The base URL to reach a dashboard bound to host:port from this computer."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def _who_listens(host: str, port: int) -> str | None:
    """None if the port is free, "agent" if a Pulse agent answers there, else "other"."""
    url = _probe_url(host, port) + "api/health"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session,
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
        url = _probe_url(host, port)
        logger.info("a Pulse agent is already running on port %d; opening %s", port, url)
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
    on_ready: Callable[[web.Application], None] | None = None,
    log_files: HourlyFileHandler | None = None,
) -> int:
    """Run the app and its dashboard until SIGTERM/SIGINT or a fatal worker error."""
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
    # the secret in the URL unlocks the controls; the dashboard trades it for a cookie
    url = unlock_url(app, cfg.host, cfg.port)
    app[CONTROL].dashboard_url = url
    logger.info("dashboard: %s", url)
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        _handle_signals(loop, stop.set)
    if on_ready is not None:
        on_ready(app)
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        await runner.cleanup()
    logger.info("stopped cleanly")
    return exit_code


def _handle_signals(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `callback` on the loop (main thread only)."""
    for sig in _SIGNALS:
        try:
            loop.add_signal_handler(sig, callback)
        except NotImplementedError:  # Windows' event loops have no signal handlers
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(callback))


def has_display() -> bool:
    """True where a tray icon can be shown: always on Windows and macOS, else with X/Wayland."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_autostart(config: Path, explicit: bool) -> Autostart:
    """The start-at-login entry for this executable and config (config only if explicit)."""
    frozen = bool(getattr(sys, "frozen", False))
    # from source the default config depends on the working directory, which login changes
    command = launch_command(config if explicit or not frozen else None, frozen=frozen)
    return create_autostart(command)


def autostart_command(action: str, autostart: Autostart) -> int:
    """`python -m agent autostart enable|disable|status`."""
    try:
        if action == "enable":
            autostart.enable()
        elif action == "disable":
            autostart.disable()
        enabled = autostart.is_enabled()
        registered = autostart.is_registered()
    except OSError as err:
        _console(f"pulse-agent: start at login: {err}")
        return 1
    state = "enabled" if enabled else "disabled"
    if registered and not enabled:
        state += " (registered, but switched off by the system or the user)"
    _console(f"start at login: {state}")
    _console(f"  {autostart.location}")
    if registered:
        _console(f"  command: {' '.join(autostart.command)}")
    return 0


def _follow(autostart: Autostart) -> None:
    """If the executable moved since it registered, registration follows it."""
    try:
        autostart.follow()
    except OSError as err:
        logger.warning("cannot update start at login (%s): %s", autostart.location, err)


def _create_tray(autostart: Autostart) -> Tray | None:
    """The tray icon, or None (logged) to run headless."""
    if not has_display():
        logger.info("no display: running headless, without a tray icon")
        return None
    try:
        from agent.tray import Tray

        return Tray(autostart)
    except Exception as err:  # without a display pystray raises Xlib's DisplayNameError
        logger.warning("no tray icon (%s: %s): running headless", type(err).__name__, err)
        return None


def run_with_tray(
    tray: Tray, live: LiveConfig, autostart: Autostart, log_files: HourlyFileHandler | None = None
) -> int:
    """The tray on this (main) thread, asyncio in one other; returns the exit code."""
    exit_code = [1]

    def attach(app: web.Application) -> None:
        tray.attach(asyncio.get_running_loop(), app[CONTROL])

    def run_agent() -> None:
        try:
            exit_code[0] = asyncio.run(serve(live, autostart, on_ready=attach, log_files=log_files))
        except Exception:
            logger.exception("the agent stopped unexpectedly")
        finally:
            tray.stop()

    # signals reach only the main thread; the tray passes them on to the loop as a quit
    previous = {sig: signal.signal(sig, lambda *_: tray.quit()) for sig in _SIGNALS}
    agent = threading.Thread(target=run_agent, name="agent-loop")
    agent.start()
    try:
        tray.run()
    except Exception:
        logger.exception("the tray icon failed: running headless")
    else:
        if not tray.was_stopped:
            # the display went away (logout, X server gone): nobody can reach us any more
            logger.warning("the tray icon's loop ended by itself: quitting")
            tray.quit()
    while agent.is_alive():
        agent.join(0.5)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    return exit_code[0]


def run(loaded: LoadedConfig, why: str, tray: bool = False, explicit: bool = True) -> int:
    """Start logging, then the agent (with its tray icon if asked and possible)."""
    cfg = loaded.config.logs
    with open_logging(loaded.logs_dir, "agent", cfg.level, cfg.keep_hours) as log_files:
        logger.info("pulse-agent %s using config %s (%s)", __version__, loaded.path, why)
        autostart = open_autostart(loaded.path, explicit)
        _follow(autostart)
        live = LiveConfig(loaded)
        if not tray:
            logger.info("--no-tray: running headless")
        icon = _create_tray(autostart) if tray else None
        if icon is None:
            return asyncio.run(serve(live, autostart, log_files=log_files))
        return run_with_tray(icon, live, autostart, log_files)


def _ensure_streams() -> None:
    """Point missing standard streams at os.devnull."""
    # a windowed build has no console: sys.stdout and sys.stderr are None there, and argparse
    # (--help, --version, a usage error) or a library's warning would crash writing to them
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m agent` and `pulse-agent`."""
    _ensure_streams()
    args = parse_args(argv)
    path, why = find_config(args.config)
    if args.command == "check-config":
        return check_config(path)
    if args.command == "autostart":
        return autostart_command(args.action, open_autostart(path, args.config is not None))
    try:
        loaded = load_config(path)
    except ConfigError as err:
        return _report_bad_config(path, err)
    return run(loaded, why, tray=not args.no_tray, explicit=args.config is not None)
