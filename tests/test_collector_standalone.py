"""Each program installs alone: the server without the desktop's libraries, the agent without
the server's PostgreSQL driver.

The server runs in a child process whose `sitecustomize` makes pystray, PIL, gi (and, on
SQLite, asyncpg) unimportable and notes every attempt to import them, so an import that
fails quietly (inside a try) is caught too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import batch, post_json
from tests.harness import ROOT, get_json, start_collector

pytestmark = pytest.mark.e2e

DESKTOP_ONLY = ("pystray", "PIL", "gi")
# a server on SQLite needs no PostgreSQL driver either: the base install serves it
BLOCKED_FOR_SQLITE = (*DESKTOP_ONLY, "asyncpg")

# Python imports `sitecustomize` from sys.path at every start; this one, first on
# PYTHONPATH, runs before any of the program's code
SITECUSTOMIZE = """\
import os
import sys

BLOCKED = set(os.environ["PULSE_BLOCKED"].split(","))
LOG = os.environ["PULSE_BLOCKED_LOG"]


def _note(text):
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {text}\\n")


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            _note(f"import {name}")
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
for _name in sorted(BLOCKED & set(sys.modules)):
    _note(f"import {_name} before sitecustomize")
_note("active")
"""


@pytest.fixture
def blocked_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Child processes started after this cannot import DESKTOP_ONLY; the log of attempts."""
    folder = tmp_path / "sitecustomize"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = tmp_path / "blocked.log"
    log.touch()
    # this checkout's packages come right after, whatever the environment had before
    paths = [str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("PULSE_BLOCKED", ",".join(BLOCKED_FOR_SQLITE))
    monkeypatch.setenv("PULSE_BLOCKED_LOG", str(log))
    return log


def notes(log: Path) -> list[tuple[int, str]]:
    """What each child's sitecustomize noted, as (pid, text)."""
    pairs = [line.split(" ", 1) for line in log.read_text(encoding="utf-8").splitlines()]
    return [(int(pid), text) for pid, text in pairs]


@pytest.mark.parametrize("module", BLOCKED_FOR_SQLITE)
def test_the_blocker_runs_and_blocks(blocked_log: Path, module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert f"No module named {module!r} (blocked)" in done.stderr
    assert [text for _, text in notes(blocked_log)] == ["active", f"import {module}"]


def test_the_server_runs_without_the_desktop_libraries(tmp_path: Path, blocked_log: Path) -> None:
    """On SQLite it runs without pystray, PIL, gi and asyncpg."""
    proc = start_collector(tmp_path / "collector")
    try:
        assert get_json(f"{proc.url}/healthz")["status"] == "ok"
        status, ack = post_json(f"{proc.url}/api/v1/readings", batch(3))
        assert (status, ack) == (200, {"accepted": 3, "duplicates": 0, "rejected": []})
    finally:
        assert proc.stop() == 0, proc.output()
    # "active" proves the blocker ran in the server; anything else is an attempted import
    assert notes(blocked_log) == [(proc.popen.pid, "active")], proc.output()


@pytest.mark.parametrize("module", ["agent.app", "agent.__main__"])
def test_the_agent_never_imports_the_server_or_its_driver(module: str) -> None:
    probe = f"import sys, {module}; print(sorted({{'asyncpg', 'collector'}} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
