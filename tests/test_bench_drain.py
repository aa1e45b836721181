"""bench/drain.py as a real process with a small backlog: its lines, on SQLite and PostgreSQL.

Its contract, not its speed: every run drains the whole queue into the collector (the bench
exits non-zero if the collector holds another count) and prints its ratio to the raw drain
and the CPU it measured.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.harness import ROOT
from tests.requirements import postgres_url

PULSE_LINE = re.compile(
    r"  pulse, (\d) in flight +[\d.]+ s +[\d,]+ readings/s  end-to-end/raw time ([\d.]+)"
    r"  CPU ms per 1000 readings: agent [\d.]+, collector [\d.]+(, postgres [\d.]+)?$"
)


def run_drain(*args: str) -> list[re.Match[str]]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "drain.py"), "--readings", "3000", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("  raw store drain") for line in lines), done.stdout
    return [m for line in lines if (m := PULSE_LINE.fullmatch(line))]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_drain_bench_reports_each_run(backend: str) -> None:
    args = ("--database-url", postgres_url()) if backend == "postgres" else ()
    runs = run_drain("--batch", "500", *args)
    assert [m.group(1) for m in runs] == ["1", "2"]
    for match in runs:
        assert float(match.group(2)) > 0
        assert (match.group(3) is not None) == (backend == "postgres")
