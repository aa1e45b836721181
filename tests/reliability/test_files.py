"""Corrupt and missing files: the agent keeps running, says so, and keeps what it stored."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, free_port, wait_until, write_agent_config
from tests.reliability.figures import Scenario
from tests.reliability.pipeline import Pipeline, drain_and_check, queue_state, stream_readings
from tests.reliability.test_power_loss import Said, run_writer
from tests.reliability.writer import ADD_ROWS, ADDS_PER_CHECKPOINT

WAL_HEADER = 32
PAGE = 4096
FRAME = 24 + PAGE


def moved_aside(queue: Path, kind: str) -> Path:
    """The one file the agent moved aside as queue.db.<kind>-<timestamp>."""
    found = sorted(queue.parent.glob(f"{queue.name}.{kind}-*"))
    found = [p for p in found if not p.name.endswith(("-wal", "-shm"))]
    assert len(found) == 1, f"expected one {kind} file beside the queue, found {found}"
    return found[0]


def test_garbage_queue_file_is_kept_aside(tmp_path: Path, figures: Scenario) -> None:
    """a queue.db of random bytes: moved aside intact, reported, a new queue takes over"""
    pipe = Pipeline(tmp_path)
    garbage = random.Random(6).randbytes(64 * 1024)
    pipe.queue_path.parent.mkdir(parents=True)
    pipe.queue_path.write_bytes(garbage)
    figures.faults["garbage queue.db"] += 1
    pipe.start_collector()
    try:
        pipe.start_agent()
        problem = pipe.status()["storage_problem"]
        assert problem is not None
        assert "moved aside" in problem
        wait_until(lambda: pipe.status()["sent_total"] >= 20)
        assert moved_aside(pipe.queue_path, "corrupt").read_bytes() == garbage
        assert "unusable" in pipe.agent_log()
        drain_and_check(pipe, figures)
    finally:
        pipe.stop()


def test_queue_from_a_future_schema_is_left_untouched(tmp_path: Path, figures: Scenario) -> None:
    """a queue.db with user_version 99: left in place byte for byte, a new queue beside it"""
    pipe = Pipeline(tmp_path)
    pipe.queue_path.parent.mkdir(parents=True)
    with sqlite3.connect(pipe.queue_path) as db:
        db.execute("CREATE TABLE queue_v99 (seq INTEGER PRIMARY KEY, body BLOB)")
        db.executemany("INSERT INTO queue_v99 (body) VALUES (?)", [(b"x",)] * 500)
        db.execute("PRAGMA user_version = 99")
    db.close()
    before = pipe.queue_path.read_bytes()
    mtime = pipe.queue_path.stat().st_mtime_ns
    figures.faults["queue.db from schema version 99"] += 1
    pipe.start_collector()
    try:
        pipe.start_agent()
        problem = pipe.status()["storage_problem"]
        assert problem is not None
        assert "newer Pulse" in problem
        assert "untouched" in problem
        wait_until(lambda: pipe.status()["sent_total"] >= 20)
        assert pipe.queue_path.read_bytes() == before
        assert pipe.queue_path.stat().st_mtime_ns == mtime
        assert not list(pipe.queue_path.parent.glob("queue.db.*")), "nothing moved or added"
        assert "written by a newer Pulse" in pipe.agent_log()
        beside = pipe.queue_path.with_name("queue.v2.db")
        assert beside.exists()
        newer = pipe.queue_path
        pipe.settings["storage"] = {"path": str(beside)}
        drain_and_check(pipe, figures)
        assert newer.read_bytes() == before
    finally:
        pipe.stop()


def _corrupt_pages(path: Path, first: int, count: int) -> None:
    with path.open("r+b") as f:
        for page in range(first, first + count):
            f.seek(page * PAGE)
            f.write(b"\xde\xad\xbe\xef" * (PAGE // 4))


def test_damaged_queue_is_salvaged_and_delivered(tmp_path: Path, figures: Scenario) -> None:
    """a queue.db with damaged pages: moved aside, every readable reading delivered"""
    pipe = Pipeline(tmp_path)
    pipe.start_agent()  # no collector yet: readings pile up in the queue
    wait_until(lambda: pipe.status()["pending"] >= 3000, 60)
    assert pipe.agent is not None
    assert pipe.agent.stop() == 0
    stream, highest, queued, _ = queue_state(pipe.queue_path)
    with sqlite3.connect(pipe.queue_path) as db:
        committed = dict(db.execute("SELECT seq, id FROM queue").fetchall())
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.close()
    _corrupt_pages(pipe.queue_path, pages // 2, 2)
    figures.faults["damaged pages in queue.db"] += 1
    pipe.start_collector()
    try:
        pipe.start_agent()
        problem = pipe.status()["storage_problem"]
        assert problem is not None
        assert "readings recovered" in problem
        wait_until(lambda: pipe.status()["pending"] < 50, 60)
        assert "salvage of" in pipe.agent_log()
        # what the collector holds of the old stream: readable readings, under their own seq
        # and id, each once; the lost ones lie in the ranges the salvage called unreadable
        old = {r["seq"]: r["id"] for r in stream_readings(pipe.collector, stream)}
        assert old, "nothing salvaged"
        assert all(committed[seq] == rid for seq, rid in old.items())
        unreadable = len(committed) - len(old)
        assert 0 < unreadable < len(committed) // 4
        figures.notes["salvaged"] = len(old)
        figures.lost_to_file_damage += unreadable
        drain_and_check(pipe, figures)
    finally:
        pipe.stop()


def _visible_rows(db_file: Path, wal: Path | None, scratch: Path) -> int:
    """Rows SQLite sees in a copy of the queue (and of its WAL, if given)."""
    scratch.mkdir()
    shutil.copy(db_file, scratch / "q.db")
    if wal is not None:
        shutil.copy(wal, scratch / "q.db-wal")
    with sqlite3.connect(scratch / "q.db") as db:
        (count,) = db.execute("SELECT COUNT(*) FROM queue").fetchone()
    db.close()
    return int(count)


def test_truncated_wal_keeps_every_whole_transaction(tmp_path: Path, figures: Scenario) -> None:
    """a WAL cut in the middle of a frame: the queue opens, whole transactions survive"""
    pipe = Pipeline(tmp_path)
    queue, wal = pipe.queue_path, Path(f"{pipe.queue_path}-wal")
    # one full round (checkpointed on close), then a writer killed mid-run: committed
    # transactions wait in the WAL
    adds = ADDS_PER_CHECKPOINT + ADDS_PER_CHECKPOINT // 2
    run_writer(queue, "checkpoint", random.Random(7), "committed", adds, Said())
    full = _visible_rows(queue, wal, tmp_path / "full")
    in_file = _visible_rows(queue, None, tmp_path / "db-only")
    frames = (wal.stat().st_size - WAL_HEADER) // FRAME
    assert frames > 4
    os.truncate(wal, WAL_HEADER + frames // 2 * FRAME + FRAME // 2)
    left = _visible_rows(queue, wal, tmp_path / "cut")
    figures.faults["truncated WAL"] += 1
    assert in_file <= left < full, (in_file, left, full)
    assert left % ADD_ROWS == 0, "a transaction survived in part"
    pipe.start_collector()
    try:
        pipe.start_agent()
        status = pipe.status()
        assert status["storage_problem"] is None
        wait_until(lambda: pipe.status()["sent_total"] >= left)
        assert "unusable" not in pipe.agent_log()
        figures.notes["rows_before_cut"] = full
        figures.notes["rows_after_cut"] = left
        # committed, then cut away with the WAL: no queue can send what the disk lost
        figures.lost_to_file_damage += full - left
        delivery = drain_and_check(pipe, figures)
        assert delivery.highest_seq > left
    finally:
        pipe.stop()


def _run_agent_once(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "--no-tray"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b'{"sensor": {"interval_s": 0.1,', ["not valid JSON"], id="not-json"),
        pytest.param(b"\xff\xfe garbage", ["not valid JSON"], id="not-utf8"),
        pytest.param(
            json.dumps(
                {"sensor": {"interval_s": "fast"}, "server": {"port": 99999}, "colour": 1}
            ).encode(),
            ["$.sensor.interval_s", "$.server.port", "$.colour"],
            id="wrong-types",
        ),
        pytest.param(b"[1, 2, 3]", ["$: expected an object"], id="not-an-object"),
    ],
)
def test_invalid_config_exits_2_and_is_untouched(
    tmp_path: Path, figures: Scenario, body: bytes, expected: list[str]
) -> None:
    """an invalid config.json: exit 2 naming each bad key, the file left as it was"""
    config = tmp_path / "config.json"
    config.write_bytes(body)
    before = config.stat().st_mtime_ns
    done = _run_agent_once(config)
    figures.faults["invalid config.json"] += 1
    assert done.returncode == 2, done.stderr
    for text in expected:
        assert text in done.stderr
    assert config.read_bytes() == body
    assert config.stat().st_mtime_ns == before
    assert not (tmp_path / "data").exists(), "an invalid config must not start the agent"
    logged = "".join(p.read_text() for p in (tmp_path / "logs").glob("agent-*.log"))
    assert "invalid config" in logged


def test_unwritable_logs_folder_keeps_the_agent_running(tmp_path: Path, figures: Scenario) -> None:
    """a logs folder that cannot be written: the agent runs, says so on status and console"""
    pipe = Pipeline(tmp_path)
    blocker = pipe.agent_dir / "blocker"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the logs folder's parent should be\n")
    pipe.settings["logs"]["dir"] = "blocker/logs"
    figures.faults["unwritable logs folder"] += 1
    pipe.start_collector()
    try:
        agent = pipe.start_agent()
        problem = pipe.status()["storage_problem"]
        assert problem is not None
        assert "cannot write log files" in problem
        wait_until(lambda: pipe.status()["sent_total"] >= 20)
        assert "cannot write log files" in agent.output()
        assert agent.popen.poll() is None
        drain_and_check(pipe, figures)
    finally:
        pipe.stop()


def test_missing_queue_folder_is_created(tmp_path: Path, figures: Scenario) -> None:
    """a queue folder that is not there yet (first run, or deleted): created, nothing lost"""
    pipe = Pipeline(tmp_path)
    pipe.settings["storage"] = {"path": "deep/er/queue.db"}
    pipe.start_collector()
    try:
        pipe.start_agent()
        wait_until(lambda: pipe.status()["sent_total"] >= 20)
        assert pipe.status()["storage_problem"] is None
        drain_and_check(pipe, figures)
        assert queue_state(pipe.queue_path)[2] == 0
    finally:
        pipe.stop()


def test_check_config_lists_errors(tmp_path: Path, figures: Scenario) -> None:
    """`check-config` on a config with wrong types: exit 2, every bad key named"""
    config = write_agent_config(tmp_path, free_port(), free_port())
    data = json.loads(config.read_text())
    data["sender"]["batch_size"] = "ten"
    data["storage"] = {"max_pending": 0}
    config.write_text(json.dumps(data))
    body = config.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    figures.faults["invalid config.json"] += 1
    assert done.returncode == 2
    assert "$.sender.batch_size" in done.stderr
    assert "$.storage.max_pending" in done.stderr
    assert config.read_bytes() == body
