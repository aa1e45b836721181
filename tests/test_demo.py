"""The demo that `./scripts/run` starts: its collector config is valid and its rule fires.

A newcomer runs `./scripts/run` and should see a chart and an alert within a minute. The
rule lives in scripts/demo-collector.json; this runs a real collector with that file and
feeds it what the agent's fake heart rate sends at rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.config import load_config
from tests.conftest import at, post_json, reading
from tests.harness import ROOT, get_json, start_collector, wait_until

DEMO = ROOT / "scripts" / "demo-collector.json"


def test_the_demo_config_is_valid_and_has_a_value_rule_and_a_silent_rule() -> None:
    config = load_config(DEMO)
    assert {rule.when for rule in config.alerts.rules} == {"above", "silent"}
    assert "scripts/demo-collector.json" in (ROOT / "scripts" / "run").read_text()


def test_the_demo_rule_fires_within_a_minute_of_a_resting_heart_rate(tmp_path: Path) -> None:
    collector = start_collector(tmp_path, None, "--config", str(DEMO))
    try:
        rules = {rule["name"] for rule in get_json(f"{collector.url}/api/v1/rules")}
        assert rules == {"Heart rate above resting (demo)", "Device silent"}
        # what the fake heart rate sends at rest, a little above the demo's line of 72
        body = {
            "device_id": "demo-hr",
            "stream": "s1",
            "readings": [
                reading(seq, value, when=at(seq)) for seq, value in [(1, 80), (2, 81), (3, 79)]
            ],
        }
        status, ack = post_json(f"{collector.url}/api/v1/readings", body)
        assert (status, ack["accepted"]) == (200, 3)

        def firing() -> list[dict[str, Any]]:
            alerts = get_json(f"{collector.url}/api/v1/alerts?state=firing")
            return [a for a in alerts if a["rule"] == "Heart rate above resting (demo)"]

        (alert,) = wait_until(firing, timeout=60)
        assert alert["device_id"] == "demo-hr"
        # the chart's data: the device page draws this series
        query = "device_id=demo-hr&from=2026-11-26T23:00:00Z&to=2026-11-27T00:00:00Z&points=10"
        points = get_json(f"{collector.url}/api/v1/series?{query}")["points"]
        assert [(p["min"], p["max"], p["count"]) for p in points] == [(79, 81, 3)]
    finally:
        assert collector.stop() == 0, collector.output()
