"""Per-minute and per-hour rollups, and the plan that reads a series from the coarsest one.

Both stores keep, per device, the min, max, sum and count of its readings for every minute
and every hour (UTC, aligned to whole minutes and hours), updated in the same transaction
that stores the readings. The sum is of `value / AVG_SCALE`, as series() sums, so that a
bucket of huge values cannot overflow.

A series bucket [b, b + width) is cut into pieces: whole hours inside it come from the hour
rollups, whole minutes left at its edges from the minute rollups, and only the seconds at its
two edges from the raw readings. Every piece lies inside one bucket, so the answer is the one
a scan of the raw readings gives (the average up to float rounding: it is summed in another
order), and a chart of a month reads about five small ranges per bucket, whatever the rate.
"""

from __future__ import annotations

import datetime as dt

import msgspec

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
# the origin of the rollup grid: whole minutes and hours in UTC
ORIGIN = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class Pieces(msgspec.Struct):
    """Half-open time ranges per source, each with the index of the bucket it belongs to."""

    raw: list[tuple[int, dt.datetime, dt.datetime]]
    minute: list[tuple[int, dt.datetime, dt.datetime]]
    hour: list[tuple[int, dt.datetime, dt.datetime]]


def floor_to(when: dt.datetime, unit: dt.timedelta) -> dt.datetime:
    """The start of the unit (minute, hour) that `when` falls in."""
    return ORIGIN + ((when - ORIGIN) // unit) * unit


def ceil_to(when: dt.datetime, unit: dt.timedelta) -> dt.datetime:
    """The first unit boundary at or after `when`."""
    floor = floor_to(when, unit)
    return floor if floor == when else floor + unit


def uses_rollups(width: dt.timedelta) -> bool:
    """Whether buckets this wide can hold a whole minute; narrower ones read raw readings."""
    return width >= MINUTE


def plan(start: dt.datetime, end: dt.datetime, width: dt.timedelta) -> Pieces:
    """The pieces of every bucket [start + k*width, start + (k+1)*width) ∩ [start, end)."""
    pieces = Pieces([], [], [])
    k = 0
    low = start
    while low < end:
        high = min(low + width, end)
        _cut(pieces, k, low, high)
        k += 1
        low = start + k * width
    return pieces


def _cut(pieces: Pieces, k: int, low: dt.datetime, high: dt.datetime) -> None:
    minute_low, minute_high = ceil_to(low, MINUTE), floor_to(high, MINUTE)
    if minute_low >= minute_high:
        pieces.raw.append((k, low, high))
        return
    if low < minute_low:
        pieces.raw.append((k, low, minute_low))
    if minute_high < high:
        pieces.raw.append((k, minute_high, high))
    hour_low, hour_high = ceil_to(minute_low, HOUR), floor_to(minute_high, HOUR)
    if hour_low >= hour_high:
        pieces.minute.append((k, minute_low, minute_high))
        return
    if minute_low < hour_low:
        pieces.minute.append((k, minute_low, hour_low))
    if hour_high < minute_high:
        pieces.minute.append((k, hour_high, minute_high))
    pieces.hour.append((k, hour_low, hour_high))


def columns(
    ranges: list[tuple[int, dt.datetime, dt.datetime]],
) -> tuple[list[int], list[dt.datetime], list[dt.datetime]]:
    """Ranges as three parallel lists, for unnest() parameters."""
    return [r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges]
