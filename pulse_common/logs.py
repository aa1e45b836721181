"""Hour-named log files, written off the event loop behind a QueueHandler, with retention.

The agent and the server both use it; each names its files after itself (`agent-…`,
`collector-…`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import logging.handlers
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

logger = logging.getLogger(__name__)

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
HOUR_FORMAT = "%Y-%m-%d_%H"

Clock = Callable[[], float]

# a log folder that failed is tried again after this long
RETRY_S = 10.0


def _console(text: str) -> None:
    # a windowed build has no console: sys.stderr is None there
    if sys.stderr is not None:
        sys.stderr.write(f"pulse: {text}\n")


def log_file_name(prefix: str, when: dt.datetime) -> str:
    """Return the file name for the hour that contains `when`, e.g. agent-2026-11-26_23.log."""
    return f"{prefix}-{when.strftime(HOUR_FORMAT)}.log"


def hour_of(path: Path, prefix: str) -> dt.datetime | None:
    """Return the local hour a log file is named after, or None if the name is not ours."""
    stem = path.name.removeprefix(f"{prefix}-").removesuffix(".log")
    if stem == path.name or not path.name.endswith(".log"):
        return None
    try:
        return dt.datetime.strptime(stem, HOUR_FORMAT)
    except ValueError:
        return None


class HourlyFileHandler(logging.Handler):
    """Write each record to the file of its local hour; switch files on the hour.

    Retention runs whenever a new hour's file is opened, so a long-running process
    never keeps more than `keep_hours` of files.
    """

    def __init__(self, directory: Path, prefix: str, keep_hours: int, clock: Clock = time.time):
        super().__init__()
        self.directory = directory
        self.prefix = prefix
        self.keep_hours = keep_hours
        self._clock = clock
        self._name: str | None = None
        self._fh: TextIO | None = None
        self._retry_at = 0.0
        # why files cannot be written right now, or None; the agent shows it on its status
        self.problem: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._failed(err, self._clock())

    @property
    def current_path(self) -> Path:
        """The path of the file for the current hour."""
        now = dt.datetime.fromtimestamp(self._clock())
        return self.directory / log_file_name(self.prefix, now)

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record to its hour's file."""
        try:
            when = dt.datetime.fromtimestamp(record.created)
            name = log_file_name(self.prefix, when)
            if name != self._name or self._fh is None:
                if name == self._name and record.created < self._retry_at:
                    return  # the folder failed a moment ago; the console still has it
                self._open(name, when)
            msg = self.format(record)
            assert self._fh is not None  # set by _open
            self._fh.write(msg + "\n")
            self._fh.flush()
            if self.problem is not None:
                self.problem = None
                _console(f"log folder {self.directory} can be written again")
        except OSError as err:
            self._failed(err, record.created)
        except Exception:
            self.handleError(record)

    def _failed(self, err: OSError, now: float) -> None:
        """An unwritable or full log folder never stops the program: say so once, retry."""
        with contextlib.suppress(OSError):
            self._close_file()
        self._fh = None
        self._retry_at = now + RETRY_S
        if self.problem is None:
            self.problem = f"cannot write log files in {self.directory}: {err.strerror or err}"
            _console(self.problem + "; logging to the console only until it can")

    def _open(self, name: str, when: dt.datetime) -> None:
        self._close_file()
        self._name = name
        self.directory.mkdir(parents=True, exist_ok=True)
        # owner-only: the log holds health readings and the dashboard's unlock link
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fh = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - closed in _close_file
        self.prune(when)

    def prune(self, now: dt.datetime) -> list[Path]:
        """Delete our files whose hour is more than keep_hours before `now`."""
        cutoff = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(
            hours=self.keep_hours
        )
        removed: list[Path] = []
        for path in self.directory.glob(f"{self.prefix}-*.log"):
            hour = hour_of(path, self.prefix)
            if hour is not None and hour < cutoff:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
        return removed

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None

    def close(self) -> None:
        """Close the current file."""
        self.acquire()
        try:
            self._close_file()
        finally:
            self.release()
        super().close()


@contextlib.contextmanager
def open_logging(
    directory: Path,
    prefix: str,
    level: str = "INFO",
    keep_hours: int = 336,
    console: bool = True,
) -> Iterator[HourlyFileHandler]:
    """Route the root logger to hour-named files through a queue thread; undo on exit.

    The console handler is added only when a console exists: in a windowed build
    sys.stderr is None.
    """
    file_handler = HourlyFileHandler(directory, prefix, keep_hours)
    file_handler.setFormatter(logging.Formatter(FORMAT))
    handlers: list[logging.Handler] = [file_handler]
    if console and sys.stderr is not None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(FORMAT))
        handlers.append(stream)
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = logging.handlers.QueueHandler(q)
    listener = logging.handlers.QueueListener(q, *handlers, respect_handler_level=False)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(queue_handler)
    root.setLevel(level)
    # aiohttp's access log is noisy at INFO and says nothing about delivery
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every call at DEBUG, which would bury the agent's own lines
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    listener.start()
    try:
        yield file_handler
    finally:
        root.removeHandler(queue_handler)
        root.setLevel(previous_level)
        listener.stop()
        for handler in handlers:
            handler.close()


def set_level(level: str) -> None:
    """Change the root log level live."""
    logging.getLogger().setLevel(level)


def tail(path: Path, lines: int = 50) -> list[str]:
    """Return the last `lines` lines of a log file, or [] if it does not exist."""
    if lines < 1:
        return []
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            chunk = 256 * lines
            while True:
                # read back far enough for `lines` whole lines, however long they are
                start = max(0, size - chunk)
                fh.seek(start)
                data = fh.read()
                if start == 0 or data.count(b"\n") > lines:
                    break
                chunk *= 2
    except FileNotFoundError:
        return []
    if start > 0:
        data = data[data.index(b"\n") + 1 :]  # the first line may be cut
    return data.decode("utf-8", "replace").splitlines()[-lines:]
