"""The dashboard of a hub with several sources, in headless chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import Pages, Stack, shot
from tests.harness import free_port, start_agent, start_collector, wait_until, write_agent_config

HUB = "hub-browser"


@pytest.fixture
def hub_stack(tmp_path: Path) -> Iterator[Stack]:
    """A collector, and an agent with three simulated sources and one MQTT source whose
    broker is not there."""
    collector = start_collector(tmp_path / "collector")
    config = write_agent_config(tmp_path / "agent", collector.port, free_port(), device_id=HUB)
    raw = json.loads(config.read_text())
    del raw["sensor"]
    raw.update(
        mqtt={"host": "127.0.0.1", "port": free_port()},
        sources=[
            {"device_id": HUB, "kind": "fake_heart_rate", "interval_s": 0.2, "seed": 1},
            {"device_id": "kitchen-bulb", "kind": "bulb_power", "interval_s": 0.2, "seed": 2},
            {"device_id": "boiler", "kind": "water_heater", "interval_s": 0.2, "seed": 3},
            {"device_id": "hall-light", "kind": "mqtt", "topic": "home/hall", "unit": "W"},
        ],
    )
    config.write_text(json.dumps(raw))
    try:
        agent = start_agent(tmp_path / "agent", config)
    except BaseException:
        collector.stop()
        raise
    running = Stack(tmp_path, collector, agent, config)
    yield running
    running.stop()


def test_every_source_has_its_card_state_value_and_chart(hub_stack: Stack, pages: Pages) -> None:
    page = pages.open(hub_stack.unlock_url(), width=1366, height=1100)
    cards = page.locator("#sources-list .source")
    wait_until(lambda: cards.count() == 4)
    assert page.locator("#sources-card").is_visible()
    # with several units the one heart-rate chart gives way to a chart per source
    assert not page.locator("#chart-card").is_visible()
    for device in (HUB, "kitchen-bulb", "boiler"):
        card = page.locator(f'#sources-list .source[data-device="{device}"]')
        wait_until(
            lambda card=card: int(card.locator(".chart").get_attribute("data-points") or 0) >= 5
        )
        assert card.get_attribute("data-tone") == "good"
    boiler = page.locator('#sources-list .source[data-device="boiler"]')
    assert "°C" in boiler.locator(".source-value").inner_text()
    hall = page.locator('#sources-list .source[data-device="hall-light"]')
    wait_until(lambda: hall.get_attribute("data-tone") == "warn")
    assert "reconnecting: cannot connect" in hall.locator(".source-state").inner_text()
    summary = page.locator("#sources-summary").inner_text()
    assert summary == "4 sources, 3 ok, 1 reconnecting"
    shot(page, "hub-dashboard", full_page=True)


def test_the_settings_page_lists_the_sources_read_only(hub_stack: Stack, pages: Pages) -> None:
    page = pages.open(hub_stack.unlock_url())
    page.goto(hub_stack.agent.url + "/settings")
    sources = page.locator("pre.readonly-json")
    assert "kitchen-bulb" in sources.inner_text()
    assert page.locator('[data-field="sensor.kind"]').count() == 0
    shot(page, "hub-settings", full_page=True)
