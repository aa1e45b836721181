"""`python -m agent` and `pulse-agent`: the command line and its subcommands, nothing else.

config → logging → the agent (agent.serve), with its tray icon (agent.tray) when there is a
display. The tray is imported only then: without a display pystray cannot even be imported.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.autostart import Autostart, create_autostart, launch_command
from agent.config import ConfigError, LiveConfig, LoadedConfig, load_config
from agent.discovery import find_config
from agent.memory import limit_arenas
from agent.serve import EXIT_CONFIG, serve
from pulse_common.logs import open_logging

if TYPE_CHECKING:
    from agent.tray import Tray

# run with `python -m agent`, __name__ is "__main__": name the logger after the module
logger = logging.getLogger("agent.__main__")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: `run` (the default), `check-config` or `autostart`."""
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
        from agent.tray import run_with_tray

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
    # before any thread: the queues' SQLite threads would each get an arena of their own
    limit_arenas()
    return run(loaded, why, tray=not args.no_tray, explicit=args.config is not None)


if __name__ == "__main__":
    sys.exit(main())
