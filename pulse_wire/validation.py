"""Per-reading plausibility checks shared by clients and servers: reject a reading, not a batch."""

from __future__ import annotations

import datetime as dt
import math
import sys

from pulse_wire.types import Batch, Reading, Rejection

MAX_FUTURE = dt.timedelta(hours=24)
# the earliest datetime that still exists in UTC: 0001-01-01T00:00+14:00 would not
EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
# a value outside its unit's range is a sensor or encoding fault, never a measurement
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "bpm": (1, 400),
}
# any finite float; also keeps integers that no float column could hold out of the store
ANY_FINITE = (-sys.float_info.max, sys.float_info.max)


def _show(value: float) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def problem(reading: Reading, latest: dt.datetime) -> str | None:
    """Why a reading cannot be stored, or None if it can; `latest` is the newest datetime."""
    value = reading.message.value
    unit = reading.message.unit
    low, high = PLAUSIBLE_RANGES.get(unit, ANY_FINITE)
    if isinstance(value, float) and not math.isfinite(value):
        return f"value {_show(value)} is not a finite number"
    if unit not in PLAUSIBLE_RANGES and not low <= value <= high:
        return f"value {_show(value)} is too large to store"
    if not low <= value <= high:
        plausible = f"{low:g}..{high:g}"
        return f"value {_show(value)} is outside {plausible}, the plausible range for {unit!r}"
    if reading.datetime > latest:
        return f"datetime {reading.datetime.isoformat()} is more than 24 h in the future"
    if reading.datetime < EARLIEST:
        return f"datetime {reading.datetime.isoformat()} is before {EARLIEST.date()} UTC"
    return None


def split_batch(batch: Batch, now: dt.datetime) -> tuple[list[Reading], list[Rejection]]:
    """Split a batch into storable readings and rejections, in batch order."""
    latest = now + MAX_FUTURE
    ranges = PLAUSIBLE_RANGES
    # the common case is one check per reading that passes; only failures pay for messages
    for reading in batch.readings:
        low, high = ranges.get(reading.message.unit, ANY_FINITE)
        when = reading.datetime
        if not low <= reading.message.value <= high or not EARLIEST <= when <= latest:
            break
    else:
        return batch.readings, []
    good: list[Reading] = []
    rejected: list[Rejection] = []
    for reading in batch.readings:
        error = problem(reading, latest)
        if error is None:
            good.append(reading)
        else:
            rejected.append(Rejection(id=str(reading.id), error=error))
    return good, rejected
