"""Browser-test fixtures: Debian's chromium under Playwright, real collector and agent processes."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.harness import (
    ROOT,
    Proc,
    free_port,
    start_agent,
    start_collector,
    wait_until,
    write_agent_config,
)
from tests.requirements import missing

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
URL_LINE = re.compile(r"dashboard: (http://\S+\?token=\S+)")


@dataclass
class Stack:
    """A collector and an agent on loopback, as the user runs them."""

    workdir: Path
    collector: Proc
    agent: Proc
    config: Path

    def unlock_url(self) -> str:
        """The dashboard URL with this run's secret, from the agent's start-up log line."""
        match = wait_until(lambda: URL_LINE.findall(self.agent.output()), timeout=10)
        return str(match[-1])

    def restart_collector(self) -> None:
        """The same port and the same database, as after an outage."""
        self.collector = start_collector(self.workdir / "collector", self.collector.port)

    def restart_agent(self) -> None:
        """The same config; a new secret."""
        self.agent = start_agent(self.workdir / "agent", self.config)

    def stop(self) -> None:
        """Stop both; the agent must exit cleanly."""
        try:
            if self.agent.popen.poll() is None:
                assert self.agent.stop() == 0, self.agent.output()
        finally:
            self.collector.stop()


@dataclass
class Pages:
    """Browser contexts opened by one test, and the console errors they logged."""

    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def open(
        self,
        url: str,
        *,
        width: int = 1366,
        height: int = 768,
        dark: bool = False,
        mobile: bool = False,
    ) -> Page:
        """A fresh context (no cookies) at a size and theme, on `url`."""
        options: dict[str, Any] = {
            "viewport": {"width": width, "height": height},
            "color_scheme": "dark" if dark else "light",
            "locale": "en-US",
            "is_mobile": mobile,
            "has_touch": mobile,
        }
        context = self.browser.new_context(**options)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda msg: self._console(msg.type, msg.text))
        page.on("pageerror", lambda err: self.errors.append(f"pageerror: {err}"))
        page.goto(url)
        return page

    def _console(self, kind: str, text: str) -> None:
        # CSP violations and script errors show up here
        if kind == "error":
            self.errors.append(text)

    def unexpected_errors(self) -> list[str]:
        """Console errors no test said to expect."""
        return [e for e in self.errors if not any(a in e for a in self.allowed)]

    def close(self) -> None:
        """Close every context."""
        for context in self.contexts:
            context.close()


def shot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot under test-artifacts/ (gitignored) and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=path, full_page=full_page)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless chromium per module: Debian's binary, never a downloaded one."""
    executable = shutil.which("chromium")
    if executable is None:
        missing("chromium is not installed (scripts/setup installs it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Pages]:
    """Open pages; fail the test if any logged an unexpected console error."""
    opened = Pages(browser)
    yield opened
    opened.close()
    assert not opened.unexpected_errors(), opened.unexpected_errors()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A real collector and a real agent with fast intervals."""
    collector = start_collector(tmp_path / "collector")
    config = write_agent_config(tmp_path / "agent", collector.port, free_port())
    try:
        agent = start_agent(tmp_path / "agent", config)
    except BaseException:
        collector.stop()
        raise
    running = Stack(tmp_path, collector, agent, config)
    yield running
    running.stop()
