"""The typed keys of the agent's Application state; the dashboard reaches the agent by CONTROL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web

from agent.autostart import Autostart
from agent.config import LiveConfig
from agent.control import Control
from agent.lanes import Lane, Totals
from agent.sources import Source
from agent.status import StatusHub
from agent.store import Store
from pulse_common.logs import HourlyFileHandler

CONFIG = web.AppKey("config", LiveConfig)
HUB = web.AppKey("hub", StatusHub)
# the primary source's store: the legacy sensor's, or the source under the agent's own id
# (else the first); every source's store is in STORES, in config order
STORE = web.AppKey("store", Store)
SESSION = web.AppKey("session", aiohttp.ClientSession)
# a source given to create_app in place of the primary one's (tests)
SOURCE = web.AppKey("source", Source)
STORES: web.AppKey[list[Store]] = web.AppKey("stores")
LANES: web.AppKey[list[Lane]] = web.AppKey("lanes")
TOTALS = web.AppKey("totals", Totals)
WORKERS: web.AppKey[list[asyncio.Task[None]]] = web.AppKey("workers")
# request_stop(None) is a clean quit; request_stop(reason) a fatal error (exit code 1)
REQUEST_STOP: web.AppKey[Callable[[str | None], None]] = web.AppKey("request_stop")
CONTROL = web.AppKey("control", Control)
# start at login (enable/disable/is_enabled); set by serve only where it can be offered
AUTOSTART = web.AppKey("autostart", Autostart)
# the hour-named log files, when the command line opened them; their problem shows on the status
LOG_FILES = web.AppKey("log_files", HourlyFileHandler)
