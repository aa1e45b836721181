"""The one way into the running agent: what the dashboard and the tray may see and do."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import Config, LiveConfig, LoadedConfig, validate_dict
from agent.lanes import Lane
from agent.sender import Sender
from agent.settings_form import RESTART_KEYS, changed_keys, field_errors, flatten, merge_update
from agent.status import Event, Info, Listener, SnapshotEvent, Status, StatusHub
from agent.store import Store
from pulse_common.hosts import is_loopback
from pulse_common.logs import set_level

logger = logging.getLogger(__name__)

# what the dashboard shows of the dead letters
DEAD_LETTERS_SHOWN = 50


def dashboard_url(host: str, port: int, secret: str = "") -> str:
    """The address of a dashboard bound to host:port, from this computer; `secret` unlocks it."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={secret}" if secret else "")


@dataclass(frozen=True)
class Saved:
    """The settings were saved (or were already so) and what can be applied live was."""

    config: Config
    changed: list[str]
    applied_live: list[str]
    restart_needed: list[str]


@dataclass(frozen=True)
class Invalid:
    """Nothing was saved: {key: problem} for the form's fields, and the rest in `general`."""

    errors: dict[str, str]
    general: list[str]


@dataclass(frozen=True)
class DropUnconfirmed:
    """Nothing was saved: the new queue limit drops queued readings, and that needs a yes."""

    problem: str
    would_drop: int


@dataclass(frozen=True)
class SaveFailed:
    """Valid, but the file could not be written; nothing changed."""

    error: str


SettingsResult = Saved | Invalid | DropUnconfirmed | SaveFailed


def would_drop(pending: int, old: Config, new: Config) -> int:
    """How many queued readings a lower storage.max_pending would drop at the next reading."""
    cap = new.storage.max_pending
    # an unchanged or raised cap drops nothing it would not have dropped anyway
    if cap >= old.storage.max_pending:
        return 0
    return max(0, pending - cap)


@dataclass(frozen=True)
class _Queue:
    """One source's queue as Control acts on it: its store, sender and status."""

    store: Store
    sender: Sender
    hub: StatusHub
    # the id its readings are sent under (the lane's view of the config)
    device_id: Callable[[], str]


def _lane_device(lane: Lane) -> str:
    return lane.device_id


class Control:
    """Actions and state of a running agent; call on the event loop's thread only.

    The tray runs on another thread and crosses over with call_soon_threadsafe or
    run_coroutine_threadsafe. Restart-only settings keep the values the agent started with.
    `store` and `sender` are the primary source's; with `lanes` (one per source, the
    primary among them) every action acts on each source's queue and sender.
    """

    def __init__(
        self,
        live: LiveConfig,
        hub: StatusHub,
        store: Store,
        sender: Sender,
        request_stop: Callable[[], None],
        secret: str = "",
        lanes: Sequence[Lane] = (),
    ):
        self._live = live
        self._running = live.loaded
        self._hub = hub
        self._store = store
        self._sender = sender
        self._queues = [
            _Queue(lane.store, lane.sender, lane.hub, functools.partial(_lane_device, lane))
            for lane in lanes
        ] or [_Queue(store, sender, hub, lambda: store.device_for(self.config.device_id))]
        self._request_stop = request_stop
        self._secret = secret
        self._paused = False
        self._save_lock = asyncio.Lock()

    # --- what it shows -------------------------------------------------------------------

    @property
    def is_paused(self) -> bool:
        """True while sending is paused; the Sender asks before each batch."""
        return self._paused

    @property
    def status(self) -> Status:
        """The current status (read it, never change it)."""
        return self._hub.status

    @property
    def config(self) -> Config:
        """The settings as saved, the live ones included."""
        return self._live.config

    @property
    def config_path(self) -> Path:
        """The config file in use."""
        return self._live.loaded.path

    @property
    def running(self) -> LoadedConfig:
        """The settings the agent started with: restart-only ones are still these."""
        return self._running

    @property
    def device_id(self) -> str:
        """The id readings are sent under: the configured one, else the one the queue keeps.

        With `sources`, the hub's own id (each source sends under its own).
        """
        if self.config.sources:
            return self.config.effective_device_id
        return self._store.device_for(self.config.device_id)

    @property
    def pending(self) -> int:
        """Readings queued over every source."""
        return sum(q.store.pending for q in self._queues)

    @property
    def logs_dir(self) -> Path:
        """The folder this run writes its hour-named log files to."""
        return self._running.logs_dir

    @property
    def dashboard_url(self) -> str:
        """The dashboard's address with this run's secret, as logged at start and in the tray."""
        cfg = self._running.config.dashboard
        return dashboard_url(cfg.host, cfg.port, self._secret)

    def restart_needed(self) -> list[str]:
        """Saved settings that differ from the running ones and only apply after a restart."""
        before, after = flatten(self._running.config), flatten(self.config)
        return [key for key in after if key in RESTART_KEYS and before[key] != after[key]]

    def snapshot(self) -> SnapshotEvent:
        """The current status as a snapshot event."""
        return self._hub.snapshot()

    def subscribe(self) -> AsyncIterator[Event]:
        """A snapshot, then every status event, until the caller stops."""
        return self._hub.subscribe()

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` on the event loop at every status event; returns the remover."""
        return self._hub.add_listener(listener)

    def publish_config(self, info: Info) -> None:
        """Tell every page that the settings changed, with the page's new facts."""
        self._hub.publish_config(info)

    async def dead_letters(self, limit: int = DEAD_LETTERS_SHOWN) -> list[dict[str, object]]:
        """The newest dead-lettered readings with the server's reasons (from every source)."""
        if len(self._queues) == 1:
            return await self._queues[0].store.dead_letters(limit)
        found: list[dict[str, object]] = []
        for q in self._queues:
            device_id = q.device_id()
            found += [
                {**letter, "device_id": device_id} for letter in await q.store.dead_letters(limit)
            ]
        return found[:limit]

    # --- what it does --------------------------------------------------------------------

    def send_now(self) -> None:
        """Send the oldest batch of every source at once."""
        self._wake_senders()

    def pause(self) -> None:
        """Stop sending; readings keep queueing. A catch-up stops within one batch."""
        self._paused = True
        self._set_paused(True)
        logger.info("sending paused, %d queued", self.pending)
        self._wake_senders()

    def resume(self) -> None:
        """Start sending again at once."""
        if self._paused:
            self._paused = False
            self._set_paused(False)
            logger.info("sending resumed, %d queued", self.pending)
        self._wake_senders()

    async def retry_dead(self) -> int:
        """Move every dead letter of every source back into its queue and send."""
        moved = 0
        for q in self._queues:
            moved += await q.store.retry_dead()
            q.hub.set_counts(await q.store.counts())
        logger.info("%d dead letters queued again", moved)
        self._wake_senders()
        return moved

    async def apply_settings(self, update: dict[str, Any], confirm_drop: bool) -> SettingsResult:
        """Validate `update` over the current settings, save atomically, apply what is live.

        A storage.max_pending that would drop queued readings is refused unless
        `confirm_drop`; nothing is written unless the result is Saved.
        """
        async with self._save_lock:
            old = self.config
            merged = merge_update(old, update)
            if merged.get("sources") and "sensor" not in update:
                # the form always has sensor's values; with sources they would be refused
                merged.pop("sensor", None)
            new, errors = validate_dict(merged)
            if new is None:
                by_field, general = field_errors(errors)
                return Invalid(by_field, general)
            refusal = self._refusal(old, new, confirm_drop)
            if refusal is not None:
                return refusal
            changed = changed_keys(old, new)
            if changed:
                failed = await self._save(old, new, changed)
                if failed is not None:
                    return failed
        applied = [key for key in changed if key not in RESTART_KEYS]
        return Saved(new, changed, applied, self.restart_needed())

    def quit(self) -> None:
        """Shut the agent down cleanly."""
        logger.info("quit requested")
        self._request_stop()

    # --- inside --------------------------------------------------------------------------

    def _wake_senders(self) -> None:
        for q in self._queues:
            q.sender.send_now()

    def _set_paused(self, paused: bool) -> None:
        # the sources' own hubs first: the agent's sums them, then shows its own pause
        for q in self._queues:
            if q.hub is not self._hub:
                q.hub.set_paused(paused)
        self._hub.set_paused(paused)

    def _would_drop(self, old: Config, new: Config) -> int:
        # storage.max_pending caps each source's queue: sum what each one would drop
        return sum(would_drop(q.store.pending, old, new) for q in self._queues)

    def _refusal(self, old: Config, new: Config, confirm_drop: bool) -> SettingsResult | None:
        """Why a valid config must not be saved as asked, or None to save it."""
        if not is_loopback(new.dashboard.host) and not new.dashboard.password:
            # the agent would refuse to start with this; say so now, not at the next start
            problem = "a network address needs a dashboard password (set dashboard.password)"
            return Invalid({"dashboard.host": problem}, [])
        drop = self._would_drop(old, new)
        if drop and not confirm_drop:
            # losing queued readings is the one edit that cannot be undone: the user must agree
            problem = (
                f"lowering the cap to {new.storage.max_pending} would drop the {drop} oldest "
                f"queued reading{'' if drop == 1 else 's'}; confirm to drop them"
            )
            return DropUnconfirmed(problem, drop)
        return None

    async def _save(self, old: Config, new: Config, changed: list[str]) -> SaveFailed | None:
        drop = self._would_drop(old, new)
        try:
            await asyncio.to_thread(self._live.replace, new)
        except OSError as err:
            logger.error("cannot save the settings to %s: %s", self.config_path, err)
            return SaveFailed(f"cannot save {self.config_path}: {err}")
        self._apply_live(old, new)
        if drop:
            logger.warning(
                "queue limit lowered to %d with confirmation: the %d oldest queued "
                "readings are dropped",
                new.storage.max_pending,
                drop,
            )
        logger.info("settings saved from the dashboard: %s", ", ".join(changed))
        return None

    def _apply_live(self, old: Config, new: Config) -> None:
        """Put what the workers do not re-read each cycle into force now."""
        if new.logs.level != old.logs.level:
            set_level(new.logs.level)
        if new.storage.max_pending != old.storage.max_pending:
            for q in self._queues:
                q.store.max_pending = new.storage.max_pending
        # a new address, token or interval should not wait out the current sleep or backoff
        if (new.server, new.sender, new.device_id) != (old.server, old.sender, old.device_id):
            self._wake_senders()
