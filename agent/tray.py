"""Thin pystray adapter: the tray icon, its tooltip and its menu, driving the agent's Control.

Threads: `Tray.run()` blocks the main thread in pystray's loop, and menu actions run there.
They reach the agent only through `call_soon_threadsafe` on the agent's event loop. Status
changes travel the other way through a queue that pystray's setup thread drains, so the event
loop never waits on the tray (pystray's X backend blocks the caller until its loop has redrawn).
`run_with_tray` sets up those two threads. pystray itself and the fixes for its backends are
in agent.tray_backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import operator
import os
import queue
import signal
import subprocess
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import APP_NAME
from agent.autostart import Autostart
from agent.config import LiveConfig
from agent.control import Control
from agent.icon import state_icon
from agent.serve import STOP_SIGNALS, serve
from agent.sources import SourceState
from agent.status import Event, State, Status
from agent.tray_backends import icon_class, load_pystray
from pulse_common.logs import HourlyFileHandler

logger = logging.getLogger(__name__)

STATE_LABELS: dict[State, str] = {
    State.STARTING: "starting",
    State.SENDING: "sending",
    State.CATCHING_UP: "catching up",
    State.RETRYING: "retrying",
    State.OFFLINE: "offline",
    State.UNAUTHORIZED: "unauthorized",
    State.REJECTED: "rejected by the server",
    State.PAUSED: "paused",
}

OpenUrl = Callable[[str], object]
OpenFolder = Callable[[Path], None]


@dataclass(frozen=True)
class View:
    """What the tray shows; a new one is pushed on every change that matters."""

    state: State = State.STARTING
    pending: int = 0
    last_send_at: float | None = None
    paused: bool = False
    attached: bool = False
    # each source's state, with several sources
    sources: tuple[SourceState, ...] = ()


def view_of(status: Status, paused: bool) -> View:
    """The tray's view of the agent's status."""
    sources = tuple(s.state for s in status.sources) if len(status.sources) > 1 else ()
    return View(
        status.state, status.pending, status.last_send_at, paused, attached=True, sources=sources
    )


def _sources_line(states: tuple[SourceState, ...]) -> str:
    """ "3 sources, 2 ok, 1 reconnecting": how many stand where, in SourceState's order."""
    counts = [(states.count(state), state) for state in SourceState]
    parts = [f"{n} {state.value}" for n, state in counts if n]
    return f"{len(states)} sources, " + ", ".join(parts)


def tooltip(view: View) -> str:
    """State, pending count and last send time, short enough for Windows (127 chars).

    With several sources the first line sums them up: "Pulse: 3 sources, 2 ok, 1
    reconnecting · 12 pending".
    """
    last = "never"
    if view.last_send_at is not None:
        last = dt.datetime.fromtimestamp(view.last_send_at).strftime("%H:%M:%S")
    if view.sources:
        return (
            f"Pulse: {_sources_line(view.sources)} · {view.pending} pending\n"
            f"{STATE_LABELS[view.state]}, last send {last}"
        )
    return f"Pulse: {STATE_LABELS[view.state]}\n{view.pending} pending, last send {last}"


def open_folder(path: Path) -> None:
    """Show a folder in the desktop's file manager."""
    if sys.platform == "win32":
        os.startfile(path)
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Tray:
    """The tray icon of one agent: create on the main thread, then `attach` and `run`."""

    def __init__(
        self,
        autostart: Autostart | None = None,
        open_url: OpenUrl = webbrowser.open,
        open_folder: OpenFolder = open_folder,
    ):
        pystray = load_pystray()
        self._autostart = autostart
        self._open_url = open_url
        self._open_folder = open_folder
        self._view = View()
        self._autostart_on = False
        self._updates: queue.SimpleQueue[View | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control: Control | None = None
        self._quit_requested = False
        self._stop_requested = False
        self._loop_ended = False
        self._stopped = threading.Event()
        self._url = ""
        self._logs_dir: Path | None = None
        item = pystray.MenuItem
        self.menu = pystray.Menu(
            item("Open dashboard", self.open_dashboard, default=True, enabled=self._attached),
            item("Send now", self.send_now, enabled=self._attached),
            item(
                "Pause sending",
                self.toggle_pause,
                checked=lambda _: self._view.paused,
                enabled=self._attached,
            ),
            item(
                "Start at login",
                self.toggle_autostart,
                checked=lambda _: self._autostart_on,
                visible=autostart is not None,
            ),
            item("Open logs folder", self.open_logs, enabled=self._attached),
            pystray.Menu.SEPARATOR,
            item("Quit", self.quit),
        )
        self.icon = icon_class()(APP_NAME, state_icon(State.STARTING), tooltip(self._view))
        self.icon.menu = self.menu
        self.icon.pulse_quit = self._quit_and_wait

    @property
    def view(self) -> View:
        """What the icon shows now."""
        return self._view

    def _attached(self, _item: object = None) -> bool:
        return self._control is not None

    # --- the agent's side (event loop thread) -------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop, control: Control) -> Callable[[], None]:
        """Follow the agent's status; call on the event loop. Returns the detach function."""
        self._url = control.dashboard_url
        self._logs_dir = control.logs_dir
        last: list[View] = []

        def on_event(_event: Event | None = None) -> None:
            view = view_of(control.status, control.is_paused)
            if not last or view != last[0]:
                last[:] = [view]
                self._updates.put(view)

        remove = control.add_listener(on_event)
        on_event()
        with self._lock:
            self._loop, self._control = loop, control
            if self._quit_requested:
                loop.call_soon(control.quit)
        return remove

    def stop(self) -> None:
        """End `run()`; call from any thread, also before `run()` has started."""
        self._stop_requested = True
        self._stopped.set()
        self._updates.put(None)

    @property
    def was_stopped(self) -> bool:
        """True once `stop()` was called: `run()` did not end by itself."""
        return self._stop_requested

    # --- the tray's side (main thread and pystray's setup thread) ------------------------

    def run(self) -> None:
        """Show the icon and handle it until `stop()`; blocks the (main) thread.

        Returns early if pystray's loop ends by itself, e.g. when the X display goes away.
        """
        try:
            self.icon.run(setup=self._run_updates)
        finally:
            self._loop_ended = True
            self._updates.put(None)

    def _next_view(self) -> View | None:
        view = self._updates.get()
        # a burst of readings coalesces into its last view
        while view is not None and not self._updates.empty():
            view = self._updates.get()
        return None if self._loop_ended else view

    def _run_updates(self, icon: Any) -> None:
        failures = 0
        try:
            icon.visible = True
        except Exception:
            logger.exception("cannot show the tray icon")
        while (view := self._next_view()) is not None:
            try:
                self._show(view)
            except Exception:
                failures += 1
                # say it once; a tray that keeps failing must not fill the log
                level = logging.ERROR if failures == 1 else logging.DEBUG
                logger.log(level, "tray update failed", exc_info=True)
        if not self._loop_ended:
            try:
                icon.stop()
            except Exception:
                logger.debug("tray stop failed", exc_info=True)

    def _show(self, view: View) -> None:
        before, self._view = self._view, view
        if view.state != before.state:
            self.icon.icon = state_icon(view.state)
        self.icon.title = tooltip(view)
        autostart_was, self._autostart_on = self._autostart_on, self._read_autostart()
        if (view.state, view.paused, view.attached) != (
            before.state,
            before.paused,
            before.attached,
        ) or autostart_was != self._autostart_on:
            self.icon.update_menu()

    def _read_autostart(self) -> bool:
        if self._autostart is None:
            return False
        try:
            return self._autostart.is_enabled()
        except OSError as err:
            logger.warning("cannot read the start-at-login setting: %s", err)
            return False

    def _call(self, action: Callable[[Control], object]) -> None:
        """Run `action(control)` on the event loop."""
        with self._lock:
            loop, control = self._loop, self._control
        if loop is None or control is None:
            logger.info("tray: the agent is not running yet")
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the agent is stopping
            loop.call_soon_threadsafe(action, control)

    def open_dashboard(self) -> None:
        """Menu and left click: open the dashboard in the browser."""
        if self._url:
            logger.info("tray: opening the dashboard")
            self._open_url(self._url)

    def send_now(self) -> None:
        """Menu: send the oldest batch now."""
        self._call(operator.methodcaller("send_now"))

    def toggle_pause(self) -> None:
        """Menu: pause or resume sending."""
        paused = self._view.paused
        # show the new state at once; the status event that follows confirms it
        self._view = dataclasses.replace(self._view, paused=not paused)
        self._call(operator.methodcaller("resume" if paused else "pause"))

    def toggle_autostart(self) -> None:
        """Menu: switch start at login on or off."""
        if self._autostart is None:
            return
        try:
            if self._autostart.is_enabled():
                self._autostart.disable()
            else:
                self._autostart.enable()
        except OSError as err:
            logger.error("cannot change start at login: %s", err)
        self._autostart_on = self._read_autostart()

    def open_logs(self) -> None:
        """Menu: show the logs folder."""
        if self._logs_dir is not None:
            try:
                self._open_folder(self._logs_dir)
            except OSError as err:
                logger.error("cannot open %s: %s", self._logs_dir, err)

    def _quit_and_wait(self, timeout: float) -> int:
        """Quit, then wait up to `timeout` s for the agent to have stopped (logoff)."""
        self.quit()
        if timeout > 0:
            self._stopped.wait(timeout)
        return 0

    def quit(self) -> None:
        """Menu, SIGTERM, SIGINT: shut the agent down cleanly; the icon goes with it."""
        with self._lock:
            if self._control is None:
                self._quit_requested = True  # attach() passes it on
                return
        self._call(operator.methodcaller("quit"))


def run_with_tray(
    tray: Tray, live: LiveConfig, autostart: Autostart, log_files: HourlyFileHandler | None = None
) -> int:
    """The tray on this (main) thread, asyncio in one other; returns the exit code."""
    exit_code = [1]

    def attach(control: Control) -> None:
        tray.attach(asyncio.get_running_loop(), control)

    def run_agent() -> None:
        try:
            exit_code[0] = asyncio.run(serve(live, autostart, on_ready=attach, log_files=log_files))
        except Exception:
            logger.exception("the agent stopped unexpectedly")
        finally:
            tray.stop()

    # signals reach only the main thread; the tray passes them on to the loop as a quit
    previous = {sig: signal.signal(sig, lambda *_: tray.quit()) for sig in STOP_SIGNALS}
    agent = threading.Thread(target=run_agent, name="agent-loop")
    agent.start()
    try:
        tray.run()
    except Exception:
        logger.exception("the tray icon failed: running headless")
    else:
        if not tray.was_stopped:
            # the display went away (logout, X server gone): nobody can reach us any more
            logger.warning("the tray icon's loop ended by itself: quitting")
            tray.quit()
    while agent.is_alive():
        agent.join(0.5)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    return exit_code[0]
