"""Footprint benchmark: the agent idle (headless, default cadence) against a bare baseline.

    .venv/bin/python bench/footprint.py [--seconds 60]

Side by side in one run: the agent (sensor every 3 s, sender every 5 s, dashboard up,
a real collector to send to) and a baseline process that only imports aiohttp, aiosqlite
and jinja2 and serves an empty aiohttp app. Reports RSS and CPU as % of one core.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import (
    free_port,
    start_agent,
    start_collector,
    write_agent_config,
)

BASELINE = textwrap.dedent(
    """
    import aiosqlite, jinja2
    from aiohttp import web
    web.run_app(web.Application(), host="127.0.0.1", port={port}, print=None)
    """
)


def measure(pid: int, seconds: float) -> tuple[float, float]:
    """CPU % of one core over `seconds`, and RSS in MiB at the end."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    cpu = (after.user + after.system - before.user - before.system) / seconds * 100
    return cpu, proc.memory_info().rss / 2**20


def main() -> None:
    """Start both, let them settle, measure them over the same window."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pulse-footprint-"))
    collector = start_collector(work / "collector")
    config = write_agent_config(
        work / "agent",
        collector.port,
        free_port(),
        sensor={"interval_s": 3.0},
        sender={"interval_s": 5.0},
        logs={"level": "INFO"},
    )
    agent = start_agent(work / "agent", config)
    baseline = subprocess.Popen([sys.executable, "-c", BASELINE.format(port=free_port())])
    try:
        time.sleep(5)  # past start-up work
        start = time.monotonic()
        agent_pid, base_pid = agent.popen.pid, baseline.pid
        results: dict[str, tuple[float, float]] = {}

        # the same window for both: sample them in parallel threads
        def run(name: str, pid: int) -> None:
            results[name] = measure(pid, args.seconds)

        threads = [
            threading.Thread(target=run, args=("agent", agent_pid)),
            threading.Thread(target=run, args=("baseline", base_pid)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        a_cpu, a_rss = results["agent"]
        b_cpu, b_rss = results["baseline"]
        print(f"window              {elapsed:.0f} s")
        print(f"agent     RSS {a_rss:6.1f} MiB   CPU {a_cpu:6.3f} % of one core")
        print(f"baseline  RSS {b_rss:6.1f} MiB   CPU {b_cpu:6.3f} % of one core")
        print(f"agent / baseline RSS {a_rss / b_rss:.2f}")
    finally:
        baseline.terminate()
        baseline.wait()
        agent.stop()
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
