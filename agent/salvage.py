"""Reading what can still be read out of a damaged queue file, and peeking at a file's schema.

Everything here is synchronous and read-only; the store runs it in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
# PRAGMA user_version lives at byte 60 of the file header, big-endian
USER_VERSION_OFFSET = 60
# how far past an unreadable row the salvage probes for the next readable one
MAX_PROBES = 48

Row = tuple[int, str, str, float, str]


@dataclass
class Salvage:
    """What came out of a damaged queue file: its stream, device id and readable readings."""

    stream: str | None
    device_id: str | None
    rows: list[Row] = field(default_factory=list)
    unreadable_rows: int = 0
    unreadable_ranges: list[tuple[int, int]] = field(default_factory=list)
    error: str = ""

    def describe(self) -> str:
        """One line for the log and the dashboard."""
        ranges = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in self.unreadable_ranges[:5])
        text = f"{len(self.rows)} readings recovered"
        if self.unreadable_rows or self.unreadable_ranges:
            text += f"; {self.unreadable_rows} unreadable rows"
            if ranges:
                text += f", unreadable seq ranges {ranges}"
        if self.error:
            text += f" ({self.error})"
        return text


def peek_user_version(path: Path) -> int | None:
    """The schema version in a database file's header, without opening it with SQLite.

    None if the file is missing, too short or not an SQLite database.
    """
    try:
        with path.open("rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return None
    if len(head) < 100 or not head.startswith(SQLITE_HEADER):
        return None
    return int.from_bytes(head[USER_VERSION_OFFSET : USER_VERSION_OFFSET + 4], "big")


def _connect(path: Path) -> sqlite3.Connection:
    # query_only: the quarantined file is evidence and must not change
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA query_only=ON")
    return con


def _meta(con: sqlite3.Connection, key: str) -> str | None:
    try:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.DatabaseError:
        return None
    return str(row[0]) if row else None


def _valid(row: tuple[object, ...]) -> Row | None:
    seq, rid, ts, value, unit = row
    if not isinstance(seq, int) or seq < 1:
        return None
    if not isinstance(rid, str) or not isinstance(ts, str) or not isinstance(unit, str):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return seq, rid, ts, float(value), unit


def _scan(con: sqlite3.Connection, after: int, out: Salvage) -> int | None:
    """Read rows with seq > after until the end (None) or a damaged page (the last good seq)."""
    last = after
    try:
        cur = con.execute(
            "SELECT seq, id, ts, value, unit FROM queue WHERE seq > ? ORDER BY seq", (after,)
        )
        for raw in cur:
            row = _valid(raw)
            if row is None:
                out.unreadable_rows += 1
                if isinstance(raw[0], int):
                    last = max(last, raw[0])
                continue
            out.rows.append(row)
            last = row[0]
    except sqlite3.DatabaseError:
        return last
    return None


def _highest_seq(con: sqlite3.Connection) -> int:
    with contextlib.suppress(sqlite3.DatabaseError):
        row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
        if row and isinstance(row[0], int):
            return row[0]
    return 2**40


def salvage_queue(path: Path) -> Salvage:
    """Read every readable reading of a damaged queue file, row by row.

    A damaged page ends a scan; the next scan starts past it, probing ever further
    (1, 2, 4, … seqs on) for the first row that reads again. The gaps are reported.
    """
    try:
        con = _connect(path)
    except sqlite3.Error as err:
        return Salvage(None, None, error=f"cannot open: {err}")
    try:
        out = Salvage(_meta(con, "stream"), _meta(con, "device_id"))
        highest = _highest_seq(con)
        after = 0
        while (stuck := _scan(con, after, out)) is not None:
            resumed = _probe(con, stuck, highest, out)
            if resumed is None:
                out.unreadable_ranges.append((stuck + 1, highest))
                out.error = "the rest of the file is unreadable"
                break
            out.unreadable_ranges.append((stuck + 1, resumed - 1))
            after = resumed - 1
        return out
    except sqlite3.DatabaseError as err:
        return Salvage(None, None, error=f"unreadable: {err}")
    finally:
        con.close()


def _probe(con: sqlite3.Connection, stuck: int, highest: int, out: Salvage) -> int | None:
    """The first seq past `stuck` from which rows read again, or None."""
    step = 1
    for _ in range(MAX_PROBES):
        start = stuck + 1 + step
        if start > highest:
            return None
        try:
            row = con.execute(
                "SELECT seq FROM queue WHERE seq >= ? ORDER BY seq LIMIT 1", (start,)
            ).fetchone()
        except sqlite3.DatabaseError:
            step *= 2
            continue
        return None if row is None else int(row[0])
    return None
