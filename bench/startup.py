"""Desktop benchmark: the one-file binary's size and its cold start to the first dashboard 200.

    .venv/bin/python bench/startup.py [--runs 10] [--build] [--drop-caches]

Builds dist/pulse-agent with `pyinstaller agent.spec` if it is missing (or with --build),
then starts it --runs times, each with a fresh folder and config, and times from the spawn
to the first HTTP 200 from the dashboard page (`/`). Each run is stopped with SIGTERM and
must exit 0. `python -m agent` from source is timed the same way for comparison.
--drop-caches empties the page cache before each run (root on Linux only), so the binary
and its libraries are read from disk as after a reboot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import free_port

EXE = ROOT / "dist" / ("pulse-agent.exe" if sys.platform == "win32" else "pulse-agent")


def build() -> float:
    """Run PyInstaller; return how long it took."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "PyInstaller", "agent.spec", "--noconfirm"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def drop_caches() -> None:
    """Empty the page cache (needs root)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def answers(url: str) -> bool:
    """True once the URL answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def time_start(cmd: list[str], work: Path, cold: bool) -> float:
    """Seconds from spawn to the dashboard's first 200; the process must then exit 0."""
    port = free_port()
    # the collector is not running: start-up must not wait for it
    config = {"server": {"port": free_port()}, "dashboard": {"port": port}}
    (work / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    if cold:
        drop_caches()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--config", str(work / "config.json")],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    while not answers(url):
        if proc.poll() is not None or time.perf_counter() - start > 60:
            raise RuntimeError(f"{cmd[0]} did not start")
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    proc.send_signal(signal.SIGTERM)
    if proc.wait(30) != 0:
        raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}")
    return elapsed


def report(name: str, times: list[float]) -> None:
    """One line: median, min and max in ms."""
    ms = sorted(t * 1000 for t in times)
    print(
        f"{name:<22} median {statistics.median(ms):6.0f} ms   min {ms[0]:6.0f}   "
        f"max {ms[-1]:6.0f}   ({len(ms)} runs)"
    )


def main() -> None:
    """Build if needed, then time both ways of starting."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--build", action="store_true", help="build even if dist/ has one")
    parser.add_argument("--drop-caches", action="store_true", help="cold page cache per run")
    args = parser.parse_args()
    if args.build or not EXE.exists():
        print(f"pyinstaller agent.spec: {build():.1f} s")
    print(f"{EXE.relative_to(ROOT)}: {EXE.stat().st_size / 1e6:.1f} MB")
    print(f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    for name, cmd in [
        ("one-file binary", [str(EXE)]),
        ("python -m agent", [sys.executable, "-m", "agent", "--no-tray"]),
    ]:
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="pulse-startup-") as work:
                times.append(time_start(cmd, Path(work), args.drop_caches))
        report(name, times)


if __name__ == "__main__":
    main()
