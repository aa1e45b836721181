"""bench/fleet.py as a real process on PostgreSQL behind nginx (two collectors), with tiny
numbers: its contract, not its speed.

The bench's own end check compares what it sent with what `readings` holds, reading by
reading; this test holds it to the JSON line it promises and to zero lost and duplicated.
"""

from __future__ import annotations

from typing import Any

from deploy.fleet import FleetError, find_nginx
from tests import harness
from tests.requirements import missing, postgres_url

KEYS = {
    "agents",
    "instances",
    "requests_per_s",
    "readings_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "errors",
    "lost",
    "duplicates",
    "ceiling_readings_per_s",
}


def run_bench(*args: str) -> dict[str, Any]:
    """Run bench/fleet.py and decode its last line."""
    return harness.run_bench("fleet.py", *args)


def require_nginx() -> None:
    """nginx from Debian's package, where deploy/fleet.py looks for it, or `missing`."""
    try:
        find_nginx(None)
    except FleetError as err:
        missing(str(err))


def test_fleet_bench_sends_every_reading_exactly_once() -> None:
    url = postgres_url()
    require_nginx()
    summary = run_bench(
        "--agents", "20", "--seconds", "10", "--instances", "2", "--database-url", url
    )
    assert set(summary) == KEYS
    assert (summary["agents"], summary["instances"]) == (20, 2)
    assert summary["errors"] == 0
    assert summary["lost"] == 0
    assert summary["duplicates"] == 0
    # 20 agents, one batch of 10 every 5 s for 10 s: 400 readings, all of them in the ceiling
    assert summary["readings_per_s"] == 40
    assert isinstance(summary["ceiling_readings_per_s"], int)
    assert summary["ceiling_readings_per_s"] > 0
