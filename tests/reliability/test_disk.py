"""A full disk, and the disk cap (storage.max_pending) that keeps the queue from filling one."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from agent.store import open_store
from tests.harness import ROOT, wait_until
from tests.reliability.figures import Scenario, scale, scaled
from tests.reliability.pipeline import Pipeline, drain_and_check, queue_state, wait_drained
from tests.requirements import require

SMALL_DISK = "1m"
CAP = 2000


@contextlib.contextmanager
def small_disk(where: Path, size: str = SMALL_DISK) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only), unmounted afterwards."""
    where.mkdir(parents=True)
    require(os.geteuid() == 0, "mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def grow(disk: Path, size: str = "64m") -> None:
    """Free space: the user deleted something, here by growing the tmpfs."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    assert shutil.disk_usage(disk).free < 4096
    return filler


def test_full_disk_keeps_the_agent_running(tmp_path: Path, figures: Scenario) -> None:
    """the queue's disk fills up: the agent runs on, reports it, and loses nothing stored"""
    with small_disk(tmp_path / "disk") as disk:
        pipe = Pipeline(tmp_path)
        pipe.settings["storage"] = {"path": str(disk / "queue.db")}
        pipe.settings["sensor"]["interval_s"] = 0.005
        try:
            agent = pipe.start_agent()  # the collector is not there: readings pile up
            wait_until(lambda: pipe.status()["storage_problem"] is not None, 60)
            figures.faults["full disk"] += 1
            status = pipe.status()
            assert "cannot be stored" in status["storage_problem"]
            assert status["pending"] > 0
            stored = status["pending"]
            assert agent.popen.poll() is None
            assert pipe.agent_log().count("sensor reading failed") == 1, "logged once"
            grow(disk)
            wait_until(lambda: pipe.status()["storage_problem"] is None, 30)
            assert pipe.status()["pending"] > stored
            pipe.start_collector()
            figures.recovered(wait_drained(pipe, below=pipe.settings["sender"]["batch_size"]))
            assert "sensor readings stored again" in pipe.agent_log()
            drain_and_check(pipe, figures)
        finally:
            pipe.stop()


def test_disk_fills_while_readings_flow_to_the_collector(tmp_path: Path, figures: Scenario) -> None:
    """commits fail on a full disk while the sender reads and the collector acks"""
    # room for the WAL to reach its checkpoint size (1,000 pages), until the filler comes
    with small_disk(tmp_path / "disk", "16m") as disk:
        pipe = Pipeline(tmp_path)
        pipe.settings["storage"] = {"path": str(disk / "queue.db")}
        pipe.settings["sensor"]["interval_s"] = 0.002
        pipe.settings["sender"].update(interval_s=0.01, batch_size=5)
        pipe.start_collector()
        try:
            pipe.start_agent()
            wait_until(lambda: pipe.status()["sent_total"] >= 200, 60)
            for _ in range(scaled(3)):
                # the disk fills while the sensor adds and the sender reads and acks
                filler = fill(disk)
                figures.faults["disk full while delivering"] += 1
                wait_until(lambda: pipe.status()["storage_problem"] is not None, 30)
                sent = pipe.status()["sent_total"]
                time.sleep(0.5)  # many commits fail at the WAL append meanwhile
                filler.unlink()
                wait_until(lambda: pipe.status()["storage_problem"] is None, 30)
                wait_until(lambda: pipe.status()["sent_total"] > sent + 50, 30)  # noqa: B023
            assert "sensor reading failed" in pipe.agent_log()
            drain_and_check(pipe, figures)
        finally:
            pipe.stop()


def test_start_on_a_full_disk_keeps_the_queue(tmp_path: Path, figures: Scenario) -> None:
    """the agent starts on a full disk: the queue is never moved aside, and all of it arrives"""
    with small_disk(tmp_path / "disk") as disk:
        pipe = Pipeline(tmp_path)
        pipe.settings["storage"] = {"path": str(disk / "queue.db")}
        try:
            pipe.start_agent()
            # each commit appends about five pages to the WAL: 30 readings fit the small disk
            wait_until(lambda: pipe.status()["pending"] >= 30)
            assert pipe.agent is not None
            assert pipe.agent.stop() == 0
            _, highest, queued, _ = queue_state(pipe.queue_path)
            filler = fill(disk)
            figures.faults["full disk at start"] += 1
            before = pipe.queue_path.read_bytes()
            config = pipe.write_config()
            env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
            done = subprocess.run(
                [sys.executable, "-m", "agent", "--config", str(config), "--no-tray"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            # it cannot open the queue without room for the WAL: it stops and says why
            assert done.returncode != 0
            assert "cannot open the queue file" in done.stderr
            assert not list(disk.glob("queue.db.*-*")), "a healthy queue was moved aside"
            assert pipe.queue_path.read_bytes() == before
            filler.unlink()
            pipe.start_collector()
            pipe.start_agent()
            assert pipe.status()["storage_problem"] is None
            delivery = drain_and_check(pipe, figures)
            assert delivery.highest_seq > highest >= queued >= 30
        finally:
            pipe.stop()


def _size(queue: Path) -> int:
    return sum(p.stat().st_size for p in queue.parent.glob(queue.name + "*"))


def test_disk_cap_holds_the_file_size(tmp_path: Path, figures: Scenario) -> None:
    """storage.max_pending: the oldest dropped and counted, size held, file shrinks after"""
    pipe = Pipeline(tmp_path)
    cap = scaled(CAP)
    pipe.settings["storage"] = {"max_pending": cap}
    pipe.settings["sensor"]["interval_s"] = 0.002
    try:
        pipe.start_agent()  # no collector yet: the queue fills to its cap
        wait_until(lambda: pipe.status()["dropped_total"] >= cap // 4, 60 * scale())
        figures.faults["queue at its cap (collector down)"] += 1
        at_cap = _size(pipe.queue_path)
        wait_until(lambda: pipe.status()["dropped_total"] >= 2 * cap, 120 * scale())
        status = pipe.status()
        later = _size(pipe.queue_path)
        assert status["pending"] == cap
        assert later <= at_cap * 1.2, f"the file grew at the cap: {at_cap} -> {later}"
        assert pipe.agent_log().count(f"queue full at {cap} readings") == 1
        figures.notes["file_bytes_at_cap"] = later
        assert pipe.agent is not None
        assert pipe.agent.stop() == 0
        delivery = drain_and_check(pipe, figures, capped=True)
        assert delivery.dropped >= 2 * cap
        assert delivery.lost == list(range(1, delivery.dropped + 1)), "not the oldest dropped"
        drained = _size(pipe.queue_path)
        figures.notes["file_bytes_after_drain"] = drained
        assert drained < later / 2, f"the file did not shrink: {later} -> {drained}"
    finally:
        pipe.stop()


async def test_drop_of_a_reading_in_flight_counts_as_sent(tmp_path: Path) -> None:
    """the cap drops readings of a batch in flight; their ack counts them sent, not dropped"""
    async with open_store(tmp_path / "queue.db", 10) as store:
        now = dt.datetime.now(dt.UTC)
        await store.add_many([(now, 70, "bpm")] * 10)
        batch = await store.oldest(5)
        assert batch is not None
        await store.add_many([(now, 71, "bpm")] * 2)  # drops seqs 1 and 2, in flight
        assert (await store.counts()).dropped == 2
        assert await store.ack(batch) == 5
        counts = await store.counts()
    assert (counts.pending, counts.sent, counts.dropped) == (7, 5, 0)
