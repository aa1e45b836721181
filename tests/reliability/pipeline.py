"""One agent, one collector and their files, plus the check that ends every scenario.

The agent reads the `counter` source (1, 2, 3…), whose queue keeps a ledger of every reading
it committed: seq, id and value, in the same transaction as the reading.

The check: stop the agent, restart it with a sensor that reads once (interval 86,400 s) so
that nothing new piles up, wait for its queue to drain, stop it, then require
- by identity: the collector holds exactly the ledger's readings, each once, each under the
  seq and id the agent gave it and with its value; nothing else in those streams;
- by seq: every seq from 1 to the queue's highest ever assigned seq exactly once for the
  stream (this also covers rows written without a ledger, e.g. by the power-loss writer);
- and that the queue file holds nothing.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.harness import (
    Proc,
    agent_status,
    free_port,
    get_json,
    start_agent,
    start_collector,
    wait_until,
    write_agent_config,
)
from tests.reliability.figures import Scenario, scale

DEVICE = "reliability-device"
# the sensor reads once at start, then not for a day: the final drain sees no new readings
QUIET_INTERVAL_S = 86_400.0
DRAIN_TIMEOUT_S = 60.0 * max(1.0, scale())

# a busy agent: 100 readings/s, a send every 50 ms, short backoff
FAST: dict[str, Any] = {
    "device_id": DEVICE,
    "sensor": {"kind": "counter", "interval_s": 0.01},
    "sender": {"interval_s": 0.05, "batch_size": 10, "catchup_batch_size": 500},
    "server": {"timeout_s": 1.0},
    "logs": {"level": "INFO"},
}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of base with overrides merged per section."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Delivery:
    """What the final check found."""

    stream: str
    highest_seq: int
    delivered: int
    lost: list[int]
    duplicates: int
    queued: int
    dropped: int
    # by identity, against the ledger: readings checked, and what did not match
    ledger: int = 0
    ledger_lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


@dataclass
class Ledger:
    """What the agent committed, per stream: seq -> (id, value); dropped at the cap apart."""

    streams: dict[str, dict[int, tuple[str, float]]] = field(default_factory=dict)
    dropped: dict[str, set[int]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Readings the ledger holds, dropped ones included."""
        return sum(len(rows) for rows in self.streams.values())


def queue_files(data_dir: Path) -> list[Path]:
    """The queue file, any file beside it for a newer schema, and any moved aside."""
    return sorted(
        p
        for p in data_dir.glob("queue*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm", "-journal"))
    )


def read_ledger(data_dir: Path) -> Ledger:
    """Every ledger row of every queue file in the folder, by stream."""
    out = Ledger()
    for path in queue_files(data_dir):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                (stream,) = db.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()
                rows = db.execute("SELECT seq, id, value, dropped FROM ledger").fetchall()
            db.close()
        except sqlite3.DatabaseError as err:
            out.unreadable.append(f"{path.name}: {err}")
            continue
        kept = out.streams.setdefault(str(stream), {})
        dropped = out.dropped.setdefault(str(stream), set())
        for seq, rid, value, was_dropped in rows:
            kept[int(seq)] = (str(rid), float(value))
            if was_dropped:
                dropped.add(int(seq))
    return out


@dataclass
class Pipeline:
    """A collector and an agent under one folder; the agent may send through a proxy."""

    root: Path
    database_url: str | None = None
    collector_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    server_port: int | None = None
    settings: dict[str, Any] = field(default_factory=lambda: merge(FAST, {}))
    collector: Proc | None = None
    agent: Proc | None = None

    @property
    def agent_dir(self) -> Path:
        """The agent's folder: config.json, data/, logs/."""
        return self.root / "agent"

    @property
    def collector_dir(self) -> Path:
        """The collector's folder: collector.db and its logs."""
        return self.root / "collector"

    @property
    def queue_path(self) -> Path:
        """The agent's queue file."""
        path = Path(self.settings.get("storage", {}).get("path", "data/queue.db"))
        return path if path.is_absolute() else self.agent_dir / path

    def write_config(self, **overrides: Any) -> Path:
        """Write config.json from the pipeline's settings plus `overrides`."""
        port = self.server_port or self.collector_port
        return write_agent_config(
            self.agent_dir, port, self.dashboard_port, **merge(self.settings, overrides)
        )

    def start_collector(self) -> Proc:
        """Start (or restart) the collector on its fixed port and database."""
        args = ("--database-url", self.database_url) if self.database_url else ()
        self.collector = start_collector(self.collector_dir, self.collector_port, *args)
        return self.collector

    def start_agent(self, **overrides: Any) -> Proc:
        """Start the agent with the pipeline's settings and wait for its dashboard."""
        self.agent = start_agent(self.agent_dir, self.write_config(**overrides))
        return self.agent

    def spawn_agent(self) -> Proc:
        """Start the agent without waiting for it: to kill it while it starts up."""
        config = self.write_config()
        log = Path(tempfile.mkstemp(prefix="agent-", suffix=".out", dir=self.agent_dir)[1])
        cmd = [sys.executable, "-m", "agent", "--config", str(config), "--no-tray"]
        env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                cmd,
                cwd=self.agent_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.agent = Proc(popen, self.dashboard_port, self.agent_dir, log, cmd)
        return self.agent

    def status(self) -> dict[str, Any]:
        """The running agent's /api/status."""
        assert self.agent is not None
        return agent_status(self.agent)

    def stop(self) -> None:
        """Stop whatever still runs (teardown)."""
        for proc in (self.agent, self.collector):
            if proc is not None and proc.popen.poll() is None:
                proc.kill()

    def agent_log(self) -> str:
        """Every hour-named agent log file, joined."""
        logs = self.agent_dir / "logs"
        return "".join(p.read_text(errors="replace") for p in sorted(logs.glob("agent-*.log")))


def kill9(proc: Proc) -> bool:
    """SIGKILL a process; True if the kill is what ended it (not an earlier exit)."""
    alive = proc.popen.poll() is None
    if alive:
        os.kill(proc.popen.pid, signal.SIGKILL)
    code = proc.popen.wait()
    return alive and code == -signal.SIGKILL


def queue_state(path: Path) -> tuple[str, int, int, int]:
    """(stream id, highest seq ever assigned, rows still queued, dropped) of a queue file."""
    with sqlite3.connect(path) as db:
        (stream,) = db.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
        (queued,) = db.execute("SELECT COUNT(*) FROM queue").fetchone()
        (dropped,) = db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
    db.close()
    return str(stream), int(row[0]) if row else 0, int(queued), int(dropped)


def stream_readings(collector: Proc, stream: str) -> list[dict[str, Any]]:
    """Every reading of one stream at the collector, across device ids, ordered by seq."""
    devices = [
        d["device_id"]
        for d in get_json(f"{collector.url}/api/v1/devices")
        if any(s["stream"] == stream for s in d["streams"])
    ]
    out: list[dict[str, Any]] = []
    for device in devices:
        since = 0
        while True:
            page = get_json(
                f"{collector.url}/api/v1/readings?device_id={quote(device)}"
                f"&stream={stream}&since={since}&limit=10000",
                timeout=30,
            )
            if not page:
                break
            out.extend(page)
            since = page[-1]["seq"]
    return sorted(out, key=lambda r: r["seq"])


def count_delivery(collector: Proc, queue: Path) -> Delivery:
    """Compare the queue files with the collector: by identity against the ledger, then
    by seq for the queue's own stream; duplicates, still queued."""
    stream, highest, queued, dropped = queue_state(queue)
    readings = stream_readings(collector, stream)
    seqs = Counter(int(r["seq"]) for r in readings)
    ids = Counter(r["id"] for r in readings)
    duplicates = sum(n - 1 for n in seqs.values()) + sum(n - 1 for n in ids.values())
    lost = sorted(set(range(1, highest + 1)) - set(seqs))
    delivery = Delivery(stream, highest, len(readings), lost, duplicates, queued, dropped)
    ledger = read_ledger(queue.parent)
    # a file moved aside as damaged may be unreadable; the queue in use never
    assert not [u for u in ledger.unreadable if u.startswith(f"{queue.name}:")], ledger.unreadable
    for ledger_stream, committed in ledger.streams.items():
        got = readings if ledger_stream == stream else stream_readings(collector, ledger_stream)
        check_identity(delivery, ledger_stream, committed, ledger.dropped[ledger_stream], got)
    return delivery


def check_identity(
    delivery: Delivery,
    stream: str,
    committed: dict[int, tuple[str, float]],
    dropped: set[int],
    readings: list[dict[str, Any]],
) -> None:
    """Each committed reading at the collector once, under its seq and id, with its value."""
    delivery.ledger += len(committed)
    stored: dict[int, tuple[str, float]] = {}
    for r in readings:
        stored[int(r["seq"])] = (str(r["id"]), float(r["message"]["value"]))
    values = Counter(value for _, value in committed.values())
    repeated = [v for v, n in values.items() if n > 1]
    assert not repeated, f"the counter committed values more than once: {repeated[:10]}"
    for seq, (rid, value) in sorted(committed.items()):
        if seq not in stored:
            if seq not in dropped:
                delivery.ledger_lost.append(f"{stream}/{seq} value {value:g}")
        elif stored[seq] != (rid, value):
            delivery.wrong.append(
                f"{stream}/{seq}: committed {rid} value {value:g}, collector holds "
                f"{stored[seq][0]} value {stored[seq][1]:g}"
            )
    first = min(committed, default=0)
    delivery.unknown += [
        f"{stream}/{seq}" for seq in sorted(stored) if seq >= first and seq not in committed
    ]


def wait_drained(pipe: Pipeline, timeout: float = DRAIN_TIMEOUT_S, below: int = 1) -> float:
    """Wait until the running agent has fewer than `below` pending; return how long it took."""
    started = time.monotonic()
    wait_until(
        lambda: pipe.status()["pending"] < below and pipe.status()["last_reading"] is not None,
        timeout,
        0.02,
    )
    return time.monotonic() - started


def _ranges(seqs: list[int]) -> str:
    """1-3, 7, 9-12"""
    out: list[tuple[int, int]] = []
    for seq in seqs:
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in out[:20])


def drain_and_check(pipe: Pipeline, figures: Scenario, capped: bool = False) -> Delivery:
    """The end of every scenario: drain with a quiet sensor, then 1..N exactly once.

    `capped`: the queue hit storage.max_pending, so seqs may be missing, as many as the
    queue file counts as dropped, and no more.
    """
    if pipe.agent is not None and pipe.agent.popen.poll() is None:
        assert pipe.agent.stop() == 0, pipe.agent.output()[-3000:]
    if pipe.collector is None or pipe.collector.popen.poll() is not None:
        pipe.start_collector()
    assert pipe.collector is not None
    # straight to the collector: a proxy has no part in the final drain
    saved, pipe.server_port = pipe.server_port, None
    try:
        started = time.monotonic()
        pipe.start_agent(sensor={"interval_s": QUIET_INTERVAL_S})
        wait_drained(pipe)
        figures.recovered(time.monotonic() - started)  # restart to drained
        assert pipe.agent is not None
        assert pipe.agent.stop() == 0, pipe.agent.output()[-3000:]
    finally:
        pipe.server_port = saved
    delivery = count_delivery(pipe.collector, pipe.queue_path)
    dropped = delivery.dropped if capped else 0
    lost = max(0, len(delivery.lost) - dropped, len(delivery.ledger_lost))
    figures.readings += max(delivery.highest_seq, delivery.ledger)
    figures.lost += lost
    figures.duplicates += delivery.duplicates + len(delivery.unknown)
    figures.wrong += len(delivery.wrong)
    figures.identity_checked += delivery.ledger
    figures.checked = True
    if delivery.dropped:
        figures.notes["dropped_at_cap"] = delivery.dropped
    assert delivery.ledger > 0, "the counter's ledger is empty: nothing checked by identity"
    assert not delivery.ledger_lost, f"committed but never delivered: {delivery.ledger_lost[:10]}"
    assert not delivery.wrong, f"delivered under the wrong seq or id: {delivery.wrong[:10]}"
    assert not delivery.unknown, f"never committed, yet at the collector: {delivery.unknown[:10]}"
    assert not lost, (
        f"lost {lost} readings: missing {_ranges(delivery.lost)}, {delivery.dropped} dropped "
        "at the cap"
    )
    assert len(delivery.lost) == dropped, "fewer missing than the cap says it dropped"
    assert delivery.duplicates == 0, f"{delivery.duplicates} duplicates at the collector"
    assert delivery.queued == 0, f"{delivery.queued} readings still queued"
    assert delivery.delivered == delivery.highest_seq - dropped
    return delivery
