"""`python -m collector` / `pulse-collector`: parse arguments, log to hour files, serve;
or `create-user` / `delete-user`, which set a web UI password or remove a user."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from collector import APP_NAME, __version__
from collector.accounts.users import (
    UserInputError,
    check_name,
    delete_user,
    read_password,
    set_password,
)
from collector.app import create_app
from collector.config import (
    CollectorConfig,
    ConfigError,
    load_config,
    resolve_path,
    resolve_paths,
    with_overrides,
)
from collector.lifecycle import REQUEST_STOP
from pulse_common.logs import open_logging

# run with `python -m collector`, __name__ is "__main__": name the logger after the module
logger = logging.getLogger("collector.__main__")

# in-flight requests get this long to finish after SIGTERM
SHUTDOWN_TIMEOUT_S = 10.0


USER_COMMANDS = ("create-user", "delete-user")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; every option overrides the same key of the config file."""
    parser = argparse.ArgumentParser(
        prog=APP_NAME,
        description="Collect readings from Pulse agents over HTTP.",
        epilog="Users of the web UI: `%(prog)s create-user NAME` sets a password, "
        "`%(prog)s delete-user NAME` removes one (each has --help).",
    )
    parser.add_argument("--config", type=Path, help="JSON config file (default: none)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0: any)")
    parser.add_argument("--db", help="SQLite file (default data/collector.db)")
    parser.add_argument("--database-url", help="postgresql://… to use PostgreSQL instead")
    parser.add_argument("--logs-dir", help="folder for hour-named log files (default logs)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    return parser.parse_args(argv)


def parse_user_args(argv: Sequence[str]) -> argparse.Namespace:
    """`create-user NAME …` or `delete-user NAME …`, with the options that find the database."""
    command, rest = argv[0], argv[1:]
    what = {
        "create-user": "Create a user of the web UI, or change its password (which signs it "
        "out everywhere). The password is asked twice on the terminal.",
        "delete-user": "Delete a user of the web UI and its sessions.",
    }[command]
    parser = argparse.ArgumentParser(prog=f"{APP_NAME} {command}", description=what)
    parser.add_argument("name", help="the user name (no spaces)")
    parser.add_argument("--config", type=Path, help="the collector's JSON config file")
    parser.add_argument("--db", help="SQLite file (default data/collector.db)")
    parser.add_argument("--database-url", help="postgresql://… to use PostgreSQL instead")
    if command == "create-user":
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin instead of asking",
        )
    parser.set_defaults(command=command, host=None, port=None, logs_dir=None, log_level=None)
    return parser.parse_args(rest)


def run_user_command(args: argparse.Namespace, config: CollectorConfig) -> int:
    """Create, change or delete a user; messages on stdout, errors on stderr."""
    try:
        check_name(args.name)
        if args.command == "delete-user":
            if not asyncio.run(delete_user(config, args.name)):
                raise UserInputError(f"there is no user {args.name!r}")
            sys.stdout.write(f"deleted user {args.name!r} and ended its sessions\n")
            return 0
        password = read_password(args.password_stdin, sys.stdin)
        created = asyncio.run(set_password(config, args.name, password))
    except UserInputError as err:
        sys.stderr.write(f"{APP_NAME} {args.command}: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{APP_NAME} {args.command}: cancelled, nothing changed\n")
        return 130
    except Exception as err:  # the database: unreachable, locked, a driver missing
        sys.stderr.write(f"{APP_NAME} {args.command}: cannot use the database: {err}\n")
        return 1
    if created:
        sys.stdout.write(f"created user {args.name!r}\n")
    else:
        sys.stdout.write(f"changed the password of {args.name!r} and ended its sessions\n")
    return 0


def build_config(args: argparse.Namespace, cwd: Path) -> CollectorConfig:
    """Defaults, then the file, then the command line; paths on it resolve against cwd."""
    config = load_config(args.config) if args.config else resolve_paths(CollectorConfig(), cwd)
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "db": args.db and resolve_path(args.db, cwd),
        "database_url": args.database_url,
        "logs_dir": args.logs_dir and resolve_path(args.logs_dir, cwd),
        "log_level": args.log_level,
    }
    given = {key: value for key, value in overrides.items() if value is not None}
    return with_overrides(config, given) if given else config


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set `stop` on SIGTERM or SIGINT while inside; the default handlers return after."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Windows has no loop signal handlers; Ctrl+C arrives as KeyboardInterrupt there
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _listening_url(runner: web.AppRunner, config: CollectorConfig) -> str:
    port = config.port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port = int(address[1])
            break
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"http://{host}:{port}"


async def serve(config: CollectorConfig) -> None:
    """Run the collector until SIGTERM or SIGINT, then shut down in order."""
    stop = asyncio.Event()
    app = create_app(config)
    # a worker that ends unexpectedly stops the server cleanly instead of leaving it half alive
    app[REQUEST_STOP] = lambda reason: stop.set()
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    # a signal that arrives while the store opens still stops the server, right after
    with stop_on_signals(stop):
        try:
            await runner.setup()
            await web.TCPSite(runner, config.host, config.port).start()
            logger.info("listening on %s", _listening_url(runner, config))
            await stop.wait()
            logger.info("stopping")
        finally:
            await runner.cleanup()
    logger.info("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m collector` and `pulse-collector`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    is_user_command = bool(argv) and argv[0] in USER_COMMANDS
    args = parse_user_args(argv) if is_user_command else parse_args(argv)
    try:
        config = build_config(args, Path.cwd())
    except ConfigError as err:
        sys.stderr.write(f"{APP_NAME}: {err}\n")
        return 2
    if is_user_command:
        return run_user_command(args, config)
    with open_logging(Path(config.logs_dir), "collector", config.log_level, config.keep_hours):
        where = "PostgreSQL" if config.database_url else f"SQLite {config.db}"
        logger.info("%s %s starting; store: %s", APP_NAME, __version__, where)
        try:
            asyncio.run(serve(config))
        except KeyboardInterrupt:
            logger.info("stopped")
        except ConfigError as err:
            # a setting that only the database could judge (open off loopback): no traceback
            logger.error("%s cannot start: %s", APP_NAME, err)
            return 2
        except Exception:
            logger.exception("%s failed", APP_NAME)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
