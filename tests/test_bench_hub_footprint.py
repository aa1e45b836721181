"""bench/hub_footprint.py as a real process with a short window: its contract, not its figures.

Four real agents (one source; the ten-source hub quiet, fed and idle) on the real broker;
the test holds the bench to its JSON line and to figures that a running process gives.
"""

from __future__ import annotations

from tests.harness import run_bench
from tests.requirements import mosquitto_address

AGENTS = ("one_source", "hub_quiet", "hub_fed", "hub_idle")


def test_the_bench_reports_every_agent_in_its_last_line() -> None:
    host, port = mosquitto_address()
    figures = run_bench(
        "hub_footprint.py", "--seconds", "3", "--rate", "5", "--mqtt", f"{host}:{port}",
        timeout=180,
    )  # fmt: skip
    assert figures["seconds"] == 3.0
    assert figures["rate"] == 5.0
    for name in AGENTS:
        # a live Python agent holds tens of MiB, and its CPU share is a share
        assert 20 < figures[name]["rss_mib"] < 500, (name, figures[name])
        assert 0 <= figures[name]["cpu_pct"] < 100, (name, figures[name])
    # fed 3 x 5 messages a second, the fed hub works more than the one with nothing to do
    assert figures["hub_fed"]["cpu_pct"] > figures["hub_idle"]["cpu_pct"]
    opened = figures["hub_fed_after_page_and_scrape"]["rss_mib"]
    assert 20 < opened < 500
