"""The tray icon under Xvfb with trayer as the tray host.

In-process (pystray's X backend, so no GTK in the test process): the menu drives the Control
from the agent's event loop thread, a real click opens the dashboard, the icon follows status.
Real agent processes: the X backend's icon follows a real collector going down and coming back;
the GTK backend's menu is screenshotted into test-artifacts/ and its Quit exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageGrab

from agent.autostart import LinuxAutostart
from agent.config import Config, LiveConfig, LoadedConfig
from agent.control import Control
from agent.icon import AMBER, GREEN, GREY, RED, RGB, state_icon
from agent.status import State, StatusHub
from agent.tray import View, tooltip
from tests.harness import (
    Proc,
    agent_status,
    free_port,
    get_json,
    start_collector,
    wait_until,
    write_agent_config,
)
from tests.requirements import missing, require_programs

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
TOOLS = ("Xvfb", "trayer", "xdotool", "xwininfo", "xprop")
COLOURS: dict[str, RGB] = {"green": GREEN, "amber": AMBER, "red": RED, "grey": GREY}
_GEOMETRY = re.compile(r"(\d+)x(\d+)\+-?\d+\+-?\d+\s+\+(-?\d+)\+(-?\d+)")

pytestmark = pytest.mark.tray


# --- no display needed -----------------------------------------------------------------


def test_tooltip_has_state_pending_and_last_send() -> None:
    assert tooltip(View()) == "Pulse: starting\n0 pending, last send never"
    sent = time.mktime((2026, 11, 27, 14, 3, 22, 0, 0, -1))
    text = tooltip(View(State.REJECTED, 1204, sent))
    assert text == "Pulse: rejected by the server\n1204 pending, last send 14:03:22"
    assert all(len(tooltip(View(s, 10**9, sent))) < 128 for s in State)  # Windows' limit


def test_one_colour_per_state() -> None:
    expected = {
        State.SENDING: GREEN,
        State.CATCHING_UP: AMBER,
        State.RETRYING: AMBER,
        State.OFFLINE: RED,
        State.UNAUTHORIZED: RED,
        State.REJECTED: RED,
        State.PAUSED: GREY,
        State.STARTING: GREY,
    }
    for state, colour in expected.items():
        image = state_icon(state)
        assert image.size == (64, 64)
        assert image.getpixel((32, 8)) == (*colour, 255), state
        assert image.getpixel((0, 0))[3] == 0  # transparent corners


# --- the X desktop ---------------------------------------------------------------------


@dataclass
class Box:
    """A window's absolute geometry."""

    x: int
    y: int
    w: int
    h: int

    @property
    def centre(self) -> tuple[int, int]:
        return self.x + self.w // 2, self.y + self.h // 2


@dataclass
class Desktop:
    """An Xvfb display with trayer docked at its top right."""

    display: str
    env: dict[str, str]

    def run(self, *args: str) -> str:
        done = subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout

    def panel(self) -> str | None:
        ids = self.run("xdotool", "search", "--classname", "^panel$").split()
        return ids[0] if ids else None

    def tray_icons(self) -> list[Box]:
        """The icons docked in trayer: its panel's children bigger than a pixel."""
        panel = self.panel()
        if panel is None:
            return []
        boxes = []
        for line in self.run("xwininfo", "-children", "-id", panel).splitlines():
            m = _GEOMETRY.search(line)
            if m and int(m[1]) > 1 and int(m[2]) > 1:
                w, h, x, y = (int(v) for v in m.groups())
                boxes.append(Box(x, y, w, h))
        return boxes

    def docked_icon(self, timeout: float = 8.0) -> Box | None:
        """The one docked icon, or None if nothing docks within `timeout`."""
        try:
            return wait_until(lambda: _single(self.tray_icons()), timeout=timeout)
        except AssertionError:
            return None

    def click(self, x: int, y: int, button: int = 1) -> None:
        self.run("xdotool", "mousemove", str(x), str(y), "click", str(button))

    def screenshot(self) -> Image.Image:
        return ImageGrab.grab(xdisplay=self.display)

    def colour_at(self, box: Box) -> str | None:
        """Which state colour fills most of the box, as drawn on the screen."""
        region = self.screenshot().convert("RGB").crop((box.x, box.y, box.x + box.w, box.y + box.h))
        counts = dict.fromkeys(COLOURS, 0)
        for count, pixel in region.getcolors(box.w * box.h) or []:
            for name, colour in COLOURS.items():
                if sum(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < 40:
                    counts[name] += count
        name, count = max(counts.items(), key=lambda kv: kv[1])
        return name if count >= box.w * box.h // 8 else None

    def popup(self) -> Box | None:
        """The biggest visible top-level window other than the panel: an open menu."""
        found = []
        ids = self.run("xdotool", "search", "--onlyvisible", "--maxdepth", "1", "--name", "")
        for wid in ids.split():
            out = self.run("xdotool", "getwindowgeometry", wid)
            pos = re.search(r"Position: (-?\d+),(-?\d+)", out)
            size = re.search(r"Geometry: (\d+)x(\d+)", out)
            if pos and size and wid != self.panel():
                box = Box(int(pos[1]), int(pos[2]), int(size[1]), int(size[2]))
                if 40 < box.h < 600 and box.w < 600:
                    found.append(box)
        return max(found, key=lambda b: b.w * b.h, default=None)


def _single(boxes: list[Box]) -> Box | None:
    return boxes[0] if len(boxes) == 1 else None


def _start_xvfb() -> tuple[subprocess.Popen[bytes], str, int]:
    """Xvfb on a free display number; it says when it is ready through -displayfd.

    A random high number: other programs (and tests) start and stop Xvfb on the low ones,
    and a server going away on the same number removes our socket. Returns the pipe's read
    end too; keep it open while Xvfb runs, because Xvfb writes to it more than once and dies
    of a closed pipe.
    """
    for _ in range(10):
        number = random.randrange(100, 30000)
        if Path(f"/tmp/.X{number}-lock").exists():
            continue
        read_fd, write_fd = os.pipe()
        xvfb = subprocess.Popen(
            ["Xvfb", f":{number}", "-displayfd", str(write_fd), "-screen", "0", "800x600x24"]
            + ["-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        ready, _, _ = select.select([read_fd], [], [], 15)
        reported = os.read(read_fd, 64).decode().split() if ready else []
        if reported == [str(number)] and xvfb.poll() is None:
            return xvfb, f":{number}", read_fd
        xvfb.kill()
        xvfb.wait()
        os.close(read_fd)
    pytest.fail("could not start Xvfb")


TRAYER = ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "160"]
TRAYER += ["--height", "32", "--transparent", "false", "--expand", "false"]


@contextlib.contextmanager
def _x_desktop() -> Iterator[Desktop | str]:
    """Xvfb and trayer; yields the desktop, or why trayer did not start."""
    xvfb, display, xvfb_pipe = _start_xvfb()
    env = {**os.environ, "DISPLAY": display, "NO_AT_BRIDGE": "1"}
    with tempfile.TemporaryFile() as output:
        trayer = subprocess.Popen(TRAYER, env=env, stdout=output, stderr=subprocess.STDOUT)
        desk = Desktop(display, env)
        try:
            with contextlib.suppress(AssertionError):
                wait_until(lambda: trayer.poll() is not None or desk.panel(), timeout=10)
            if desk.panel():
                yield desk
            else:
                output.seek(0)
                yield f"trayer did not start: {output.read().decode(errors='replace')}"
        finally:
            for proc in (trayer, xvfb):
                proc.terminate()
                proc.wait(10)
            os.close(xvfb_pipe)


@pytest.fixture(scope="module")
def desktop() -> Iterator[Desktop]:
    """Xvfb plus trayer, for this module's tests; started again once if trayer fails."""
    require_programs(*TOOLS)
    for attempt in (1, 2):
        with _x_desktop() as desk:
            if isinstance(desk, Desktop):
                yield desk
                return
            if attempt == 2:
                pytest.fail(desk)


@pytest.fixture(scope="module")
def session_bus(desktop: Desktop) -> Iterator[str]:
    """A private D-Bus session bus, which pystray's GTK backend needs."""
    require_programs("dbus-daemon")
    bus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert bus.stdout is not None
    address = bus.stdout.readline().strip()
    try:
        yield address
    finally:
        bus.terminate()
        bus.wait(10)
        bus.stdout.close()


# --- in process: the tray and a Control on an event loop thread ------------------------


@pytest.fixture(scope="module")
def x_backend(desktop: Desktop) -> Iterator[None]:
    """pystray's X backend in this process, on our display (pystray picks it at import)."""
    saved = {key: os.environ.get(key) for key in ("DISPLAY", "PYSTRAY_BACKEND")}
    os.environ.update(DISPLAY=desktop.display, PYSTRAY_BACKEND="xorg")
    from agent.tray_backends import load_pystray

    assert load_pystray().Icon.__module__ == "pystray._xorg", "pystray was loaded elsewhere"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class Idle:
    """Stands in for the store and the sender: an empty queue, and a wake-up that does nothing."""

    pending = 0

    def send_now(self) -> None:
        pass


class RecordingControl(Control):
    """A real Control that also notes each action the tray asks for, and its thread."""

    def __init__(self, live: LiveConfig, hub: StatusHub, calls: list[tuple[str, str]]):
        idle: Any = Idle()
        super().__init__(live, hub, idle, idle, lambda: self._record("quit"), secret="secret")
        self.calls = calls

    def _record(self, name: str) -> None:
        self.calls.append((name, threading.current_thread().name))

    def send_now(self) -> None:
        self._record("send_now")
        super().send_now()

    def pause(self) -> None:
        self._record("pause")
        super().pause()

    def resume(self) -> None:
        self._record("resume")
        super().resume()


@dataclass
class Agent:
    """A Control on its own event loop thread, as in the real agent."""

    loop: asyncio.AbstractEventLoop
    control: Control
    hub: StatusHub
    calls: list[tuple[str, str]]

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="agent-loop", daemon=True)
    thread.start()
    calls: list[tuple[str, str]] = []
    hub = StatusHub()
    live = LiveConfig(LoadedConfig(Config(), tmp_path / "config.json"))
    control = RecordingControl(live, hub, calls)
    assert control.dashboard_url == "http://127.0.0.1:8765/?token=secret"
    yield Agent(loop, control, hub, calls)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.mark.usefixtures("x_backend")
def test_every_menu_item_calls_its_action(agent: Agent, tmp_path: Path) -> None:
    from agent.tray import Tray

    opened: list[str] = []
    folders: list[Path] = []
    autostart = LinuxAutostart(["/opt/pulse/pulse-agent"], config_home=tmp_path / "xdg")
    tray = Tray(autostart, open_url=opened.append, open_folder=folders.append)
    items = {item.text: item for item in tray.menu.items if item is not tray.menu.SEPARATOR}
    assert list(items) == [
        "Open dashboard",
        "Send now",
        "Pause sending",
        "Start at login",
        "Open logs folder",
        "Quit",
    ]
    assert [t for t, item in items.items() if item.default] == ["Open dashboard"]
    assert items["Pause sending"].checked is False
    assert items["Start at login"].checked is False
    assert items["Send now"].checked is None

    items["Quit"](tray.icon)  # before the agent is there: remembered, passed on at attach
    assert not items["Send now"].enabled  # greyed out until the agent is there
    agent.on_loop(lambda: tray.attach(asyncio.get_running_loop(), agent.control))
    assert all(item.enabled for item in items.values())

    tray.icon()  # the left click: the default item
    items["Open dashboard"](tray.icon)
    assert opened == [agent.control.dashboard_url] * 2
    items["Send now"](tray.icon)
    items["Pause sending"](tray.icon)
    assert items["Pause sending"].checked is True
    items["Open logs folder"](tray.icon)
    assert folders == [agent.control.logs_dir]
    items["Start at login"](tray.icon)
    assert autostart.is_enabled()
    assert items["Start at login"].checked is True
    items["Start at login"](tray.icon)
    assert not autostart.is_enabled()
    wait_until(lambda: len(agent.calls) == 3)
    items["Pause sending"](tray.icon)  # now resumes
    items["Quit"](tray.icon)
    wait_until(lambda: len(agent.calls) == 5)
    # every action ran on the agent's event loop thread, never on the tray's
    assert agent.calls == [
        ("quit", "agent-loop"),
        ("send_now", "agent-loop"),
        ("pause", "agent-loop"),
        ("resume", "agent-loop"),
        ("quit", "agent-loop"),
    ]


def _dock(
    desktop: Desktop, start: Callable[[], Any], stop: Callable[[Any], Any]
) -> tuple[Any, Box]:
    """Start an icon and wait for it to dock; docking under X is sometimes flaky: retry once."""
    wait_until(lambda: not desktop.tray_icons(), timeout=10)
    for attempt in (1, 2):
        handle = start()
        box = desktop.docked_icon()
        if box is not None:
            return handle, box
        stop(handle)
        wait_until(lambda: not desktop.tray_icons(), timeout=10)
        if attempt == 2:
            tree = desktop.run("xwininfo", "-root", "-tree")
            pytest.fail(f"the icon did not dock in trayer, twice; the windows:\n{tree}")
    raise AssertionError("unreachable")


def _assert_in_panel(desktop: Desktop, box: Box) -> None:
    """A real docked icon: a sensible size, inside trayer's 32-pixel panel at the top right."""
    assert 16 <= box.w <= 48, box
    assert 16 <= box.h <= 32, box
    assert box.y >= 0, box
    assert box.y + box.h <= 32, box
    assert box.x >= 800 - 160, box
    assert box.x + box.w <= 800, box


@pytest.mark.usefixtures("x_backend")
def test_click_opens_the_dashboard_and_the_icon_follows_status(
    desktop: Desktop, agent: Agent
) -> None:
    from agent.tray import Tray

    opened: list[str] = []

    def start() -> tuple[Tray, threading.Thread]:
        tray = Tray(None, open_url=opened.append)
        runner = threading.Thread(target=tray.run, name="tray")
        runner.start()
        return tray, runner

    def stop(handle: tuple[Tray, threading.Thread]) -> None:
        handle[0].stop()
        handle[1].join(10)

    (tray, runner), box = _dock(desktop, start, stop)
    try:
        _assert_in_panel(desktop, box)
        assert wait_until(lambda: desktop.colour_at(box) == "grey")  # starting
        agent.on_loop(lambda: tray.attach(asyncio.get_running_loop(), agent.control))
        desktop.click(*box.centre)
        wait_until(lambda: opened == [agent.control.dashboard_url])

        control, hub = agent.control, agent.hub
        steps: list[tuple[Callable[[], object], str]] = [
            (lambda: hub.set_state(State.SENDING), "green"),
            (lambda: hub.set_state(State.RETRYING), "amber"),
            (lambda: hub.set_state(State.OFFLINE), "red"),
            (control.pause, "grey"),
            (control.resume, "green"),
        ]
        for step, colour in steps:
            agent.on_loop(step)
            wait_until(lambda c=colour: desktop.colour_at(box) == c)
        assert tray.icon.title.startswith("Pulse: sending\n")
    finally:
        stop((tray, runner))
    assert not runner.is_alive()


# --- real agent processes --------------------------------------------------------------


def _browser(workdir: Path) -> tuple[str, Path]:
    """A BROWSER command for webbrowser that writes the URL it is given to a file."""
    opened = workdir / "opened.txt"
    script = workdir / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{opened}"\n')
    script.chmod(0o755)
    return f"{script} %s", opened


def start_tray_agent(desktop: Desktop, workdir: Path, config: Path, **env: str) -> Proc:
    """`python -m agent --config …` with its tray on the test display; waits for the dashboard."""
    port = int(json.loads(config.read_text())["dashboard"]["port"])
    browser, _ = _browser(workdir)
    full_env = {
        **desktop.env,
        "BROWSER": browser,
        "XDG_CONFIG_HOME": str(workdir / "xdg"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log = workdir / f"agent-{time.monotonic_ns()}.out"
    cmd = [sys.executable, "-m", "agent", "--config", str(config)]
    with log.open("wb") as out:
        popen = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc(popen, port, workdir, log, cmd)

    def ready() -> bool:
        if popen.poll() is not None:
            raise AssertionError(f"the agent exited:\n{proc.output()}")
        try:
            return bool(get_json(f"{proc.url}/api/health", timeout=1.0))
        except OSError:
            return False

    try:
        wait_until(ready, timeout=30)
    except BaseException:
        proc.kill()
        raise
    return proc


def _tray_agent(
    desktop: Desktop, procs: list[Proc], tmp_path: Path, **env: str
) -> tuple[Proc, Proc, Box, Path]:
    """A collector, and an agent whose icon docked: (collector, agent, icon, opened URLs)."""
    collector = start_collector(tmp_path / "collector")
    procs.append(collector)
    workdir = tmp_path / "agent"
    config = write_agent_config(workdir, collector.port, free_port())

    def start() -> Proc:
        procs.append(start_tray_agent(desktop, workdir, config, **env))
        return procs[-1]

    agent, box = _dock(desktop, start, lambda proc: proc.kill())
    _assert_in_panel(desktop, box)
    return collector, agent, box, _browser(workdir)[1]


@pytest.mark.e2e
def test_real_agent_icon_follows_the_collector(
    desktop: Desktop, procs: list[Proc], tmp_path: Path
) -> None:
    collector, agent, box, opened = _tray_agent(desktop, procs, tmp_path, PYSTRAY_BACKEND="xorg")
    wait_until(lambda: desktop.colour_at(box) == "green")
    # the X backend shows the tooltip as the icon window's name; this test's icon window is
    # the one docked where the icon is (this process's own test icons may still exist)
    windows = desktop.run("xdotool", "search", "--class", "^pulse-agent$").split()
    window = next(
        w
        for w in windows
        if f"Position: {box.x},{box.y}" in desktop.run("xdotool", "getwindowgeometry", w)
    )

    def title() -> str:
        return desktop.run("xprop", "-id", window, "WM_NAME")

    wait_until(lambda: "Pulse: sending" in title())
    assert "pending, last send" in title()

    desktop.click(*box.centre)
    wait_until(opened.exists)
    assert opened.read_text().strip().startswith(f"{agent.url}/")

    collector.kill()
    wait_until(lambda: desktop.colour_at(box) in ("red", "amber"))
    assert agent_status(agent)["state"] in ("offline", "retrying")
    procs.append(start_collector(tmp_path / "collector", collector.port))
    wait_until(lambda: desktop.colour_at(box) == "green")

    assert agent.stop() == 0, agent.output()
    assert "stopped cleanly" in agent.output()
    wait_until(lambda: not desktop.tray_icons())


@pytest.mark.e2e
def test_real_agent_gtk_menu(
    desktop: Desktop, session_bus: str, procs: list[Proc], tmp_path: Path
) -> None:
    """The GTK backend with a real menu: screenshot it, then Quit from it."""
    env = {"PYSTRAY_BACKEND": "gtk", "DBUS_SESSION_BUS_ADDRESS": session_bus}
    _, agent, box, opened = _tray_agent(desktop, procs, tmp_path, **env)
    wait_until(lambda: desktop.colour_at(box) == "green")
    desktop.click(*box.centre)
    wait_until(opened.exists)
    assert opened.read_text().startswith(f"{agent.url}/")

    desktop.click(*box.centre, button=3)
    menu = wait_until(desktop.popup, timeout=10)
    time.sleep(0.3)  # let GTK finish drawing before the screenshot
    ARTIFACTS.mkdir(exist_ok=True)
    shot = desktop.screenshot()
    left = max(0, menu.x - 20)
    shot.crop((left, 0, 800, menu.y + menu.h + 20)).save(ARTIFACTS / "tray-menu-gtk.png")
    assert menu.h > 6 * 20, f"a menu of six items and a separator, got {menu}"

    desktop.click(menu.x + 40, menu.y + menu.h - 12)  # the last item: Quit
    assert agent.popen.wait(20) == 0, agent.output()
    assert "quit requested" in agent.output()
    assert "stopped cleanly" in agent.output()


@pytest.mark.e2e
def test_real_agent_quits_when_the_display_goes(procs: list[Proc], tmp_path: Path) -> None:
    """Logout: the X server goes away, and the agent shuts down cleanly instead of lingering."""
    require_programs("Xvfb", "trayer")
    with _x_desktop() as desk:
        if not isinstance(desk, Desktop):
            missing(desk)
        _, agent, _, _ = _tray_agent(desk, procs, tmp_path, PYSTRAY_BACKEND="xorg")
    assert agent.popen.wait(20) == 0, agent.output()
    assert "the tray icon's loop ended by itself: quitting" in agent.output()
    assert "stopped cleanly" in agent.output()
