"""The balanced setup on one machine: N identical collectors on PostgreSQL behind nginx.

    .venv/bin/python deploy/fleet.py --instances 2 [--port 8080] [--database-url URL]

creates the database if it does not exist, starts N `python -m collector` processes on free
loopback ports, writes nginx.conf from deploy/nginx.conf.template into the run folder, runs
Debian's nginx as a child, waits until /healthz answers through it and prints the URL. SIGTERM
or SIGINT stops nginx first (no new requests), then the collectors (they finish theirs).

Importable: `start_fleet(FleetOptions(...))` returns a `Fleet` with the URL and the process
handles, and `Fleet.stop()` ends them; tests and bench/fleet.py use it. Only established parts
do the work (PostgreSQL, nginx); this file starts them and nothing more: it restarts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger("deploy.fleet")

TEMPLATE = Path(__file__).resolve().with_name("nginx.conf.template")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/pulse_fleet"
DEFAULT_BODY_LIMIT = 4 * 1024 * 1024  # the collector's own default, body_limit_bytes
# Debian installs nginx in /usr/sbin, which a normal user's PATH often lacks
NGINX_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
INSTALL_HINT = "nginx is not installed: run `sudo apt-get install nginx` (scripts/setup does)"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
PR_SET_PDEATHSIG = 1
# the collectors' config in the run folder: the user's, plus trust in the nginx in front
COLLECTOR_CONFIG = "collector.json"
NGINX_PEER = "127.0.0.1"
# keys holding paths that resolve against the config file's folder (collector/config.py)
PATH_KEYS = ("db", "logs_dir")


class FleetError(Exception):
    """The fleet cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class FleetOptions:
    """What to start; every field has the command line's default."""

    instances: int = 2
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = DEFAULT_DATABASE_URL
    run_dir: Path = Path("data/fleet")
    nginx: str | None = None  # the binary; None: PATH, then NGINX_DIRS
    config: Path | None = None  # a collector config file passed to every instance
    log_level: str = "INFO"
    workers: str = "auto"
    # a child gets SIGTERM if the thread that started it dies (even by kill -9): for the
    # command line, not for a library caller that may start the fleet from a worker thread
    die_with_parent: bool = False


@dataclass
class Child:
    """One process of the fleet, its loopback port and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    output: Path

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of what the process wrote, for an error message."""
        return self.output.read_text(errors="replace")[-chars:] if self.output.exists() else ""


@dataclass
class Fleet:
    """The running fleet: nginx's URL, nginx and the collectors."""

    url: str
    run_dir: Path
    nginx: Child | None = None
    collectors: list[Child] = field(default_factory=list)

    def children(self) -> list[Child]:
        """nginx first, then the collectors: the order they stop in."""
        return ([self.nginx] if self.nginx else []) + self.collectors

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> dict[str, int]:
        """Stop nginx (graceful), then every collector (SIGTERM); exit codes by name."""
        codes: dict[str, int] = {}
        if self.nginx is not None:
            # SIGQUIT: nginx's graceful shutdown, requests in flight finish first
            _signal(self.nginx, signal.SIGQUIT)
            codes[self.nginx.name] = _reap(self.nginx, timeout)
        # all at once, each signalled once: a second SIGTERM would cut a clean stop short
        for child in self.collectors:
            _signal(child, signal.SIGTERM)
        for child in self.collectors:
            codes[child.name] = _reap(child, timeout)
        return codes


def _signal(child: Child, sig: signal.Signals) -> None:
    """Send sig unless the child has exited."""
    if child.is_running():
        child.popen.send_signal(sig)


def _reap(child: Child, timeout: float) -> int:
    """Wait for the exit code; SIGKILL what ignores its signal: nothing outlives the fleet."""
    try:
        return child.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %.0f s; killing it", child.name, timeout)
        child.popen.kill()
        return child.popen.wait()


def find_nginx(
    explicit: str | None, path: str | None = None, fallback: Sequence[str] = NGINX_DIRS
) -> str:
    """The nginx binary: `explicit`, else on `path` ($PATH), else in `fallback`; or
    FleetError with the install hint."""
    if explicit is not None:
        if os.access(explicit, os.X_OK) and Path(explicit).is_file():
            return explicit
        raise FleetError(f"{explicit} is not an executable; {INSTALL_HINT}")
    search = path if path is not None else os.environ.get("PATH", "")
    found = shutil.which("nginx", path=os.pathsep.join([search, *fallback]))
    if found is None:
        raise FleetError(INSTALL_HINT)
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listen_address(host: str, port: int) -> str:
    """host:port as nginx's listen directive wants it, IPv6 in brackets."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_config(ports: Sequence[int], host: str, port: int, body_limit: int, workers: str) -> str:
    """nginx.conf for these collector ports, from the template beside this file."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in ports)
    fields = {
        "@SERVERS@": servers,
        "@LISTEN@": listen_address(host, port),
        "@BODY_LIMIT@": str(body_limit),
        # every collector once, so a request fails only when all of them do
        "@TRIES@": str(len(ports)),
        "@WORKERS@": workers,
    }
    text = TEMPLATE.read_text()
    for name, value in fields.items():
        text = text.replace(name, value)
    return text


def body_limit(config: Path | None) -> int:
    """The collectors' body_limit_bytes: their config file's, or the collector's default."""
    if config is None:
        return DEFAULT_BODY_LIMIT
    from collector.config import load_config  # the server's own reading of its file

    return int(load_config(config).body_limit_bytes)


def write_collector_config(user: Path | None, run_dir: Path) -> Path:
    """The collectors' config file in the run folder: the user's keys as written (relative
    paths made absolute against the user's folder), trusting nginx's X-Forwarded-For, so a
    collector sees each client's address, not nginx's; FleetError if the user's is bad."""
    raw: dict[str, Any] = {}
    if user is not None:
        from collector.config import ConfigError, load_config, resolve_path

        try:
            load_config(user)  # the collector's own check, before anything starts
        except ConfigError as err:
            raise FleetError(str(err)) from err
        raw = json.loads(user.read_bytes())
        for key in PATH_KEYS:
            if key in raw:
                raw[key] = resolve_path(raw[key], user.resolve().parent)
    trusted = list(raw.get("trusted_proxies", []))
    raw["trusted_proxies"] = trusted if NGINX_PEER in trusted else [*trusted, NGINX_PEER]
    path = run_dir / COLLECTOR_CONFIG
    # the user's file may hold device and read tokens: only its owner reads the copy
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(raw, out, indent=2)
    return path


async def ensure_database(url: str) -> bool:
    """Create the URL's database if it does not exist yet; True if created."""
    import asyncpg

    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    # the maintenance database, which every PostgreSQL server has
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres", query="")))
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # a concurrent creator won
            await admin.execute(f"CREATE DATABASE {quoted}")
    finally:
        await admin.close()
    return True


async def exposure_problem(options: FleetOptions) -> str | None:
    """Why nginx may not listen on a non-loopback host (no user, no read token), or None.

    The collectors bind loopback and so would run open; nginx must not carry that open
    mode off the machine. The same rule and words as the collector's own check."""
    from collector.accounts.exposure import exposure_error, is_loopback
    from collector.accounts.store import AccountStore
    from collector.config import load_config

    if is_loopback(options.host):
        return None
    if options.config is not None and load_config(options.config).read_tokens:
        return None
    store = await AccountStore.open(db="", database_url=options.database_url)
    try:
        if await store.has_users():
            return None
    finally:
        await store.close()
    return str(exposure_error(options.host))


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent thread dies (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(name: str, args: list[str], port: int, run_dir: Path, opts: FleetOptions) -> Child:
    """Start a child in its own session (a terminal's Ctrl+C reaches only the launcher,
    which stops the fleet in order), its output in the run folder."""
    output = run_dir / f"{name}.out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    hook: Callable[[], None] | None = _die_with_parent if opts.die_with_parent else None
    with output.open("wb") as out:
        popen = subprocess.Popen(
            args,
            cwd=run_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=hook,  # noqa: PLW1509 - only with die_with_parent, from the main thread
        )
    return Child(name, popen, port, output)


def start_collector(index: int, port: int, opts: FleetOptions, run_dir: Path) -> Child:
    """One `python -m collector` on 127.0.0.1:port with the fleet's database and the run
    folder's config (write_collector_config)."""
    name = f"collector-{index}"
    args = [sys.executable, "-m", "collector", "--config", str(run_dir / COLLECTOR_CONFIG)]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    args += ["--database-url", opts.database_url, "--log-level", opts.log_level]
    args += ["--logs-dir", str(run_dir / name / "logs")]
    (run_dir / name).mkdir(parents=True, exist_ok=True)
    return _spawn(name, args, port, run_dir, opts)


def answers(url: str) -> bool:
    """True if GET url returns 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait_ready(child: Child, url: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until url answers 200 while child runs; FleetError with its output if not."""
    deadline = time.monotonic() + timeout
    while not answers(url):
        if not child.is_running():
            raise FleetError(f"{child.name} exited ({child.popen.returncode}):\n{child.tail()}")
        if time.monotonic() > deadline:
            raise FleetError(f"{child.name}: {url} did not answer in {timeout:.0f} s")
        time.sleep(0.05)


def _start_nginx(binary: str, fleet: Fleet, opts: FleetOptions) -> None:
    """Write nginx.conf into the run folder, check it with `nginx -t`, and run nginx."""
    run_dir = fleet.run_dir
    ports = [c.port for c in fleet.collectors]
    conf = render_config(ports, opts.host, opts.port, body_limit(opts.config), opts.workers)
    (run_dir / "nginx.conf").write_text(conf)
    for name in TEMP_DIRS:
        (run_dir / "temp" / name).mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    base = [binary, "-p", f"{run_dir}/", "-c", "nginx.conf", "-e", "logs/error.log"]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise FleetError(f"nginx refused {run_dir / 'nginx.conf'}:\n{check.stderr}")
    fleet.nginx = _spawn("nginx", [*base, "-g", "daemon off;"], opts.port, run_dir, opts)
    try:
        wait_ready(fleet.nginx, f"{fleet.url}/healthz")
    except FleetError as err:
        log = run_dir / "logs" / "error.log"
        raise FleetError(f"{err}\n{log.read_text()[-3000:] if log.exists() else ''}") from None


def start_fleet(opts: FleetOptions) -> Fleet:
    """Start the database, the collectors and nginx; the running Fleet, or FleetError
    with everything already started stopped again."""
    if opts.instances < 1:
        raise FleetError(f"--instances must be at least 1, got {opts.instances}")
    binary = find_nginx(opts.nginx)  # before anything starts: a missing nginx leaves no trace
    run_dir = opts.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        if asyncio.run(ensure_database(opts.database_url)):
            logger.info("created the database of %s", opts.database_url)
    except (OSError, ImportError) as err:
        raise FleetError(f"cannot reach PostgreSQL at {opts.database_url}: {err}") from err
    host = opts.host.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    fleet = Fleet(f"http://{shown}:{opts.port}", run_dir)
    try:
        write_collector_config(opts.config, run_dir)
        ports = [free_port() for _ in range(opts.instances)]
        # the first collector creates the tables alone; the others then find them
        first = start_collector(1, ports[0], opts, run_dir)
        fleet.collectors.append(first)
        wait_ready(first, f"http://127.0.0.1:{ports[0]}/healthz")
        problem = asyncio.run(exposure_problem(opts))
        if problem is not None:
            raise FleetError(f"nginx may not listen on {opts.host}: {problem}")
        for index, port in enumerate(ports[1:], start=2):
            fleet.collectors.append(start_collector(index, port, opts, run_dir))
        for child in fleet.collectors[1:]:
            wait_ready(child, f"http://127.0.0.1:{child.port}/healthz")
        _start_nginx(binary, fleet, opts)
    except BaseException:
        fleet.stop()
        raise
    return fleet


def parse_args(argv: Sequence[str] | None = None) -> FleetOptions:
    """The command line as FleetOptions."""
    d = FleetOptions()
    parser = argparse.ArgumentParser(
        prog="deploy/fleet.py",
        description="N identical collectors on PostgreSQL behind nginx, on this machine.",
    )
    add = parser.add_argument
    add("--instances", type=int, default=d.instances, help="collector processes (default 2)")
    add("--host", default=d.host, help="address nginx listens on (default 127.0.0.1)")
    add("--port", type=int, default=d.port, help="port nginx listens on (default 8080)")
    add("--database-url", default=d.database_url, help=f"default {d.database_url}")
    add("--run-dir", type=Path, default=d.run_dir, help="config, pids, logs (data/fleet)")
    add("--nginx", help="the nginx binary (default: PATH, then /usr/sbin/nginx)")
    add("--config", type=Path, help="a collector config file for every instance")
    add("--log-level", default=d.log_level, help="the collectors' log level (default INFO)")
    add("--workers", default=d.workers, help="nginx worker_processes (default auto)")
    ns = parser.parse_args(argv)
    values: dict[str, Any] = vars(ns)
    return FleetOptions(**values, die_with_parent=True)


def supervise(fleet: Fleet, stop: threading.Event) -> int:
    """Until `stop`: log a collector that exits once; end if nginx or every collector has."""
    gone: set[str] = set()
    while not stop.wait(0.5):
        assert fleet.nginx is not None
        if not fleet.nginx.is_running():
            logger.error("nginx exited (%s):\n%s", fleet.nginx.popen.returncode, fleet.nginx.tail())
            return 1
        for child in fleet.collectors:
            if child.name not in gone and not child.is_running():
                gone.add(child.name)
                logger.warning(
                    "%s exited (%s); nginx routes around it",
                    child.name,
                    child.popen.returncode,
                )
        if len(gone) == len(fleet.collectors):
            logger.error("every collector has exited; stopping")
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: start, print the URL, supervise until SIGTERM/SIGINT, stop in order."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fleet %(levelname)s %(message)s")
    opts = parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        fleet = start_fleet(opts)
    except FleetError as err:
        logger.error("%s", err)
        return 2
    if stop.is_set():  # a signal during start: stop at once
        fleet.stop()
        return 0
    logger.info(
        "%d collectors behind nginx at %s (run folder %s)",
        len(fleet.collectors),
        fleet.url,
        fleet.run_dir,
    )
    sys.stdout.write(f"{fleet.url}\n")
    sys.stdout.flush()
    code = supervise(fleet, stop)
    logger.info("stopping")
    codes = fleet.stop()
    logger.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in codes.items()))
    return code


if __name__ == "__main__":
    sys.exit(main())
