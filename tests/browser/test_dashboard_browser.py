"""The dashboard in a real Chromium, against a real agent and a real collector."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import URL_LINE, Pages, Stack, shot
from tests.faultproxy import Fault, FaultProxy
from tests.harness import (
    agent_status,
    free_port,
    start_agent,
    start_collector,
    wait_until,
    write_agent_config,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LIVE_STATES = re.compile(r"^(Sending|Catching up.*)$")

# Pixels of the chart's line colour on the chart's canvas: the line was drawn.
LINE_PIXELS_JS = """() => {
  const canvas = document.querySelector("#chart canvas");
  const css = getComputedStyle(document.documentElement).getPropertyValue("--chart-line").trim();
  const want = [1, 3, 5].map((i) => parseInt(css.slice(i, i + 2), 16));
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const close = want.every((v, k) => Math.abs(data[i + k] - v) < 40);
    if (close && data[i + 3] > 200) n++;
  }
  return n;
}"""

# Times (ms) of "batch" events on a websocket of the page's own origin, for a while.
BATCH_TIMES_JS = """(ms) => new Promise((resolve) => {
  const times = [];
  const ws = new WebSocket("ws://" + location.host + "/ws");
  ws.onmessage = (e) => {
    if (JSON.parse(e.data).type === "batch") times.push(performance.now());
  };
  setTimeout(() => { ws.close(); resolve(times); }, ms);
})"""


def number(page: Page, selector: str) -> int:
    """A counter as shown, e.g. "1,234" -> 1234."""
    text = page.locator(selector).inner_text()
    digits = re.sub(r"\D", "", text)
    return int(digits) if digits else -1


def field(page: Page, key: str) -> str:
    """The selector of a settings field by its config key."""
    return f'[data-field="{key}"]'


def test_the_page_loads_unlocked_and_moves_live(stack: Stack, pages: Pages) -> None:
    page = pages.open(stack.unlock_url())
    # the secret was swapped for a cookie and dropped from the address bar
    assert page.url == f"{stack.agent.url}/"
    expect(page.locator("body")).to_have_attribute("data-unlocked", "true")
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator("#state-title")).to_have_text(LIVE_STATES)
    expect(page.locator("#state")).to_have_attribute("data-tone", re.compile("good|info"))
    first = number(page, "#c-sent")
    wait_until(lambda: number(page, "#c-sent") >= first + 20)
    expect(page.locator("#w-device")).to_have_text("test-device")
    expect(page.locator("#w-server")).to_have_text(
        f"http://127.0.0.1:{stack.collector.port}/api/v1/readings"
    )
    expect(page.locator("#t-version")).to_have_text(re.compile(r"^\d+\.\d+"))
    expect(page.locator("#t-last-send")).to_contain_text("ago")
    expect(page.locator("#log")).to_contain_text(re.compile(r"\d\d:\d\d:\d\d,\d{3} (DEBUG|INFO) "))
    expect(page.locator("#log-file")).to_have_text(
        re.compile(r"^agent-\S+\.log, last ([1-9]|[1-4][0-9]|50) lines$")
    )
    secret = stack.unlock_url().split("token=", 1)[1]
    log_text = page.locator("#log").inner_text()
    assert "token=…" in log_text  # the start-up line is shown, its secret is not
    assert secret not in log_text
    wait_until(lambda: number(page, "#t-rate") >= 20)
    # no value was refused, so the tile for refused values stays out of the way
    expect(page.locator("#tile-invalid")).to_be_hidden()
    expect(page.locator("#c-invalid")).to_have_text("0")
    # the chart draws its points
    wait_until(lambda: int(page.locator("#chart").get_attribute("data-points") or 0) >= 20)
    assert page.evaluate(LINE_PIXELS_JS) > 150
    shot(page, "status-1366x768")
    shot(page, "status-1366x768-full", full_page=True)


def test_offline_then_back_drains_to_zero(stack: Stack, pages: Pages) -> None:
    page = pages.open(stack.unlock_url())
    title = page.locator("#state-title")
    expect(title).to_have_text(LIVE_STATES)
    stack.collector.stop()
    expect(title).to_have_text(re.compile(r"^Offline since \d\d:\d\d, [\d,]+ queued$"))
    expect(page.locator("#state")).to_have_attribute("data-tone", "bad")
    expect(page.locator("#t-last-error")).to_contain_text("ago")
    pending = number(page, "#c-pending")
    wait_until(lambda: number(page, "#c-pending") >= pending + 15)
    shot(page, "status-offline")
    stack.restart_collector()
    wait_until(lambda: number(page, "#c-pending") == 0, timeout=30)
    expect(title).to_have_text(LIVE_STATES)
    expect(page.locator("#state")).to_have_attribute("data-tone", re.compile("good|info"))


def test_disconnected_retrying_then_back(stack: Stack, pages: Pages) -> None:
    pages.allowed += ["WebSocket connection", "ERR_CONNECTION_REFUSED"]
    page = pages.open(stack.unlock_url())
    expect(page.locator("#conn")).to_have_text("live")
    assert stack.agent.stop() == 0
    expect(page.locator("#conn")).to_have_text("disconnected, retrying")
    # the last state is not left standing as if it were current
    expect(page.locator("#state-title")).to_have_text("Agent not reachable")
    expect(page.locator("#state")).to_have_attribute("data-tone", "warn")
    shot(page, "status-disconnected")
    stack.restart_agent()
    expect(page.locator("#conn")).to_have_text("live", timeout=20_000)
    # the new run has a new secret, so the page says it is read-only now
    expect(page.locator("body")).to_have_attribute("data-unlocked", "false")
    expect(page.locator("#lock-notice")).to_be_visible()


def test_without_the_secret_the_page_is_read_only(stack: Stack, pages: Pages) -> None:
    page = pages.open(f"{stack.agent.url}/")
    notice = page.locator("#lock-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("?token=")
    expect(page.locator("#conn")).to_have_text("live")
    for button in ("#btn-send-now", "#btn-pause", "#btn-retry-dead"):
        expect(page.locator(button)).to_be_disabled()
    expect(page.locator("#state-title")).to_have_text(LIVE_STATES)
    shot(page, "status-read-only")
    page.goto(f"{stack.agent.url}/settings")
    expect(page.locator("#save")).to_be_disabled()
    expect(page.locator(field(page, "sender.interval_s"))).to_be_disabled()
    shot(page, "settings-read-only")


def test_an_invalid_setting_shows_its_error_and_leaves_the_file(stack: Stack, pages: Pages) -> None:
    pages.allowed.append("status of 422")  # the refused save itself
    page = pages.open(stack.unlock_url())
    page.goto(f"{stack.agent.url}/settings")
    before = stack.config.read_bytes()
    batch = page.locator(field(page, "sender.batch_size"))
    batch.fill("ten")
    page.locator(field(page, "server.port")).fill("70000")
    page.locator("#save").click()
    error = page.locator('[id="err-sender.batch_size"]')
    expect(error).to_be_visible()
    expect(error).to_have_text('expected int, got "ten"')
    expect(page.locator('[id="err-server.port"]')).to_have_text("expected int <= 65535, got 70000")
    expect(batch).to_have_attribute("aria-invalid", "true")
    # the first bad field in form order gets the focus
    expect(page.locator(field(page, "server.port"))).to_be_focused()
    expect(page.locator("#save-result")).to_contain_text("The config file was not changed")
    assert stack.config.read_bytes() == before
    error.scroll_into_view_if_needed()
    shot(page, "settings-invalid")
    # fixing one field clears its error at the next save; the other still blocks it
    batch.fill("10")
    page.locator("#save").click()
    expect(error).to_be_hidden()
    expect(page.locator('[id="err-server.port"]')).to_be_visible()
    assert stack.config.read_bytes() == before


def test_a_valid_setting_is_saved_and_changes_the_cadence(stack: Stack, pages: Pages) -> None:
    page = pages.open(stack.unlock_url())
    expect(page.locator("#state-title")).to_have_text(LIVE_STATES)
    fast = page.evaluate(BATCH_TIMES_JS, 3000)
    page.goto(f"{stack.agent.url}/settings")
    token = page.locator(field(page, "server.token"))
    expect(token).to_have_value("")
    page.locator(field(page, "sender.interval_s")).fill("1")
    page.locator(field(page, "sender.batch_size")).fill("100")
    page.locator("#save").click()
    result = page.locator("#save-result")
    expect(result).to_contain_text("Applied now: Send interval (s), Batch size.")
    saved = json.loads(stack.config.read_text())
    assert saved["sender"]["interval_s"] == 1.0
    assert saved["sender"]["batch_size"] == 100
    assert saved["device_id"] == "test-device"
    shot(page, "settings-saved")
    slow = page.evaluate(BATCH_TIMES_JS, 4500)
    # 0.2 s between sends before, 1 s after
    assert len(fast) >= 8, fast
    gaps_before = [b - a for a, b in zip(fast, fast[1:], strict=False)]
    gaps_after = [b - a for a, b in zip(slow, slow[1:], strict=False)]
    assert statistics.median(gaps_before) < 500, gaps_before
    assert 3 <= len(slow) <= 6, slow
    assert 800 <= statistics.median(gaps_after) <= 1600, gaps_after


@pytest.mark.parametrize(
    ("name", "width", "height", "dark", "mobile"),
    [
        ("phone-390x844", 390, 844, False, True),
        ("dark-1366x768", 1366, 768, True, False),
        ("phone-dark-390x844", 390, 844, True, True),
    ],
)
def test_phone_width_and_dark_theme(
    stack: Stack,
    pages: Pages,
    name: str,
    width: int,
    height: int,
    dark: bool,
    mobile: bool,
) -> None:
    page = pages.open(stack.unlock_url(), width=width, height=height, dark=dark, mobile=mobile)
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator("#state-title")).to_have_text(LIVE_STATES)
    wait_until(lambda: int(page.locator("#chart").get_attribute("data-points") or 0) >= 15)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (background == "rgb(14, 17, 22)") is dark
    # nothing sticks out sideways
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate(LINE_PIXELS_JS) > 100
    shot(page, f"status-{name}", full_page=mobile)
    page.goto(f"{stack.agent.url}/settings")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot(page, f"settings-{name}")


def test_pause_resume_and_catching_up_with_rate_and_eta(tmp_path: Path, pages: Pages) -> None:
    collector = start_collector(tmp_path / "collector")
    # every delivery takes 0.2 s, and small batches: catching up lasts long enough to see
    with FaultProxy(collector.port) as proxy:
        proxy.fault = Fault.LATENCY
        proxy.latency_s, proxy.jitter_s = 0.2, 0.0
        config = write_agent_config(
            tmp_path / "agent",
            proxy.port,
            free_port(),
            sender={"batch_size": 3, "catchup_batch_size": 3},
        )
        stack = Stack(tmp_path, collector, start_agent(tmp_path / "agent", config), config)
        try:
            page = pages.open(stack.unlock_url())
            title = page.locator("#state-title")
            expect(title).to_have_text(LIVE_STATES)
            page.locator("#btn-pause").click()
            expect(title).to_have_text("Paused")
            expect(page.locator("#state-detail")).to_contain_text("until you press Resume")
            expect(page.locator("#btn-pause")).to_be_hidden()
            wait_until(lambda: number(page, "#c-pending") >= 60)
            shot(page, "status-paused")
            page.locator("#btn-resume").click()
            expect(title).to_have_text(re.compile(r"^Catching up"))
            expect(page.locator("#state-detail")).to_contain_text("measuring the rate")
            expect(title).to_have_text(re.compile(r"^Catching up at [\d,]+ readings/s$"))
            # 3 readings per delivery, 0.2 s each, at most 2 in flight
            assert number(page, "#state-title") <= 40
            expect(page.locator("#state-detail")).to_have_text(
                re.compile(r"^[\d,]+ queued, about \d+ s to go\.$")
            )
            expect(page.locator("#state")).to_have_attribute("data-tone", "info")
            shot(page, "status-catching-up")
            page.locator("#btn-send-now").click()
            expect(page.locator("#action-result")).to_have_text("Sending now.")
            # closed before the agent stops: a page left open would reconnect to a dead port
            page.close()
        finally:
            stack.stop()


SHOTS = Path("/tmp/pulse-shots")


def test_lowering_the_queue_limit_below_pending_asks_before_dropping(
    tmp_path: Path, pages: Pages
) -> None:
    pages.allowed.append("status of 409")  # the refused first save itself
    # no collector: every reading stays queued, so pending passes the new limit quickly
    config = write_agent_config(tmp_path, free_port(), free_port(), sensor={"interval_s": 0.02})
    agent = start_agent(tmp_path, config)
    try:
        wait_until(lambda: agent_status(agent)["pending"] >= 60)
        url = str(wait_until(lambda: URL_LINE.findall(agent.output()))[-1])
        page = pages.open(url, width=1366, height=900)
        page.goto(f"{agent.url}/settings")
        before = config.read_bytes()
        limit = page.locator(field(page, "storage.max_pending"))
        limit.fill("25")
        low = agent_status(agent)["pending"]
        page.locator("#save").click()
        dialog = page.locator("#drop-dialog")
        expect(dialog).to_be_visible()
        high = agent_status(agent)["pending"]
        confirm = page.get_by_role("button", name=re.compile(r"^Drop [\d,]+ readings$"))
        expect(confirm).to_be_visible()
        count = number(page, "#drop-confirm")
        # the count is the agent's own at the moment it refused the save
        assert low - 25 <= count <= high - 25, (low, count, high)
        expect(page.locator("#drop-title")).to_have_text(f"Drop {count:,} queued readings?")
        expect(page.locator("#drop-text")).to_contain_text(f"Saving deletes the {count:,} oldest")
        expect(page.get_by_role("button", name="Cancel")).to_be_focused()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SHOTS / "max_pending_confirm.png")
        shot(page, "settings-max-pending-confirm")

        page.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#save-result")).to_have_text(
            f"Not saved, and nothing was dropped: the {count:,} readings stay queued "
            "and the config file was not changed."
        )
        expect(page.locator('[id="err-storage.max_pending"]')).to_contain_text(
            "confirm to drop them"
        )
        assert config.read_bytes() == before
        queued = agent_status(agent)["pending"]
        wait_until(lambda: agent_status(agent)["pending"] >= queued + 10)
        assert agent_status(agent)["dropped_total"] == 0

        page.locator("#save").click()
        expect(dialog).to_be_visible()
        confirm.click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#save-result")).to_contain_text("Saved. Applied now: Queue limit.")
        expect(page.locator("#save-result")).to_contain_text("oldest queued readings")
        expect(page.locator('[id="err-storage.max_pending"]')).to_be_hidden()
        assert json.loads(config.read_text())["storage"]["max_pending"] == 25
        wait_until(lambda: agent_status(agent)["dropped_total"] > count)
        assert agent_status(agent)["pending"] <= 25
    finally:
        assert agent.stop() == 0, agent.output()
