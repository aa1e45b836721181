"""PostgreSQL's readings by day: daily partitions ahead of time, and retention by dropping them.

`readings` is partitioned by range of `datetime`, one partition per UTC day
(`readings_pYYYYMMDD`), and a default partition `readings_default` takes what no day
partition covers: readings older than the window created at first start, or days that came
while no collector maintained the partitions. Partitions are made ahead, never on the ingest
path: a client cannot make the server create tables, and a batch never waits on DDL.

Retention drops whole day partitions before the cutoff, and deletes from the default
partition, the dedup ledger (`reading_keys`) and the per-minute rollups what lies before it.
The hourly rollups stay: a year of hours is 8,760 rows per device.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import msgspec

from collector.store import DAY, day_of, day_start, retention_cutoff

logger = logging.getLogger(__name__)

# days of partitions made ahead: a reading may be up to 24 h in the future (pulse_wire)
AHEAD_DAYS = 2
# days of partitions made behind today when the table is new: an agent's backlog of the last
# month lands in day partitions; anything older goes to the default partition
BEHIND_DAYS = 31
PREFIX = "readings_p"
NAME = re.compile(r"^readings_p(\d{8})$")
# one collector at a time makes, moves or drops partitions
MAINTENANCE_LOCK = 0x50554C5346

DEFAULT_PARTITION = """
CREATE TABLE IF NOT EXISTS readings_default PARTITION OF readings DEFAULT
"""

# the default partition's own index: to find rows that a new day partition must take over
DEFAULT_INDEX = """
CREATE INDEX IF NOT EXISTS readings_default_datetime ON readings_default (datetime)
"""

PARTITIONS = """
SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
WHERE i.inhparent = 'readings'::regclass
"""


class Maintenance(msgspec.Struct):
    """What one maintenance pass did."""

    created: list[str]
    dropped: list[str]
    moved: int = 0
    deleted: int = 0


def partition_name(day: dt.date) -> str:
    """The name of a day's partition."""
    return f"{PREFIX}{day:%Y%m%d}"


async def existing_days(conn: Any) -> set[dt.date]:
    """The days that have a partition."""
    days = set()
    for (name,) in await conn.fetch(PARTITIONS):
        if match := NAME.match(name):
            days.add(dt.datetime.strptime(match.group(1), "%Y%m%d").date())
    return days


async def _create_day(conn: Any, day: dt.date) -> int:
    """Make one day's partition; rows the default partition holds for that day move into it.

    PostgreSQL refuses a new partition whose range has rows in the default partition, so
    they are moved first, all in the caller's transaction. Returns how many moved.
    """
    name = partition_name(day)
    low, high = day_start(day), day_start(day + DAY)
    # no insert may reach the default partition's rows of that day while they move
    await conn.execute("LOCK TABLE readings_default IN SHARE ROW EXCLUSIVE MODE")
    await conn.execute(f"CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS)")
    status = await conn.execute(
        f"""
        WITH moved AS (
            DELETE FROM readings_default WHERE datetime >= $1 AND datetime < $2 RETURNING *
        )
        INSERT INTO {name} SELECT * FROM moved
        """,
        low,
        high,
    )
    # the bounds are literals: DDL takes no parameters; isoformat of a UTC datetime is safe
    await conn.execute(
        f"ALTER TABLE readings ATTACH PARTITION {name} "
        f"FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
    )
    return int(status.split()[-1])


async def ensure_days(conn: Any, first: dt.date, last: dt.date) -> Maintenance:
    """Day partitions for every day in [first, last]; in the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MAINTENANCE_LOCK)
    have = await existing_days(conn)
    done = Maintenance(created=[], dropped=[])
    day = first
    while day <= last:
        if day not in have:
            done.moved += await _create_day(conn, day)
            done.created.append(partition_name(day))
        day += DAY
    return done


async def drop_before(conn: Any, cutoff: dt.datetime) -> Maintenance:
    """Drop what lies before `cutoff` (a UTC midnight): whole partitions, then rows elsewhere."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", MAINTENANCE_LOCK)
    done = Maintenance(created=[], dropped=[])
    for day in sorted(await existing_days(conn)):
        if day_start(day + DAY) <= cutoff:
            name = partition_name(day)
            await conn.execute(f"DROP TABLE {name}")
            done.dropped.append(name)
    status = await conn.execute("DELETE FROM readings_default WHERE datetime < $1", cutoff)
    done.deleted = int(status.split()[-1])
    await conn.execute("DELETE FROM reading_keys WHERE datetime < $1", cutoff)
    await conn.execute("DELETE FROM rollup_minute WHERE bucket < $1", cutoff)
    return done


async def maintain(conn: Any, now: dt.datetime, retention: dt.timedelta | None) -> Maintenance:
    """One pass: partitions for today and the days ahead, then retention; one transaction."""
    async with conn.transaction():
        today = day_of(now)
        done = await ensure_days(conn, today, today + dt.timedelta(days=AHEAD_DAYS))
        cutoff = retention_cutoff(now, retention)
        if cutoff is not None:
            dropped = await drop_before(conn, cutoff)
            done.dropped, done.deleted = dropped.dropped, dropped.deleted
    if done.created or done.dropped or done.moved or done.deleted:
        logger.info(
            "readings partitions: created %s, dropped %s, moved %d rows out of the default "
            "partition, deleted %d expired rows",
            done.created or "none",
            done.dropped or "none",
            done.moved,
            done.deleted,
        )
    return done
