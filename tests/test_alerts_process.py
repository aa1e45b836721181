"""Alerts in a real `python -m collector` process: readings over HTTP, a real webhook."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.conftest import post_json, reading
from tests.harness import start_collector
from tests.receivers import Webhook

pytestmark = pytest.mark.e2e


async def wait_for_messages(hook: Webhook, count: int, within_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while len(hook.received) < count:
        assert asyncio.get_running_loop().time() < deadline, hook.received
        await asyncio.sleep(0.05)


async def test_a_rule_fires_and_resolves_in_a_collector_process(tmp_path: Path) -> None:
    config = tmp_path / "collector.json"
    async with Webhook().running() as hook:
        rule = {
            "name": "High heart rate",
            "device": "*",
            "when": "above",
            "threshold": 120,
            "clear": 110,
            "for_s": 1,
            "channels": ["ops"],
        }
        alerts = {"channels": {"ops": [hook.url]}, "rules": [rule], "interval_s": 0.2}
        config.write_text(json.dumps({"alerts": alerts}))
        proc = await asyncio.to_thread(start_collector, tmp_path, None, "--config", str(config))
        try:
            url = f"{proc.url}/api/v1/readings"

            async def post(seq: int, *values: float) -> None:
                readings = [reading(seq + i, value=v) for i, v in enumerate(values)]
                body = {"device_id": "ward-3", "stream": "hr", "readings": readings}
                status, _ = await asyncio.to_thread(post_json, url, body)
                assert status == 200

            await post(1, 125, 130)
            await asyncio.sleep(1.5)
            await post(3, 135)
            await wait_for_messages(hook, 1)
            await post(4, 115)  # between clear and threshold: still firing
            await asyncio.sleep(3)
            assert len(hook.received) == 1
            await post(5, 100)
            await wait_for_messages(hook, 2)
            await asyncio.sleep(1)
        finally:
            code = await asyncio.to_thread(proc.stop)
        assert code == 0, proc.output()
    firing, resolved = hook.texts()
    assert len(hook.received) == 2
    for text, state in ((firing, "firing"), (resolved, "resolved")):
        assert state in text
        assert "High heart rate" in text
        assert "ward-3" in text
    assert "Traceback" not in proc.output()
