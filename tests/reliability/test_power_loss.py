"""Power loss, as far as a test can cut it: kill -9 during heavy writes and checkpoints.

A kill -9 stops the process between any two instructions, but the kernel still writes out
what the process had written. The fsync policy (WAL, synchronous=FULL) is what carries a
commit through a real power cut; docs/reliability.md says what it guarantees.
"""

from __future__ import annotations

import random
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness import ROOT
from tests.reliability.figures import Scenario, scaled
from tests.reliability.pipeline import Pipeline, drain_and_check
from tests.reliability.writer import ACK_ROWS

KILLS = 15


@dataclass
class Said:
    """What the writer said was durable before it died."""

    committed: int = 0
    acked: int = 0
    last: str = ""


def run_writer(
    path: Path,
    mode: str,
    rng: random.Random,
    stop_after: str,
    count: int,
    said: Said,
    within_s: float = 0.01,
) -> Said:
    """Start the writer, kill -9 it within `within_s` of its `count`-th `stop_after` line.

    `said` carries what earlier runs on the same file said was durable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.writer", str(path), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    seen = 0
    deadline = time.monotonic() + 60
    lines: list[str] = []
    while seen < count:
        line = proc.stdout.readline().decode()
        assert line, f"writer ended early: {proc.stderr.read().decode() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "writer too slow"
        lines.append(line)
        seen += line.startswith(stop_after)
    time.sleep(rng.uniform(0.0, within_s))
    proc.kill()
    # read through the same buffered file: communicate() reads the raw pipe and would miss
    # lines readline() already took into the buffer (an "acked N" then goes unseen)
    with proc.stdout:
        out = proc.stdout.read()
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read()
    proc.wait()
    assert proc.returncode == -9, err.decode()
    lines += out.decode().splitlines()
    said.last = ""
    for line in lines:
        if m := re.match(r"(committed|acked) (\d+)", line):
            setattr(said, m[1], int(m[2]))
        said.last = line.strip() or said.last
    return said


def check_file(path: Path, said: Said) -> int:
    """integrity_check, then every said commit present, every said ack gone, counters exact."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [r[0] for r in db.execute("SELECT seq FROM queue ORDER BY seq")]
        (highest,) = db.execute("SELECT seq FROM sqlite_sequence WHERE name='queue'").fetchone()
        sent = dict(db.execute("SELECT name, value FROM counters").fetchall())["sent"]
    db.close()
    low = seqs[0] - 1 if seqs else highest
    assert seqs == list(range(low + 1, low + 1 + len(seqs))), "a hole in the queue"
    assert low + len(seqs) >= said.committed, "a commit that returned is gone"
    # an ack that committed but was not yet said may have removed the next ACK_ROWS
    assert said.acked <= low <= said.acked + ACK_ROWS, "an ack was lost or invented"
    assert sent == low, "the sent counter disagrees with the rows"
    assert highest >= low + len(seqs)
    return len(seqs)


def test_kill_9_during_heavy_writes(tmp_path: Path, figures: Scenario) -> None:
    """kill -9 of a writer adding and acking as fast as it can, then integrity_check"""
    rng = random.Random(4)
    path = tmp_path / "queue.db"
    said = Said()
    for _ in range(scaled(KILLS)):
        run_writer(path, "heavy", rng, "committed", rng.randint(1, 40), said)
        figures.kills["queue writer"] += 1
        check_file(path, said)
    figures.notes["rows_written"] = said.committed


def test_kill_9_during_wal_checkpoint(tmp_path: Path, figures: Scenario) -> None:
    """kill -9 while the queue checkpoints its WAL on close, then integrity_check and drain"""
    rng = random.Random(5)
    pipe = Pipeline(tmp_path)
    during = 0
    said = Said()
    for _ in range(scaled(KILLS)):
        run_writer(pipe.queue_path, "checkpoint", rng, "checkpoint", 1, said, 0.002)
        figures.kills["queue writer"] += 1
        during += said.last == "checkpoint"
        check_file(pipe.queue_path, said)
    figures.notes["kills_inside_checkpoint"] = during
    # most kills must land inside the checkpoint, or this tests something else
    assert during >= scaled(KILLS) // 2
    try:
        drain_and_check(pipe, figures)
    finally:
        pipe.stop()
