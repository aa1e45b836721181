"""The alerts page, the rules and channels page and the sign-in page in a real Chromium.

Against a real `python -m collector` on SQLite and on PostgreSQL, with a real webhook
receiver (aiohttp on loopback) and a real SMTP server (aiosmtpd on loopback) as channels.
Readings arrive over HTTP as an agent sends them; the pages must follow without a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Pages, shot
from tests.browser.server_stack import BACKENDS, Batch, Server, heart_rate, now, open_server
from tests.harness import free_port, wait_until
from tests.receivers import Mailbox, Webhook, smtp_server

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

RULE = "High heart rate"
# evaluations this often: a pending alert turns firing within a fraction of a second of for_s
FAST = {"interval_s": 0.2}


class Hook:
    """The webhook receiver, run on an event loop of its own thread (the tests are sync)."""

    def __init__(self) -> None:
        self.webhook = Webhook()

    @property
    def url(self) -> str:
        """The Apprise URL that posts JSON to it."""
        return self.webhook.url

    def texts(self) -> list[str]:
        """Each message's title and body."""
        return self.webhook.texts()

    def wait_for(self, word: str, count: int = 1) -> list[str]:
        """The messages so far, once at least `count` of them hold `word`."""

        def enough() -> list[str]:
            texts = self.texts()
            return texts if sum(word in t for t in texts) >= count else []

        return wait_until(enough)


@pytest.fixture
def hook() -> Iterator[Hook]:
    """A real aiohttp webhook receiver on loopback."""
    receiver = Hook()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        async with receiver.webhook.running():
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the webhook receiver did not start"
    try:
        yield receiver
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@pytest.fixture
def mail() -> Iterator[tuple[Mailbox, str]]:
    """A real SMTP server on loopback, and the mailto:// URL that reaches it."""
    with smtp_server() as found:
        yield found


@contextlib.contextmanager
def collector(
    tmp_path: Path, backend: str, pages: Pages, alerts: dict[str, Any] | None = None
) -> Iterator[Server]:
    """A collector with fast alert evaluations and the given rules and channels.

    The pages close before the collector stops: a live page would log its failed reconnects.
    """
    settings = {"alerts": {**FAST, **(alerts or {})}}
    with open_server(tmp_path / "server", backend, settings) as server:
        try:
            yield server
        finally:
            pages.close()


class Readings:
    """Posts one reading at a time per device, as now, with the next seq."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.seqs: dict[str, int] = {}

    def send(self, device_id: str, *values: float) -> None:
        """POST `values` for `device_id`, received now."""
        first = self.seqs.get(device_id, 0) + 1
        self.seqs[device_id] = first + len(values) - 1
        stamp = now()
        points = [
            (stamp - dt.timedelta(milliseconds=len(values) - i), v) for i, v in enumerate(values)
        ]
        self.server.post(Batch(device_id, points, first_seq=first))


def alert_row(page: Page, device_id: str, rule: str = RULE) -> Locator:
    """The alerts page's row of one alert."""
    return page.locator(f'#alert-rows tr[data-rule="{rule}"][data-device="{device_id}"]')


def api_alert(server: Server, device_id: str, rule: str = RULE) -> dict[str, Any]:
    """One alert as the API shows it."""
    found = [
        a for a in server.get("/api/v1/alerts") if (a["rule"], a["device_id"]) == (rule, device_id)
    ]
    assert len(found) == 1, found
    alert: dict[str, Any] = found[0]
    return alert


def add_channel(page: Page, name: str, urls: list[str]) -> Locator:
    """Create a channel through the rules page's form; its list item."""
    page.click("#new-channel")
    page.fill("#c-name", name)
    page.fill("#c-urls", "\n".join(urls))
    page.click("#channel-save")
    item = page.locator(f'li.channel[data-name="{name}"]')
    expect(item).to_be_visible()
    expect(page.locator("#channel-form")).to_be_hidden()
    return item


def fill_rule(page: Page, **fields: str) -> None:
    """Fill the open rule form: name, device, when, threshold, clear, for_s, repeat_s."""
    ids = {"name": "#r-name", "device": "#r-device", "threshold": "#r-threshold"}
    ids |= {"clear": "#r-clear", "for_s": "#r-for", "repeat_s": "#r-repeat"}
    for key, value in fields.items():
        if key == "when":
            page.select_option("#r-when", value)
        else:
            page.fill(ids[key], value)


def new_rule(page: Page, channels: list[str], **fields: str) -> None:
    """Open the rule form, fill it, tick `channels`, and save."""
    page.click("#new-rule")
    fill_rule(page, **fields)
    for channel in channels:
        page.check(f'#rule-channels input[value="{channel}"]')
    page.click("#rule-save")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rule_made_in_the_ui_fires_and_resolves_live(
    tmp_path: Path, backend: str, pages: Pages, hook: Hook, mail: tuple[Mailbox, str]
) -> None:
    mailbox, mail_url = mail
    with collector(tmp_path, backend, pages) as server:
        rules = pages.open(f"{server.url}/rules")
        expect(rules.locator("#rules-empty")).to_be_visible()
        ops = add_channel(rules, "ops", [hook.url])
        email = add_channel(rules, "email", [mail_url])
        listed = sorted(server.get("/api/v1/channels"), key=lambda c: str(c["name"]))
        assert listed == [
            {"name": "email", "urls": [mail_url]},
            {"name": "ops", "urls": [hook.url]},
        ]

        # the test button reaches both the webhook and the SMTP server
        ops.locator('[data-action="test"]').click()
        expect(ops.locator('[data-k="result"]')).to_have_text(re.compile("Delivered"))
        email.locator('[data-action="test"]').click()
        expect(email.locator('[data-k="result"]')).to_have_text(re.compile("Delivered"))
        assert len(hook.texts()) == 1
        wait_until(lambda: mailbox.messages)

        new_rule(
            rules,
            ["ops"],
            name=RULE,
            device="ward-3",
            when="above",
            threshold="120",
            clear="110",
            for_s="3",
        )
        row = rules.locator(f'#rule-rows tr[data-name="{RULE}"]')
        expect(row).to_contain_text("ward-3")
        expect(row.locator('[data-k="condition"]')).to_have_text("value > 120, clears at 110")
        (saved,) = server.get("/api/v1/rules")
        assert saved["name"] == RULE
        assert saved["device"] == "ward-3"
        assert saved["when"] == "above"
        assert (saved["threshold"], saved["clear"], saved["for_s"]) == (120, 110, 3)
        assert saved["channels"] == ["ops"]
        expect(ops.locator('[data-k="used-by"]')).to_have_text(f"Used by {RULE}")

        alerts = pages.open(f"{server.url}/alerts")
        expect(alerts.locator("#conn")).to_have_text("live")
        expect(alerts.locator("#alerts-empty")).to_be_visible()
        alerts.evaluate("() => { window.notReloaded = true; }")
        readings = Readings(server)
        readings.send("ward-7", 150)  # another device: the rule watches ward-3 only
        readings.send("ward-3", 125, 131)
        row = alert_row(alerts, "ward-3")
        expect(row.locator('[data-k="state"]')).to_have_text("pending")
        expect(row.locator('[data-k="value"]')).to_have_text("131")
        expect(row.locator('[data-k="state"]')).to_have_text("firing")
        expect(alerts.locator("#n-firing")).to_have_text("1")
        (firing,) = hook.wait_for("firing")[1:]
        assert RULE in firing
        assert "ward-3" in firing

        readings.send("ward-3", 115)  # between clear and threshold: still firing
        wait_until(lambda: api_alert(server, "ward-3")["value"] == 115)
        assert api_alert(server, "ward-3")["state"] == "firing"
        expect(row.locator('[data-k="state"]')).to_have_text("firing")
        readings.send("ward-3", 98)
        expect(row.locator('[data-k="state"]')).to_have_text("resolved")
        expect(row.locator('[data-k="value"]')).to_have_text("98")
        resolved = hook.wait_for("resolved")[-1]
        assert RULE in resolved
        assert "ward-3" in resolved
        assert alert_row(alerts, "ward-7").count() == 0

        # the history, newest first
        history = alerts.locator("#history-rows tr")
        expect(history.first).to_have_attribute("data-state", "resolved")
        states = [s.lower() for s in history.locator('[data-k="state"]').all_inner_texts()]
        assert states[:3] == ["resolved", "firing", "pending"], states
        assert alerts.evaluate("() => window.notReloaded") is True
        assert len([t for t in hook.texts() if "firing" in t]) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_acknowledge_and_silence_from_the_alerts_page(
    tmp_path: Path, backend: str, pages: Pages, hook: Hook
) -> None:
    rules = [
        {"name": RULE, "when": "above", "threshold": 120, "clear": 110, "channels": ["ops"]},
        {"name": "Low heart rate", "when": "below", "threshold": 40, "for_s": 3600},
    ]
    with collector(
        tmp_path, backend, pages, {"channels": {"ops": [hook.url]}, "rules": rules}
    ) as server:
        readings = Readings(server)
        readings.send("ward-5", 140)
        page = pages.open(f"{server.url}/alerts")
        expect(alert_row(page, "ward-5").locator('[data-k="state"]')).to_have_text("firing")
        readings.send("ward-5", 90)
        expect(alert_row(page, "ward-5").locator('[data-k="state"]')).to_have_text("resolved")
        readings.send("ward-9", 35)
        readings.send("ward-3", 130)
        readings.send("ward-7", 128)
        expect(page.locator("#n-firing")).to_have_text("2")
        expect(page.locator("#n-pending")).to_have_text("1")

        # firing first, then pending, then resolved
        order = page.locator("#alert-rows tr").evaluate_all(
            "rows => rows.map(r => r.dataset.state + ' ' + r.dataset.device)"
        )
        assert [o.split()[0] for o in order] == ["firing", "firing", "pending", "resolved"], order
        assert order[2:] == ["pending ward-9", "resolved ward-5"], order

        ward3 = alert_row(page, "ward-3")
        ward3.locator('[data-action="ack"]').click()
        expect(ward3.locator('[data-k="ack"]')).to_be_visible()
        expect(ward3.locator('[data-action="ack"]')).to_be_hidden()
        assert api_alert(server, "ward-3")["acknowledged"] is True
        assert api_alert(server, "ward-7")["acknowledged"] is False

        ward7 = alert_row(page, "ward-7")
        before = dt.datetime.now(dt.UTC)
        ward7.locator("summary").click()
        ward7.get_by_role("button", name="1 h", exact=True).click()
        expect(ward7.locator('[data-k="silenced"]')).to_contain_text("silenced until")
        expect(ward7.locator('[data-action="unsilence"]')).to_be_visible()
        until = dt.datetime.fromisoformat(api_alert(server, "ward-7")["silenced_until"])
        assert before + dt.timedelta(minutes=59) < until < before + dt.timedelta(minutes=62)
        expect(page.locator("#action-result")).to_contain_text("Silenced for 1 h")

        # a custom silence, in minutes
        ward3.locator("summary").click()
        ward3.locator('input[name="minutes"]').fill("45")
        ward3.locator(".custom-silence button").click()
        expect(ward3.locator('[data-k="silenced"]')).to_be_visible()
        until = dt.datetime.fromisoformat(api_alert(server, "ward-3")["silenced_until"])
        assert before + dt.timedelta(minutes=44) < until < before + dt.timedelta(minutes=47)
        expect(ward3.locator("details.menu")).not_to_have_attribute("open", "")

        ward7.locator('[data-action="unsilence"]').click()
        expect(ward7.locator('[data-k="silenced"]')).to_be_hidden()
        lifted = api_alert(server, "ward-7")["silenced_until"]
        assert lifted is None or dt.datetime.fromisoformat(lifted) <= dt.datetime.now(dt.UTC)

        # the filter form narrows the list; the device narrows the history too
        page.select_option('select[name="state"]', "firing")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"state=firing"))
        expect(page.locator("#alert-rows tr")).to_have_count(2)
        expect(page.locator("#n-pending")).to_have_text("1")  # the counts cover every state
        page.locator("#tally a.state-pending").click()
        expect(page.locator("#alert-rows tr")).to_have_count(1)
        expect(page.locator('select[name="state"]')).to_have_value("pending")
        page.select_option('select[name="state"]', "")
        page.fill('input[name="device_id"]', "ward-9")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#alert-rows tr")).to_have_count(1)
        expect(page.locator("#history-rows tr")).to_have_count(1)
        expect(page.locator('#history-rows [data-k="device"]')).to_have_text("ward-9")
        pages.allowed.append("400")  # Chromium logs the page's status
        response = page.goto(f"{server.url}/alerts?state=burning")
        assert response is not None
        assert response.status == 400
        expect(page.locator("#filter-problem")).to_contain_text("state")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rules_page_names_each_problem_beside_its_field(
    tmp_path: Path, backend: str, pages: Pages, hook: Hook
) -> None:
    # the API's answers to the bad rule and the used channel, as Chromium logs them
    pages.allowed += ["400", "409"]
    with collector(tmp_path, backend, pages) as server:
        page = pages.open(f"{server.url}/rules")
        ops = add_channel(page, "ops", [hook.url])

        # above without a threshold: the API's problem lands beside Threshold
        new_rule(page, ["ops"], name="Too fast", when="above", for_s="30")
        error = page.locator('[data-error-for="threshold"]')
        expect(error).to_contain_text("required")
        expect(page.locator('.field[data-key="threshold"]')).to_have_attribute(
            "data-invalid", "true"
        )
        expect(page.locator('#rule-form [data-error-for="name"]')).to_be_hidden()
        assert server.get("/api/v1/rules") == []

        # a clear value on the wrong side of the threshold
        fill_rule(page, threshold="120", clear="130")
        page.click("#rule-save")
        expect(page.locator('[data-error-for="clear"]')).to_contain_text("threshold")
        expect(error).to_be_hidden()

        fill_rule(page, clear="110")
        page.click("#rule-save")
        expect(page.locator("#rule-form")).to_be_hidden()
        expect(page.locator('#rule-rows tr[data-name="Too fast"]')).to_be_visible()

        # silent hides the value fields; editing keeps the rule's values
        page.locator('#rule-rows tr[data-name="Too fast"] [data-action="edit"]').click()
        expect(page.locator("#r-threshold")).to_have_value("120")
        page.select_option("#r-when", "silent")
        expect(page.locator("#r-threshold")).to_be_hidden()
        fill_rule(page, name="Quiet", for_s="300", repeat_s="3600")
        page.click("#rule-save")
        quiet = page.locator('#rule-rows tr[data-name="Quiet"]')
        expect(quiet.locator('[data-k="condition"]')).to_have_text("no reading received")
        expect(page.locator('#rule-rows tr[data-name="Too fast"]')).to_have_count(0)
        (saved,) = server.get("/api/v1/rules")
        assert saved["name"] == "Quiet"
        assert saved["when"] == "silent"
        assert saved.get("threshold") is None
        assert saved["repeat_s"] == 3600

        # a channel URL Apprise cannot use, named by its line
        page.click("#new-channel")
        page.fill("#c-name", "bad")
        page.fill("#c-urls", f"{hook.url}\nnot a url")
        page.click("#channel-save")
        expect(page.locator('[data-error-for="urls"]')).to_contain_text("line 2")
        page.click("#channel-cancel")

        # a channel that a rule uses cannot go; the page says which rule holds it
        ops.locator('[data-action="delete"]').click()
        expect(page.locator("#confirm")).to_be_visible()
        expect(page.locator("#confirm-text")).to_contain_text("Quiet")
        page.click("#confirm-delete")
        expect(page.locator("#channels-result")).to_contain_text("Quiet")
        assert [c["name"] for c in server.get("/api/v1/channels")] == ["ops"]

        # a test notification that cannot be delivered says why
        dead = add_channel(page, "dead", [f"json://127.0.0.1:{free_port()}/hook"])
        dead.locator('[data-action="test"]').click()
        expect(dead.locator('[data-k="result"]')).to_have_text(re.compile("Not delivered"))

        # cancel keeps the rule; delete removes it
        quiet.locator('[data-action="delete"]').click()
        page.get_by_role("button", name="Cancel").click()
        expect(quiet).to_be_visible()
        quiet.locator('[data-action="delete"]').click()
        page.click("#confirm-delete")
        expect(page.locator("#rules-empty")).to_be_visible()
        assert server.get("/api/v1/rules") == []
        ops.locator('[data-action="delete"]').click()
        page.click("#confirm-delete")
        expect(page.locator('li.channel[data-name="ops"]')).to_have_count(0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sign_in_and_out(tmp_path: Path, backend: str, pages: Pages, hook: Hook) -> None:
    with collector(tmp_path, backend, pages) as server:
        server.create_user("nurse", "correct horse battery")
        page = pages.open(f"{server.url}/alerts")
        expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)alerts$"))
        expect(page.locator("nav")).to_have_count(0)

        page.fill("#username", "nurse")
        page.fill("#password", "wrong password")
        page.click(".signin-button")
        expect(page.locator("#login-error")).to_be_visible()
        expect(page.locator("#username")).to_have_value("nurse")
        expect(page.locator("#password")).to_have_value("")

        page.fill("#password", "correct horse battery")
        page.click(".signin-button")
        expect(page).to_have_url(f"{server.url}/alerts")
        expect(page.locator(".user")).to_have_text("nurse")
        expect(page.locator("#conn")).to_have_text("live")

        # a change through the page carries the session's CSRF token
        page.goto(f"{server.url}/rules")
        add_channel(page, "ops", [hook.url])
        assert page.locator("#channels-result").inner_text().startswith("Created")

        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/login"))
        page.goto(f"{server.url}/rules")
        expect(page).to_have_url(re.compile(r"/login\?next="))
    pages.allowed.append("401")  # the sign-in page answers a wrong password with 401


def test_screenshots(tmp_path: Path, pages: Pages, hook: Hook, mail: tuple[Mailbox, str]) -> None:
    """Light, dark and phone shots of the three pages with a realistic fleet's alerts."""
    _, mail_url = mail
    channels = {"ops": [hook.url], "on-call": [mail_url]}
    rules = [
        {
            "name": RULE,
            "when": "above",
            "threshold": 120,
            "clear": 110,
            "for_s": 0,
            "channels": ["ops", "on-call"],
        },
        {
            "name": "Low heart rate",
            "when": "below",
            "threshold": 45,
            "clear": 50,
            "for_s": 3600,
            "channels": ["ops"],
        },
        {
            "name": "Device silent",
            "when": "silent",
            "for_s": 600,
            "channels": ["ops"],
            "repeat_s": 3600,
        },
        {
            "name": "Bedside monitor offline",
            "device": "ward-2-bed-04",
            "when": "silent",
            "for_s": 2,
            "channels": ["on-call"],
        },
        {
            "name": "Ward 3 tachycardia",
            "device": "ward-3-bed-12",
            "when": "above",
            "threshold": 140,
            "for_s": 0,
            "channels": ["on-call"],
            "repeat_s": 900,
        },
    ]
    with collector(tmp_path, "sqlite", pages, {"channels": channels, "rules": rules}) as server:
        readings = Readings(server)
        readings.send("ward-2-bed-04", 74)
        server.seed([Batch("ward-4-bed-02", heart_rate(now(), 30, seed=3), first_seq=1)])
        readings.seqs["ward-4-bed-02"] = 30
        readings.send("ward-3-bed-12", 152, 149)
        readings.send("icu-bed-03", 128)
        readings.send("ward-4-bed-02", 38)
        readings.send("ward-1-bed-07", 133)
        wait_until(lambda: server.get("/api/v1/alerts?device_id=ward-1-bed-07"))
        readings.send("ward-1-bed-07", 104)
        readings.send("ward-5-bed-01", 70)
        wait_until(lambda: server.get("/api/v1/alerts?state=resolved"))
        wait_until(lambda: len(server.get("/api/v1/alerts")) >= 6)
        page = pages.open(f"{server.url}/alerts")
        alert_row(page, "icu-bed-03").locator('[data-action="ack"]').click()
        row = alert_row(page, "ward-3-bed-12", "Ward 3 tachycardia")
        row.locator("summary").click()
        row.get_by_role("button", name="8 h", exact=True).click()
        expect(row.locator('[data-k="silenced"]')).to_be_visible()
        page.locator("#action-result").evaluate("el => { el.textContent = ''; }")
        out: list[Path] = []
        for suffix, options in (
            ("", {}),
            ("-dark", {"dark": True}),
            ("-phone", {"width": 390, "height": 844, "mobile": True}),
        ):
            alerts = pages.open(f"{server.url}/alerts", **options)
            expect(alerts.locator("#alerts")).not_to_have_attribute("data-count", "0")
            expect(alerts.locator("#conn")).to_have_text("live")
            if not suffix:
                # the silence menu open on the pending alert
                alert_row(alerts, "ward-4-bed-02", "Low heart rate").locator("summary").click()
            out.append(shot(alerts, f"server-alerts{suffix}", full_page=True))
            rules_page = pages.open(f"{server.url}/rules", **options)
            expect(rules_page.locator("#rules")).to_have_attribute("data-count", "5")
            rules_page.locator('li.channel[data-name="ops"] [data-action="test"]').click()
            expect(
                rules_page.locator('li.channel[data-name="ops"] [data-k="result"]')
            ).to_contain_text("Delivered")
            rules_page.locator(
                '#rule-rows tr[data-name="High heart rate"] [data-action="edit"]'
            ).click()
            rules_page.evaluate("() => { document.activeElement.blur(); window.scrollTo(0, 0); }")
            rules_page.mouse.move(0, 0)  # no row under a leftover hover
            out.append(shot(rules_page, f"server-rules{suffix}", full_page=True))
        assert all(p.stat().st_size > 10_000 for p in out)
    with collector(tmp_path / "login", "sqlite", pages) as server:
        server.create_user("nurse", "correct horse battery")
        login = pages.open(f"{server.url}/alerts")
        login.fill("#username", "nurse")
        login.fill("#password", "not it")
        login.click(".signin-button")
        expect(login.locator("#login-error")).to_be_visible()
        shot(login, "server-login")
        for suffix, options in (
            ("-dark", {"dark": True}),
            ("-phone", {"width": 390, "height": 844, "mobile": True}),
        ):
            other = pages.open(f"{server.url}/login", **options)
            shot(other, f"server-login{suffix}")
    pages.allowed.append("401")
