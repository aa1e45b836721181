"""The server's devices overview and device page in Chromium, on SQLite and on PostgreSQL.

A real collector process gets readings over HTTP as an agent sends them; the pages must show
them, follow new batches over the websocket without a reload, page and search 10,000
devices, and never ask /api/v1/series for more points than the chart has pixels.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Locator, Page, Request, Route, WebSocketRoute, expect

from tests.browser.conftest import Pages, shot
from tests.browser.server_stack import BACKENDS, Batch, Server, heart_rate, now, open_server

logger = logging.getLogger(__name__)

# the device page's chart note once a load is in: "8,640 readings in 700 points of 2 min"
LOADED = re.compile(r"readings? in [\d,]+ points? of ")

HOT_RULE = {
    "name": "Very high heart rate",
    "device": "hot-device",
    "when": "above",
    "threshold": 150,
    "for_s": 0,
}


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A collector on SQLite, then on PostgreSQL, evaluating alerts every 0.2 s."""
    config = {"alerts": {"interval_s": 0.2, "rules": [HOT_RULE]}}
    with open_server(tmp_path, request.param, config) as running:
        yield running


def row(page: Page, device_id: str) -> Any:
    """The overview row of a device."""
    return page.locator(f'tr[data-device="{device_id}"]')


def watching(page: Page) -> Locator:
    """The element that says which devices the server watches for the page (common.js)."""
    return page.locator("body[data-live-watching]")


def as_js(devices: list[str]) -> str:
    """A list as the page's JSON.stringify writes it."""
    return json.dumps(devices, separators=(",", ":"))


def open_overview_held(page: Page, url: str, shown: list[str]) -> list[Route]:
    """Open the overview at `url` with every fetch but its first held; the held routes.

    The page shows the rows of its first fetch and sends their ids; the server answers
    "watching" once they are in force, and the page fetches again. That refetch is held (as
    is any later one), so from the answer on a new value can only come over the websocket.
    """
    held: list[Route] = []
    passed: list[Route] = []

    def first_only(route: Route) -> None:
        if passed:
            held.append(route)
        else:
            passed.append(route)
            route.continue_()

    page.route("**/api/v1/overview?*", first_only)
    page.goto(url)
    expect(watching(page)).to_have_attribute("data-live-watching", as_js(shown))
    return held


def post_live(server: Server, page: Page, device: str, value: float, seq: int) -> None:
    """POST `value` as seq `seq` once; the row's sparkline must show it."""
    ack = server.post(Batch(device, [(now(), value)], first_seq=seq))
    assert ack["accepted"] == 1
    expect(row(page, device).locator("svg.sparkline")).to_have_attribute(
        "data-last", str(int(value))
    )


def wait_until_watched(page: Page, device: str) -> None:
    """Wait until the device page has refetched at the server's "watching" answer.

    Its first loads go out with the page; the answer comes later and loads the chart again
    (a series request, and a redraw), so a test that counts either waits for this first.
    """
    expect(watching(page)).to_have_attribute("data-live-watching", as_js([device]))
    # the answer's load had begun when the attribute was set: "loading…" until it is in
    expect(page.locator("#chart-note")).to_have_text(LOADED)


def series_requests(page: Page) -> list[dict[str, str]]:
    """Every /api/v1/series request the page makes from now on, as its query parameters."""
    seen: list[dict[str, str]] = []

    def record(request: Request) -> None:
        if "/api/v1/series?" in request.url:
            query = parse_qs(urlsplit(request.url).query)
            seen.append({key: values[0] for key, values in query.items()})

    page.on("request", record)
    return seen


def span_s(query: dict[str, str]) -> float:
    """The seconds between a series request's from and to."""
    start = dt.datetime.fromisoformat(query["from"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(query["to"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def plot_width(page: Page) -> int:
    """The chart canvas's width in CSS pixels: no request may ask for more points."""
    return int(page.evaluate("document.querySelector('#chart canvas').clientWidth"))


# ---------- the overview ----------


def test_overview_lists_posted_devices_with_their_values(server: Server, pages: Pages) -> None:
    end = now()
    # 50 readings a second apart, all in the last 5 minutes: 10 a minute
    server.post(Batch("alpha", heart_rate(end, 50, 1.0, seed=1)), hub="home-hub")
    # seqs 1-40 and 61-100: 20 missing
    gappy = heart_rate(end, 100, 2.0, seed=2)
    server.post(Batch("bravo", gappy[:40]))
    server.post(Batch("bravo", gappy[60:], first_seq=61))
    server.post(Batch("hot-device", [(end, 170.0)]))

    page = pages.open(server.url + "/")
    expect(page.locator("tr[data-device]")).to_have_count(3)
    expect(page.locator(".pager")).to_be_hidden()
    assert page.locator("tr[data-device]").evaluate_all(
        "rows => rows.map(r => r.dataset.device)"
    ) == ["alpha", "bravo", "hot-device"]
    expect(page.locator("#summary")).to_have_text("3 devices")

    alpha = row(page, "alpha")
    expect(alpha.locator("td.state")).to_have_text("Live")
    expect(alpha.locator("td.rate")).to_have_text("10")
    expect(alpha.locator("td.missing")).to_have_text("0")
    expect(alpha.locator("a.device-link")).to_have_attribute("href", "/devices/alpha")
    # a relayed device names its hub; one that sends for itself names none
    expect(alpha.locator(".via")).to_have_text("via home-hub")
    expect(row(page, "bravo").locator(".via")).to_have_text("")
    shot(page, f"server-overview-hub-{server.backend}")
    spark = alpha.locator("svg.sparkline")
    assert int(spark.get_attribute("data-points") or 0) >= 1
    assert alpha.locator("path.band").get_attribute("d")
    assert alpha.locator("path.line").get_attribute("d")

    expect(row(page, "bravo").locator("td.missing")).to_have_text("20")
    expect(row(page, "bravo").locator("td.missing")).to_have_class(re.compile(r"\bwarn\b"))

    # the rule fires within a few evaluations; the "alerts" event makes the page refetch
    badge = row(page, "hot-device").locator("td.alerts a.badge")
    expect(badge).to_have_text("1")
    expect(badge).to_have_attribute("href", "/alerts?device_id=hot-device")
    expect(row(page, "alpha").locator("td.alerts")).to_have_text("0")


def test_a_posted_batch_updates_its_row_without_a_reload(server: Server, pages: Pages) -> None:
    end = now() - dt.timedelta(minutes=10)
    server.post(Batch("watched", heart_rate(end, 30, 2.0, seed=3)))
    server.post(Batch("other", heart_rate(end, 30, 2.0, seed=4)))
    page = pages.open("about:blank")
    # the refetch at the server's "watching" answer, and any after it, are held
    open_overview_held(page, server.url + "/", ["other", "watched"])
    seen = row(page, "watched").locator("td.last-seen")
    expect(seen).to_have_attribute("data-last-seen", re.compile(r"."))
    before = seen.get_attribute("data-last-seen")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    page.evaluate("window.stillHere = true")

    post_live(server, page, "watched", 123.0, 31)
    expect(seen).not_to_have_attribute("data-last-seen", before or "")
    assert page.evaluate("window.stillHere") is True
    # a batch of another device leaves this row alone
    assert row(page, "other").locator("svg.sparkline").get_attribute("data-last") != "123"
    page.unroute("**/api/v1/overview?*")


NONE_WATCHED = {"type": "watching", "devices": []}


class HeldFilter:
    """Between the overview and its websocket's server end, the race that "watching" closes.

    The server is told to watch no device as soon as the socket opens (as a page's first
    filter does), and the page's filter that names `device` is held until that is in force
    and a batch of `device` is stored. The batch is then in neither the page's first fetch
    nor the websocket.
    """

    def __init__(self, server: Server, device: str, value: float, seq: int) -> None:
        self.server = server
        self.batch = Batch(device, [(now(), value)], first_seq=seq)
        self.device = device
        self.held: list[str | bytes] = []
        self.none_in_force = False
        self.posted = False
        self.to_page: list[str] = []

    def route(self, ws: WebSocketRoute) -> None:
        """The page's websocket: relayed to the server, but for the filter held."""
        to_server = ws.connect_to_server()
        # the page may send its rows' ids first, if its fetch was in before the socket opened
        to_server.send(json.dumps({"devices": []}))

        def from_page(message: str | bytes) -> None:
            if self.posted or f'"{self.device}"' not in str(message):
                to_server.send(message)
                return
            self.held.append(message)
            self.go_on(to_server)

        def from_server(message: str | bytes) -> None:
            if not self.none_in_force and json.loads(message) == NONE_WATCHED:
                # the answer to the filter above (the page's own comes after it): not the page's
                self.none_in_force = True
                self.go_on(to_server)
                return
            self.to_page.append(str(message))
            ws.send(message)

        ws.on_message(from_page)
        to_server.on_message(from_server)

    def go_on(self, to_server: WebSocketRoute) -> None:
        """Once the page has sent its filter and the server watches nothing: store, send it."""
        if self.posted or not self.held or not self.none_in_force:
            return
        # the page sends the filter after its first fetch is in: this batch is not in it
        self.server.post(self.batch)
        self.posted = True
        for message in self.held:
            to_server.send(message)


def test_a_batch_stored_before_the_server_reads_the_filter_shows_all_the_same(
    server: Server, pages: Pages
) -> None:
    server.post(Batch("watched", heart_rate(now() - dt.timedelta(minutes=10), 30, 2.0, seed=3)))
    relay = HeldFilter(server, "watched", 117.0, 31)
    page = pages.open("about:blank")
    page.route_web_socket("**/api/v1/live", relay.route)
    page.goto(server.url + "/")
    # only a fetch after the server's answer has it: the page's refetch at the answer
    spark = row(page, "watched").locator("svg.sparkline")
    expect(spark).to_have_attribute("data-last", "117")
    expect(watching(page)).to_have_attribute("data-live-watching", as_js(["watched"]))
    assert relay.posted
    # it did not come over the websocket, which is what made it a race
    assert not [m for m in relay.to_page if '"batch"' in m], relay.to_page


def test_a_device_not_heard_from_shows_silent_since_when(server: Server, pages: Pages) -> None:
    """A device the server no longer calls live reads "Silent since HH:MM" (its last receipt)."""
    server.post(Batch("quiet", heart_rate(now(), 5, 1.0, seed=4)))
    server.post(Batch("chatty", heart_rate(now(), 5, 1.0, seed=5)))
    # the server calls a device live up to 120 s after its last receipt, by its own clock:
    # rather than wait that long, its answer is rewritten to a receipt 5 minutes before `now`
    silent_since: list[dt.datetime] = []

    def five_minutes_old(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        server_now = dt.datetime.fromisoformat(body["now"].replace("Z", "+00:00"))
        for device in body["devices"]:
            if device["device_id"] == "quiet":
                seen = server_now - dt.timedelta(minutes=5)
                device["last_seen"] = seen.isoformat()
                device["live"] = False
                silent_since.append(seen)
        route.fulfill(response=response, json=body)

    page = pages.open("about:blank")
    page.route("**/api/v1/overview?*", five_minutes_old)
    page.goto(server.url + "/")
    expect(row(page, "chatty").locator("td").nth(1)).to_have_text(re.compile("^Live"))
    state = row(page, "quiet").locator("td").nth(1)
    expect(state).to_have_text(re.compile(r"^Silent since "))
    offset_min = page.evaluate("new Date().getTimezoneOffset()")
    local = silent_since[-1] - dt.timedelta(minutes=offset_min)
    # "Silent since 14:03", or with the date when that was yesterday
    expect(state).to_have_text(re.compile(rf"^Silent since (.+, )?{local:%H:%M}"))
    expect(row(page, "quiet").locator("td").nth(2)).to_have_text(re.compile("^5 min"))


def test_search_and_paging_with_10000_devices(server: Server, pages: Pages) -> None:
    end = now()
    # one small batch per device, many at once over HTTP, as a fleet of agents would send
    seconds = server.seed(
        Batch(f"dev-{i:05d}", [(end - dt.timedelta(seconds=30), 70.0 + i % 20), (end, 72.0)])
        for i in range(10_000)
    )
    logger.warning("seeded 10,000 devices on %s in %.1f s", server.backend, seconds)

    page = pages.open(server.url + "/")
    expect(page.locator("#range")).to_have_text("1–50 of 10,000")
    expect(page.locator("tr[data-device]")).to_have_count(50)
    expect(page.locator("tr[data-device]").first).to_have_attribute("data-device", "dev-00000")
    expect(page.locator("#prev")).to_be_disabled()

    page.locator("#next").click()
    expect(page.locator("#range")).to_have_text("51–100 of 10,000")
    expect(page.locator("tr[data-device]").first).to_have_attribute("data-device", "dev-00050")
    assert "page=2" in page.url
    page.go_back()
    expect(page.locator("#range")).to_have_text("1–50 of 10,000")

    page.locator("#q").fill("DEV-0999")  # case-insensitive
    expect(page.locator("#summary")).to_have_text("10 devices matching “DEV-0999”")
    expect(page.locator("tr[data-device]")).to_have_count(10)
    expect(page.locator("tr[data-device]").last).to_have_attribute("data-device", "dev-09999")
    expect(page.locator(".pager")).to_be_hidden()
    assert "q=DEV-0999" in page.url

    # the URL can be shared: a fresh page opens on the same search
    shared = pages.open(page.url)
    expect(shared.locator("#q")).to_have_value("DEV-0999")
    expect(shared.locator("tr[data-device]")).to_have_count(10)

    last = pages.open(server.url + "/?page=200")
    expect(last.locator("#range")).to_have_text("9,951–10,000 of 10,000")
    expect(last.locator("#next")).to_be_disabled()

    last.locator("#q").fill("no-such-device")
    expect(last.locator("#no-match")).to_be_visible()
    expect(last.locator("#no-match")).to_contain_text("no-such-device")
    assert "page=" not in last.url


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[Server]:
    """A collector on SQLite that holds nothing yet."""
    # a fixture, so that it outlives the test's pages (and their websockets)
    with open_server(tmp_path, "sqlite") as running:
        yield running


def test_empty_overview_says_how_to_point_an_agent_here(empty_server: Server, pages: Pages) -> None:
    page = pages.open(empty_server.url + "/")
    empty = page.locator("#empty")
    expect(empty).to_be_visible()
    expect(empty).to_contain_text("No devices yet")
    expect(empty.locator("pre")).to_have_text(
        f'"server": {{"host": "127.0.0.1", "port": {empty_server.proc.port}}}'
    )
    expect(page.locator(".open-notice")).to_contain_text("python -m collector create-user NAME")


# ---------- the device page ----------


def test_device_chart_asks_for_no_more_points_than_pixels(server: Server, pages: Pages) -> None:
    end = now()
    day = heart_rate(end, 8640, 10.0, seed=5)
    server.post(Batch("ward-7", day[:5000]))
    server.post(Batch("ward-7", day[5000:], first_seq=5001))

    page = pages.open(server.url + "/devices/ward-7?range=24h")
    requests = series_requests(page)
    page.reload()
    wait_until_watched(page, "ward-7")
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-received", re.compile(r"^[1-9]"))
    width = plot_width(page)
    first = requests[-1]
    assert first["device_id"] == "ward-7"
    assert 0 < int(first["points"]) <= width
    assert span_s(first) == pytest.approx(86400, abs=1)
    # 8,640 readings into at most `width` points: several readings each, so a band shows
    assert int(chart.get_attribute("data-received") or 0) <= int(first["points"])
    assert band_pixels(page) > 1000
    expect(page.locator("#count")).to_have_text("8,640")

    for label, seconds in (("1 h", 3600), ("7 d", 7 * 86400), ("Live", 600)):
        count = len(requests)
        page.get_by_role("button", name=label, exact=True).click()
        expect(page.get_by_role("button", name=label, exact=True)).to_have_attribute(
            "aria-pressed", "true"
        )
        assert wait_for_requests(page, requests, count + 1)[-1]["points"]
        assert span_s(requests[-1]) == pytest.approx(seconds, abs=1)
        assert int(requests[-1]["points"]) <= plot_width(page)

    # a narrower window gets a narrower chart and, with it, fewer points
    count = len(requests)
    page.set_viewport_size({"width": 700, "height": 800})
    wait_for_requests(page, requests, count + 1)
    assert int(requests[-1]["points"]) <= plot_width(page) < width


def band_pixels(page: Page) -> int:
    """Pixels of the chart painted with exactly the band's translucent fill (--chart-band).

    The grid lines and the lines' anti-aliased edges mostly have other alphas: without the
    band, or with no bucket holding more than one value, this stays in the low hundreds.
    """
    return int(
        page.evaluate(
            """() => {
              const css = getComputedStyle(document.documentElement);
              const band = css.getPropertyValue('--chart-band');
              const alpha = Math.round(parseFloat(band.split(',')[3]) * 255);
              const c = document.querySelector('#chart canvas');
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 3; i < d.length; i += 4) if (Math.abs(d[i] - alpha) <= 1) n++;
              return n;
            }"""
        )
    )


def wait_for_requests(page: Page, requests: list[dict[str, str]], count: int) -> Any:
    """Wait (pumping Playwright's events) until `count` series requests were seen."""
    for _ in range(200):
        if len(requests) >= count:
            return requests
        page.wait_for_timeout(50)
    raise AssertionError(f"expected {count} series requests, saw {requests}")


def test_custom_range_and_live_mode(server: Server, pages: Pages) -> None:
    end = now()
    server.post(Batch("runner", heart_rate(end, 120, 1.0, seed=6)))
    page = pages.open(server.url + "/devices/runner")
    requests = series_requests(page)
    wait_until_watched(page, "runner")
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-received", re.compile(r"^[1-9]"))

    # a reading a second, in buckets of half a second: one value each, so no band
    assert band_pixels(page) < 400
    # live mode: a batch over HTTP lands on the chart without another series request
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    points = int(chart.get_attribute("data-points") or 0)
    asked = len(requests)
    server.post(Batch("runner", [(now(), 140.0)], first_seq=121))
    expect(chart).to_have_attribute("data-points", str(points + 1))
    expect(page.locator("#count")).to_have_text("121")
    assert len(requests) == asked

    page.get_by_role("button", name="Custom").click()
    start = end - dt.timedelta(hours=2)
    page.locator("#from").fill(local_input(start))
    page.locator("#to").fill(local_input(end))
    count = len(requests)
    page.get_by_role("button", name="Show").click()
    wait_for_requests(page, requests, count + 1)
    assert span_s(requests[-1]) == pytest.approx(7200, abs=1)
    assert "from=" in page.url

    # a range that ends before it starts is refused in the page, not sent
    count = len(requests)
    page.locator("#from").fill(local_input(end))
    page.locator("#to").fill(local_input(start))
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#custom-error")).to_be_visible()
    assert len(requests) == count


def local_input(moment: dt.datetime) -> str:
    """A datetime-local input's value for `moment` in the browser's (the machine's) zone."""
    return moment.astimezone().replace(tzinfo=None).isoformat(timespec="seconds")


def test_device_page_shows_streams_gaps_and_alert_history(server: Server, pages: Pages) -> None:
    end = now()
    readings = heart_rate(end, 30, 1.0, seed=7)
    server.post(Batch("hot-device", readings[:10]), hub="boiler-room")
    server.post(Batch("hot-device", readings[:5], stream="s2"))
    # the newest value is above the rule's threshold: it fires, and stays firing
    server.post(Batch("hot-device", [(end, 170.0)], first_seq=15))
    page = pages.open(server.url + "/devices/hot-device")
    s1 = page.locator('#streams tr[data-stream="s1"]')
    expect(s1.locator("td.gaps")).to_have_text("11–14")
    expect(s1.locator("td").nth(4)).to_have_text("4")
    expect(page.locator('#streams tr[data-stream="s2"] td.gaps')).to_have_text("none")
    expect(page.locator("#missing")).to_have_text("4")
    expect(page.locator("#state")).to_have_text("Live")
    expect(page.locator("#hub")).to_have_text("boiler-room")
    # the rule fires: the "alerts" event brings it into the history
    firing = page.locator("#history tr").filter(has=page.locator(".pill", has_text="firing"))
    expect(firing.first).to_contain_text("Very high heart rate")
    expect(page.locator("#open-alerts a.badge")).to_have_text("1")


def test_unknown_device_gets_an_html_404(server: Server, pages: Pages) -> None:
    page = pages.open(server.url + "/")
    pages.allowed.append("404 (Not Found)")
    for name in ("no-such-device", "bad%00id", "x" * 200):
        response = page.goto(f"{server.url}/devices/{name}")
        assert response is not None
        assert response.status == 404
        assert response.headers["content-type"].startswith("text/html")
        expect(page.locator("h1")).to_have_text("Not found")
        expect(page.locator(".error-card")).to_contain_text("No device is called")


# ---------- screenshots for docs/server-ui.md (test-artifacts/, looked at by a person) ----------

SCREENS: dict[str, dict[str, Any]] = {
    "light": {},
    "dark": {"dark": True},
    "phone": {"width": 390, "height": 844, "mobile": True},
}


def seed_demo(server: Server) -> None:
    """A small, realistic fleet: a day of one ward monitor, a few wearables, one with gaps."""
    end = now()
    day = heart_rate(end - dt.timedelta(seconds=10), 8640, 10.0, seed=11, base=76)
    server.post(Batch("ward-3-monitor", day[:5000]))
    server.post(Batch("ward-3-monitor", day[5000:], first_seq=5001))
    server.post(Batch("ward-3-monitor", [(end, 168.0)], first_seq=8641))
    server.post(Batch("bedroom-watch", heart_rate(end, 1800, 2.0, seed=12, base=58)))
    hour = heart_rate(end, 360, 10.0, seed=13, base=88)
    server.post(Batch("garage-sensor", hour[:150]))
    server.post(Batch("garage-sensor", hour[190:], first_seq=191))
    for n, name in enumerate(("kitchen-hr-01", "living-room-band", "office-chest-strap")):
        server.post(Batch(name, heart_rate(end, 720, 5.0, seed=20 + n, base=66 + 6 * n)))


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[Server]:
    """A collector on SQLite with the demo fleet, and a rule that fires on one of them."""
    rule = {**HOT_RULE, "device": "*"}
    with open_server(
        tmp_path, "sqlite", {"alerts": {"interval_s": 0.2, "rules": [rule]}}
    ) as running:
        seed_demo(running)
        yield running


def test_screenshots(demo_server: Server, pages: Pages) -> None:
    for name, options in SCREENS.items():
        page = pages.open(demo_server.url + "/", **options)
        badge = row(page, "ward-3-monitor").locator("td.alerts a.badge")
        expect(badge).to_have_text("1")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        shot(page, f"server-overview-{name}", full_page=True)
        page.goto(demo_server.url + "/devices/ward-3-monitor?range=24h")
        wait_until_watched(page, "ward-3-monitor")
        expect(page.locator("#chart")).to_have_attribute("data-received", re.compile("^[1-9]"))
        expect(page.locator("#history .pill").first).to_be_visible()
        page.wait_for_timeout(300)  # the chart draws on the next animation frame
        if name != "phone":  # a chart that narrow is mostly the band's edges
            assert band_pixels(page) > 1000
        shot(page, f"server-device-{name}", full_page=True)


def test_pages_with_an_account(server: Server, pages: Pages) -> None:
    server.post(Batch("bedside", heart_rate(now(), 20, 1.0, seed=8)))
    server.create_user("nurse", "correct horse battery")
    page = pages.open(server.url + "/devices/bedside?range=1h")
    # signed out, a page (even of a device that does not exist) is the sign-in page
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#username", "nurse")
    page.fill("#password", "correct horse battery")
    page.click(".signin-button")
    expect(page).to_have_url(f"{server.url}/devices/bedside?range=1h")
    expect(page.locator(".user")).to_have_text("nurse")
    expect(page.locator(".open-notice")).to_have_count(0)
    expect(page.locator("#chart")).to_have_attribute("data-received", re.compile(r"^[1-9]"))

    # the websocket carries the session too: a batch reaches the overview live
    held = open_overview_held(page, server.url + "/", ["bedside"])
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    post_live(server, page, "bedside", 131.0, 21)
    for route in held:
        route.continue_()
    page.unroute("**/api/v1/overview?*")
    shot(page, f"server-overview-signed-in-{server.backend}")

    response = page.goto(server.url + "/devices/nobody")
    assert response is not None
    assert response.status == 404
    pages.allowed.append("404 (Not Found)")
