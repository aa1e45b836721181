"""Real processes on loopback for end-to-end tests: a collector, an agent, and waits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll until predicate() is truthy and return it; fail the test with a timeout."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")
        time.sleep(interval)
        last = predicate()
    return last


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET a URL and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class Proc:
    """A child process with its port and captured output."""

    popen: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, and return the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.args} ignored SIGTERM:\n{self.output()}") from None

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()


def _spawn(args: list[str], workdir: Path, port: int, ready_url: str, name: str) -> Proc:
    workdir.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".out", dir=workdir)[1])
    # a test that toggles start at login must never touch the developer's own ~/.config
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CONFIG_HOME": str(workdir / "xdg")}
    if "--no-tray" in args:
        env.pop("DISPLAY", None)
    with log.open("wb") as out:
        popen = subprocess.Popen(
            args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    proc = Proc(popen, port, workdir, log, args)
    deadline = time.monotonic() + 30
    while not _answers(ready_url):
        if popen.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{name} did not start:\n{proc.output()}")
        time.sleep(0.05)
    return proc


def start_collector(workdir: Path, port: int | None = None, *args: str) -> Proc:
    """Run `python -m collector` on loopback with a SQLite file in workdir."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "collector", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--db", str(workdir / "collector.db"), *args]
    return _spawn(cmd, workdir, port, f"http://127.0.0.1:{port}/healthz", "collector")


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def write_agent_config(
    workdir: Path, collector_port: int, dashboard_port: int, **overrides: Any
) -> Path:
    """A config with fast intervals for tests; overrides merge per section."""
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "device_id": "test-device",
        "sensor": {"interval_s": 0.1, "seed": 7},
        "server": {"port": collector_port, "timeout_s": 2.0},
        "sender": {"interval_s": 0.2, "batch_size": 10, "max_backoff_s": 0.5},
        "dashboard": {"port": dashboard_port},
        "logs": {"level": "DEBUG"},
    }
    path = workdir / "config.json"
    path.write_text(json.dumps(_merge(config, overrides), indent=2))
    return path


def start_agent(workdir: Path, config: Path, *args: str) -> Proc:
    """Run `python -m agent --config … --no-tray` and wait for its dashboard."""
    port = json.loads(config.read_text())["dashboard"]["port"]
    cmd = [sys.executable, "-m", "agent", "--config", str(config), "--no-tray", *args]
    return _spawn(cmd, workdir, port, f"http://127.0.0.1:{port}/api/health", "agent")


def collector_readings(collector: Proc, device_id: str) -> list[dict[str, Any]]:
    """Every reading the collector holds for a device, ordered by stream and seq."""
    out: list[dict[str, Any]] = []
    streams = {
        s["stream"]
        for d in get_json(f"{collector.url}/api/v1/devices")
        if d["device_id"] == device_id
        for s in d["streams"]
    }
    for stream in sorted(streams):
        since = 0
        while True:
            page = get_json(
                f"{collector.url}/api/v1/readings?device_id={device_id}"
                f"&stream={stream}&since={since}&limit=10000"
            )
            if not page:
                break
            out.extend(page)
            since = page[-1]["seq"]
    return out


def agent_status(agent: Proc) -> dict[str, Any]:
    """The agent's status dict from /api/status."""
    status: dict[str, Any] = get_json(f"{agent.url}/api/status")["status"]
    return status


def run_bench(script: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    """Run bench/<script> as a real process; the JSON object on its last line."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary
