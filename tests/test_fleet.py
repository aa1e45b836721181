"""The balanced setup (deploy/fleet.py): real nginx, real PostgreSQL, two collector processes.

- kill -9 of one collector while two real agents send through nginx: nginx routes around
  it, the agents retry, and every reading each agent's queue ledger committed is stored
  once, under its device, stream, seq and id (tests/reliability/pipeline.py's check);
- the command line's stop is clean: every process it started has gone;
- a missing nginx stops the launcher before it starts anything, naming `apt-get install`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.fleet import Fleet, FleetError, FleetOptions, find_nginx, start_fleet
from tests.harness import ROOT, Proc, free_port, get_json, wait_until
from tests.reliability.pipeline import FAST, Pipeline, count_delivery, merge, wait_drained
from tests.requirements import missing, postgres_schema_url

AGENTS = 2
# readings each agent must deliver after the kill: proof that sending went on without it
AFTER_KILL = 300
QUIET_INTERVAL_S = 86_400.0
UPSTREAM_DOWN = "while connecting to upstream"
# the status of a line of nginx's combined access log
STATUS = re.compile(r'^\S+ \S+ \S+ \[[^]]*\] "[^"]*" (\d{3}) ', re.MULTILINE)


def nginx_or_missing() -> str:
    """The launcher's own search for nginx; skipped without it, failed under PULSE_STRICT=1."""
    try:
        return find_nginx(None)
    except FleetError as err:
        missing(str(err))


@pytest.fixture
def database_url() -> Iterator[str]:
    """A schema of this test's own on the test PostgreSQL server."""
    with postgres_schema_url("pulse_fleet") as url:
        yield url


@pytest.fixture
def fleet(tmp_path: Path, database_url: str) -> Iterator[Fleet]:
    """Two collectors behind nginx, logging each stored batch; stopped afterwards."""
    nginx = nginx_or_missing()
    options = FleetOptions(
        instances=2,
        port=free_port(),
        database_url=database_url,
        run_dir=tmp_path / "fleet",
        nginx=nginx,
        log_level="DEBUG",
        workers="1",
    )
    running = start_fleet(options)
    try:
        yield running
    finally:
        running.stop()


def nginx_proc(fleet: Fleet) -> Proc:
    """nginx as a harness Proc, so the reliability check reads the readings through it."""
    assert fleet.nginx is not None
    return Proc(fleet.nginx.popen, fleet.nginx.port, fleet.run_dir, fleet.nginx.output)


def delivered(fleet: Fleet, device: str) -> int:
    """Readings of one device stored so far, as the API says through nginx."""
    devices = get_json(f"{fleet.url}/api/v1/devices")
    return sum(int(d["count"]) for d in devices if d["device_id"] == device)


def test_kill_9_one_collector_behind_nginx(tmp_path: Path, fleet: Fleet) -> None:
    """kill -9 of one of two collectors mid-run: nothing lost, nothing stored twice"""
    port = int(fleet.url.rsplit(":", 1)[1])
    pipes = [
        Pipeline(
            tmp_path / f"agent-{i}",
            server_port=port,
            settings=merge(FAST, {"device_id": f"fleet-device-{i}"}),
        )
        for i in range(AGENTS)
    ]
    try:
        for pipe in pipes:
            pipe.start_agent()
        victim, survivor = fleet.collectors
        # both collectors store batches before the kill: it lands on live traffic
        wait_until(lambda: all("batch of" in c.tail(10**9) for c in fleet.collectors), 30)
        before = {p.settings["device_id"]: delivered(fleet, p.settings["device_id"]) for p in pipes}
        os.kill(victim.popen.pid, signal.SIGKILL)
        assert victim.popen.wait() == -signal.SIGKILL
        for device, count in before.items():
            wait_until(lambda: delivered(fleet, device) > count + AFTER_KILL, 60)  # noqa: B023
        # nginx met the dead collector and went on to the other one
        error_log = (fleet.run_dir / "logs" / "error.log").read_text()
        assert UPSTREAM_DOWN in error_log, error_log[-2000:]
        assert survivor.is_running(), survivor.tail()
        for pipe in pipes:
            assert pipe.agent is not None
            assert pipe.agent.stop() == 0, pipe.agent.output()[-3000:]
            # a sensor that reads once: the queue drains to empty through nginx
            pipe.start_agent(sensor={"interval_s": QUIET_INTERVAL_S})
            wait_drained(pipe)
            assert pipe.agent is not None
            assert pipe.agent.stop() == 0, pipe.agent.output()[-3000:]
        for pipe in pipes:
            check_exactly_once(fleet, pipe)
        # nginx flushes its access log as it stops: then no request may have failed, the
        # batches sent to the dead collector included (retried on the other one)
        fleet.stop()
        statuses = Counter(STATUS.findall((fleet.run_dir / "logs" / "access.log").read_text()))
        assert statuses["200"] > AFTER_KILL // 10, statuses
        assert not [s for s in statuses if s >= "500"], statuses
    finally:
        for pipe in pipes:
            pipe.stop()


def check_exactly_once(fleet: Fleet, pipe: Pipeline) -> None:
    """The reliability suite's check: the ledger's readings stored once, by seq and id."""
    delivery = count_delivery(nginx_proc(fleet), pipe.queue_path)
    assert delivery.ledger > AFTER_KILL, "the ledger holds too little to prove anything"
    assert not delivery.ledger_lost, f"committed, never stored: {delivery.ledger_lost[:10]}"
    assert not delivery.wrong, f"stored under the wrong seq or id: {delivery.wrong[:10]}"
    assert not delivery.unknown, f"stored, never committed: {delivery.unknown[:10]}"
    assert not delivery.lost, f"seqs missing: {delivery.lost[:20]}"
    assert delivery.duplicates == 0, f"{delivery.duplicates} stored twice"
    assert delivery.queued == 0, f"{delivery.queued} still queued"
    assert delivery.delivered == delivery.highest_seq


def descendants(pid: int) -> set[int]:
    """Every process below pid, from /proc (Linux)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split()
            for child in map(int, children):
                if child not in out:
                    out.add(child)
                    todo.append(child)
    return out


def is_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def launch(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """`python deploy/fleet.py …` as a user runs it."""
    cmd = [sys.executable, str(ROOT / "deploy" / "fleet.py"), *args]
    return subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_command_serves_through_nginx_and_stops_cleanly(tmp_path: Path, database_url: str) -> None:
    """the command prints nginx's URL, serves through it, and SIGTERM leaves no process"""
    nginx_or_missing()
    port = free_port()
    args = ("--instances", "2", "--port", str(port), "--database-url", database_url)
    proc = launch(tmp_path, *args, "--run-dir", str(tmp_path / "run"))
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}", proc.communicate(timeout=30)
        health: dict[str, Any] = get_json(f"{url}/healthz")
        assert health, health
        started = descendants(proc.pid)
        # two collectors, nginx's master and at least one worker
        assert len(started) >= 4, started
        assert all(is_alive(pid) for pid in started)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped: nginx 0, collector-1 0, collector-2 0" in err, err
        assert not [pid for pid in started if is_alive(pid)], "processes outlived the fleet"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_nginx_names_the_package(tmp_path: Path) -> None:
    """without nginx the launcher starts nothing and says how to install it"""
    proc = launch(tmp_path, "--nginx", str(tmp_path / "no-nginx"), "--run-dir", "run")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "apt-get install nginx" in err, err
    assert not (tmp_path / "run").exists(), "the launcher started something first"


def test_nginx_is_searched_on_path_and_in_sbin(tmp_path: Path) -> None:
    """PATH first, then Debian's /usr/sbin; neither: the install hint"""
    fake = tmp_path / "bin" / "nginx"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_nginx(None, path=str(fake.parent), fallback=()) == str(fake)
    with pytest.raises(FleetError, match="apt-get install nginx"):
        find_nginx(None, path=str(tmp_path), fallback=())


def test_off_loopback_needs_a_user_or_token(tmp_path: Path, database_url: str) -> None:
    """nginx off loopback in front of open collectors: refused with the collector's words"""
    nginx_or_missing()
    args = ("--host", "0.0.0.0", "--port", str(free_port()), "--database-url", database_url)
    proc = launch(tmp_path, *args, "--run-dir", "run")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "0.0.0.0 is not a loopback address" in err, err
    assert "create-user" in err, err
