"""Thin pystray adapter: the tray icon, its tooltip and its menu, driving the agent's Control.

Threads: `Tray.run()` blocks the main thread in pystray's loop, and menu actions run there.
They reach the agent only through `call_soon_threadsafe` on the agent's event loop. Status
changes travel the other way through a queue that pystray's setup thread drains, so the event
loop never waits on the tray (pystray's X backend blocks the caller until its loop has redrawn).

pystray is imported on first use, not with this module: without a display the import fails
with whatever the backend raises (Xlib's DisplayNameError, not ImportError).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import operator
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from agent import APP_NAME
from agent.autostart import Autostart
from agent.control import Control
from agent.icon import state_icon
from agent.status import State, Status

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

_X_POLL_S = 0.25
_WM_CLOSE = 0x0010
_WM_QUERYENDSESSION = 0x0011
_WM_ENDSESSION = 0x0016
_END_SESSION_S = 10.0

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


def view_of(status: Status, paused: bool) -> View:
    """The tray's view of the agent's status."""
    return View(status.state, status.pending, status.last_send_at, paused, attached=True)


def tooltip(view: View) -> str:
    """State, pending count and last send time, short enough for Windows (127 chars)."""
    last = "never"
    if view.last_send_at is not None:
        last = dt.datetime.fromtimestamp(view.last_send_at).strftime("%H:%M:%S")
    return f"Pulse: {STATE_LABELS[view.state]}\n{view.pending} pending, last send {last}"


def open_folder(path: Path) -> None:
    """Show a folder in the desktop's file manager."""
    if sys.platform == "win32":
        os.startfile(path)
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _choose_backend() -> None:
    # pystray's GTK backends hang in Icon.run() when there is no session bus; plain X works
    if not sys.platform.startswith("linux") or os.environ.get("PYSTRAY_BACKEND"):
        return
    try:
        import gi  # type: ignore[import-untyped]

        gi.require_version("Gio", "2.0")
        from gi.repository import Gio  # type: ignore[import-untyped]

        Gio.bus_get_sync(Gio.BusType.SESSION, None)
    except Exception as err:  # no gi, no bus: both mean the X backend
        logger.info("no GTK or no D-Bus session (%s): using the plain X tray backend", err)
        os.environ["PYSTRAY_BACKEND"] = "xorg"


@functools.cache
def load_pystray() -> ModuleType:
    """Import pystray; raises whatever the backend raises when there is no display."""
    _choose_backend()
    import pystray

    logger.info("tray backend: %s", pystray.Icon.__module__)
    module: ModuleType = pystray
    return module


@functools.cache
def icon_class() -> type[Any]:
    """pystray's Icon for this backend, with our fixes (each says which pystray bug)."""
    base: type[Any] = load_pystray().Icon

    class PulseIcon(base):  # type: ignore[misc]
        def _run(self) -> None:
            try:
                super()._run()
            except Exception:
                # pystray's setup thread waits for a ready mark that a failed start never
                # gives; without it the process could not exit
                if not self._running:
                    self._mark_ready()
                raise

    if hasattr(base, "_create_window"):  # the X backend

        class XIcon(PulseIcon):
            _stopped = False

            def _create_window(self) -> Any:
                # pystray 0.19.5 never selects ButtonPress, so clicks are lost (issue 151)
                import Xlib.X

                window = super()._create_window()
                mask = Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask | Xlib.X.ButtonPressMask
                window.change_attributes(event_mask=mask)
                return window

            def _assert_docked(self) -> None:
                # pystray asks to dock on every icon update and show; a second request for
                # a window already docked makes trayer drop it back onto the root window
                if not self._systray_manager:
                    super()._assert_docked()

            def _stop(self) -> None:
                super()._stop()
                self._stopped = True

            def __del__(self) -> None:
                # collected after the X server went away (logout, a test's Xvfb), closing the
                # display raises; there is nothing left to undo
                with contextlib.suppress(Exception):
                    super().__del__()

            def _mainloop(self) -> None:
                try:
                    super()._mainloop()
                finally:
                    # a thread still waiting for the loop to run its request (the display
                    # went away meanwhile) would wait forever and keep the process alive
                    self._queue.put((RuntimeError, RuntimeError("the tray loop ended"), None))

            def _events(self) -> Iterator[Any]:
                # pystray blocks in next_event(), and python-xlib sometimes misses the wake-up
                # when another thread flushed meanwhile: the loop then never sees the message
                # that shows or stops the icon. Polling recovers within a fraction of a second.
                display = self._display
                while not self._stopped:
                    if display.pending_events():
                        yield display.next_event()
                    else:
                        select.select([display], [], [], _X_POLL_S)

        return XIcon

    if hasattr(base, "_on_taskbarcreated"):  # the Windows backend

        class WinIcon(PulseIcon):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                # pystray answers 0 to every other message: WM_CLOSE (taskkill) is lost, and
                # WM_QUERYENDSESSION reads as "do not log off"
                self._message_handlers.update(
                    {
                        _WM_CLOSE: lambda _w, _l: self.pulse_quit(0.0),
                        _WM_QUERYENDSESSION: lambda _w, _l: 1,
                        # Windows ends the process when this returns: stop cleanly first
                        _WM_ENDSESSION: lambda w, _l: w and self.pulse_quit(_END_SESSION_S),
                    }
                )

        return WinIcon

    if hasattr(base, "_initialize"):  # the GTK and AppIndicator backends

        class GtkIcon(PulseIcon):
            def _initialize(self) -> None:
                # pystray resets SIGINT to the default (kill at once); keep our clean quit
                handler = signal.getsignal(signal.SIGINT)
                super()._initialize()
                if threading.current_thread() is threading.main_thread() and handler is not None:
                    signal.signal(signal.SIGINT, handler)

            def _finalize(self) -> None:
                # hiding notifications fails without a notification service; nothing to hide
                try:
                    super()._finalize()
                except Exception as err:
                    logger.debug("tray clean-up: %s", err)

        return GtkIcon

    return PulseIcon


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
        cfg = control.live.config.dashboard
        self._url = control.dashboard_url or f"http://{cfg.host}:{cfg.port}/"
        self._logs_dir = control.logs_dir
        hub = control.hub
        last: list[View] = []

        def on_event(_event: dict[str, Any]) -> None:
            view = view_of(hub.status, control.is_paused)
            if not last or view != last[0]:
                last[:] = [view]
                self._updates.put(view)

        remove = hub.add_listener(on_event)
        on_event({})
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
