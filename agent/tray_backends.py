"""pystray's backends, and our fixes for their bugs (each fix names the pystray bug).

pystray is imported on first use, not with this module: without a display the import fails
with whatever the backend raises (Xlib's DisplayNameError, not ImportError). On Linux without
a D-Bus session the GTK backends hang, so the plain X backend is chosen before the import.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

# how often the X backend's loop looks for events python-xlib did not wake it for
_X_POLL_S = 0.25
_WM_CLOSE = 0x0010
_WM_QUERYENDSESSION = 0x0011
_WM_ENDSESSION = 0x0016
# how long Windows' end of session waits for the agent to stop cleanly
_END_SESSION_S = 10.0


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
