"""Which hub each device came through: the `Pulse-Hub` header of the batches.

An agent that reads several local devices (a bulb, a water heater…) sends each as its own
device, and names itself in the `Pulse-Hub` header. The devices API and the pages show the
hub beside the device. A header is used rather than a field of the batch: a server that
does not know it ignores it, while an unknown field would refuse the batch.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from collector.store import ReadingStore
from pulse_wire import DeviceId

HUB_HEADER = "Pulse-Hub"


class HubError(ValueError):
    """The header is present but not a device id; the message says why."""


def hub_of(request: web.Request) -> str | None:
    """The hub the request names, or None without the header."""
    raw = request.headers.get(HUB_HEADER)
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, DeviceId)
    except msgspec.ValidationError as err:
        raise HubError(f"header {HUB_HEADER}: {err} (expected a device id)") from err


class Hubs:
    """The hub last recorded per device by this process: the store is written on a change
    only, so a batch usually costs nothing more. Another process may record a newer hub;
    this one then writes again when it next sees a change, and the newest write wins."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    async def note(self, store: ReadingStore, device_id: str, hub: str) -> None:
        """Record that `device_id` came through `hub` (a device is not its own hub)."""
        if hub == device_id or self._known.get(device_id) == hub:
            return
        await store.set_hub(device_id, hub)
        self._known[device_id] = hub


HUBS: web.AppKey[Hubs] = web.AppKey("hubs", Hubs)
