"""config → logging → asyncio (→ tray, when there is one)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from agent import __version__
from agent.app import create_app
from agent.config import (
    ConfigError,
    LiveConfig,
    LoadedConfig,
    default_config_path,
    ensure_config,
    load_config,
)
from agent.logs import open_logging

logger = logging.getLogger(__name__)

EXIT_CONFIG = 2


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
    args = parser.parse_args(argv)
    if getattr(args, "check_config", None):
        args.config = args.check_config
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


async def serve(live: LiveConfig) -> int:
    """Run the app and its dashboard until SIGTERM/SIGINT or a fatal worker error."""
    stop = asyncio.Event()
    exit_code = 0

    def request_stop(reason: str | None) -> None:
        nonlocal exit_code
        if reason:
            logger.error("shutting down: %s", reason)
            exit_code = 1
        stop.set()

    app = create_app(live, request_stop=request_stop)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    cfg = live.config.dashboard
    try:
        site = web.TCPSite(runner, cfg.host, cfg.port)
        await site.start()
    except OSError as err:
        logger.error("cannot serve the dashboard on %s:%d: %s", cfg.host, cfg.port, err.strerror)
        await runner.cleanup()
        return 1
    logger.info("dashboard: http://%s:%d/", cfg.host, cfg.port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("stopping")
        await runner.cleanup()
    logger.info("stopped cleanly")
    return exit_code


def run(loaded: LoadedConfig, why: str) -> int:
    """Start logging, then the agent; returns the process exit code."""
    cfg = loaded.config.logs
    with open_logging(loaded.logs_dir, "agent", cfg.level, cfg.keep_hours):
        logger.info("pulse-agent %s using config %s (%s)", __version__, loaded.path, why)
        return asyncio.run(serve(LiveConfig(loaded)))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m agent` and `pulse-agent`."""
    args = parse_args(argv)
    path, why = find_config(args.config)
    if args.command == "check-config":
        return check_config(path)
    try:
        loaded = load_config(path)
    except ConfigError as err:
        return _report_bad_config(path, err)
    return run(loaded, why)
