"""Hour-named log files: names, switching on the hour, retention, the queue thread, tail."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from pulse_common.logs import (
    FORMAT,
    HourlyFileHandler,
    hour_of,
    log_file_name,
    open_logging,
    set_level,
    tail,
)


def make_record(message: str, when: dt.datetime, level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord("agent.test", level, __file__, 1, message, None, None)
    record.created = when.timestamp()
    record.msecs = 0
    return record


def test_log_file_name() -> None:
    assert (
        log_file_name("agent", dt.datetime(2026, 11, 26, 23, 59, 59)) == "agent-2026-11-26_23.log"
    )
    assert (
        log_file_name("collector", dt.datetime(2027, 1, 2, 3, 0)) == "collector-2027-01-02_03.log"
    )


def test_hour_of_reads_our_names_only() -> None:
    assert hour_of(Path("agent-2026-11-26_23.log"), "agent") == dt.datetime(2026, 11, 26, 23)
    assert hour_of(Path("collector-2026-11-26_23.log"), "agent") is None
    assert hour_of(Path("agent-notes.log"), "agent") is None
    assert hour_of(Path("agent-2026-11-26_23.txt"), "agent") is None
    assert hour_of(Path("agent-2026-11-26_25.log"), "agent") is None


def test_handler_switches_file_when_records_cross_an_hour(tmp_path: Path) -> None:
    handler = HourlyFileHandler(tmp_path / "logs", "agent", keep_hours=10_000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        handler.handle(make_record("before midnight", dt.datetime(2026, 11, 26, 23, 59, 59)))
        handler.handle(make_record("still 23h", dt.datetime(2026, 11, 26, 23, 59, 59, 900_000)))
        handler.handle(make_record("after midnight", dt.datetime(2026, 11, 27, 0, 0, 1)))
    finally:
        handler.close()
    late = tmp_path / "logs" / "agent-2026-11-26_23.log"
    early = tmp_path / "logs" / "agent-2026-11-27_00.log"
    assert late.read_text(encoding="utf-8") == "before midnight\nstill 23h\n"
    assert early.read_text(encoding="utf-8") == "after midnight\n"
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [late.name, early.name]


def test_handler_appends_to_an_existing_hour_file(tmp_path: Path) -> None:
    when = dt.datetime(2026, 11, 26, 10, 5)
    path = tmp_path / log_file_name("agent", when)
    path.write_text("from an earlier run\n", encoding="utf-8")
    handler = HourlyFileHandler(tmp_path, "agent", keep_hours=10_000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(make_record("new run", when))
    handler.close()
    assert path.read_text(encoding="utf-8") == "from an earlier run\nnew run\n"


def test_current_path_uses_the_injected_clock(tmp_path: Path) -> None:
    when = dt.datetime(2026, 3, 4, 5, 6)
    handler = HourlyFileHandler(tmp_path, "agent", 24, clock=lambda: when.timestamp())
    try:
        assert handler.current_path == tmp_path / "agent-2026-03-04_05.log"
    finally:
        handler.close()


def touch_hours(folder: Path, prefix: str, now: dt.datetime, hours: range) -> dict[int, Path]:
    paths = {}
    for h in hours:
        path = folder / log_file_name(prefix, now - dt.timedelta(hours=h))
        path.write_text("x\n", encoding="utf-8")
        paths[h] = path
    return paths


def test_prune_deletes_only_our_old_files(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 26, 23, 30)
    ours = touch_hours(tmp_path, "agent", now, range(0, 12))
    theirs = touch_hours(tmp_path, "collector", now, range(0, 12))
    foreign = [tmp_path / "agent-notes.log", tmp_path / "agent-2026-11-26_23.txt", tmp_path / "x"]
    for path in foreign:
        path.write_text("keep me", encoding="utf-8")
    handler = HourlyFileHandler(tmp_path, "agent", keep_hours=5)
    try:
        removed = handler.prune(now)
    finally:
        handler.close()
    assert sorted(removed) == sorted(ours[h] for h in range(6, 12))
    assert all(ours[h].exists() for h in range(0, 6))
    assert not any(ours[h].exists() for h in range(6, 12))
    assert all(p.exists() for p in theirs.values())
    assert all(p.exists() for p in foreign)


def test_opening_a_new_hour_prunes(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 26, 23, 30)
    old = touch_hours(tmp_path, "agent", now, range(3, 6))
    handler = HourlyFileHandler(tmp_path, "agent", keep_hours=4)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(make_record("now", now))
    handler.close()
    assert old[3].exists()
    assert old[4].exists()
    assert not old[5].exists()


def test_open_logging_writes_an_error_with_its_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    root = logging.getLogger()
    before_level = root.level
    before_handlers = list(root.handlers)
    log = logging.getLogger("agent.test_logs")
    with open_logging(folder, "agent", level="INFO", console=False) as handler:
        assert handler.directory == folder
        log.debug("too quiet to keep")
        try:
            raise ValueError("boom 1234")
        except ValueError:
            log.exception("reading %d failed", 7)
    assert root.level == before_level
    assert root.handlers == before_handlers
    files = sorted(folder.glob("agent-*.log"))
    assert files
    text = "".join(p.read_text(encoding="utf-8") for p in files)
    assert "ERROR   agent.test_logs: reading 7 failed" in text
    assert "Traceback (most recent call last):" in text
    assert "ValueError: boom 1234" in text
    assert "too quiet to keep" not in text


def test_open_logging_respects_the_level(tmp_path: Path) -> None:
    log = logging.getLogger("agent.test_logs")
    with open_logging(tmp_path, "agent", level="WARNING", console=False):
        log.info("an info line")
        log.warning("a warning line")
        set_level("DEBUG")
        log.debug("a debug line")
    text = "".join(p.read_text(encoding="utf-8") for p in tmp_path.glob("agent-*.log"))
    assert "an info line" not in text
    assert "a warning line" in text
    assert "a debug line" in text


def test_format_names_level_and_logger() -> None:
    record = make_record("hello", dt.datetime(2026, 1, 1, 12, 0), logging.WARNING)
    line = logging.Formatter(FORMAT).format(record)
    assert line.endswith("WARNING agent.test: hello")


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_text("".join(f"line {i}\n" for i in range(1000)), encoding="utf-8")
    assert tail(path, 3) == ["line 997", "line 998", "line 999"]
    assert tail(path, 1) == ["line 999"]
    assert len(tail(path)) == 50


def test_tail_of_a_short_or_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "short.log"
    path.write_text("one\ntwo\n", encoding="utf-8")
    assert tail(path, 10) == ["one", "two"]
    assert tail(tmp_path / "missing.log", 10) == []
    assert tail(path, 0) == []
    (tmp_path / "empty.log").write_bytes(b"")
    assert tail(tmp_path / "empty.log", 5) == []


def test_tail_without_a_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "partial.log"
    path.write_text("".join(f"line {i}\n" for i in range(300)) + "being written", encoding="utf-8")
    assert tail(path, 2) == ["line 299", "being written"]


def test_tail_returns_whole_long_lines(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    lines = [f"{i:04d} " + "x" * 1000 for i in range(20)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert tail(path, 3) == lines[-3:]


@pytest.mark.parametrize("lines", [1, 5])
def test_tail_does_not_break_on_multibyte_text(tmp_path: Path, lines: int) -> None:
    path = tmp_path / "utf8.log"
    content = [f"{i} héllo wörld €" for i in range(200)]
    path.write_text("\n".join(content) + "\n", encoding="utf-8")
    assert tail(path, lines) == content[-lines:]
