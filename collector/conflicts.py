"""Settling a batch that was not wholly inserted: duplicates, seq conflicts and id conflicts.

Both stores insert with ON CONFLICT DO NOTHING and, only when fewer rows went in than were
sent, read back what is stored at the batch's seqs (SQLite in the same transaction, after
the insert; PostgreSQL just after its one-statement insert commits), then where the ids are
stored of the readings whose seq holds nothing. Rows are never deleted, so a reading whose
seq now holds its own id was accepted or is a duplicate, and any other reading lost to a
row that holds its seq or its id. Accepted and duplicate need no telling apart one by one:
the insert's row count says how many were accepted.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from collector.store import StoreError
from pulse_wire import Ack, Batch, Reading, Rejection

# a batch whose seqs span at most this many times its length is looked up as one seq range
# (one index range scan); a sparser one seq by seq, so a hostile batch cannot make the
# collector read a whole stream
DENSE_SPAN = 4


class StoredKey(NamedTuple):
    """Where a stored reading sits, and its id."""

    device_id: str
    stream: str
    seq: int
    id: uuid.UUID


class Stored(NamedTuple):
    """What the store holds where a batch's readings were to go."""

    # the batch's device and stream: the id stored at each seq (at least the batch's seqs)
    ids_by_seq: dict[int, uuid.UUID]
    # where the ids are stored of readings whose seq holds nothing
    keys_by_id: dict[uuid.UUID, StoredKey]


def seq_range(readings: list[Reading]) -> tuple[int, int] | None:
    """The (lowest, highest) seq if the readings are dense enough to look up as a range."""
    low = min(r.seq for r in readings)
    high = max(r.seq for r in readings)
    return (low, high) if high - low < DENSE_SPAN * len(readings) else None


def unplaced(readings: list[Reading], ids_by_seq: dict[int, uuid.UUID]) -> list[uuid.UUID]:
    """The ids, each once, of the readings whose seq holds nothing: stored elsewhere, if at all."""
    return list(dict.fromkeys(r.id for r in readings if r.seq not in ids_by_seq))


def seq_conflict(stream: str, seq: int, stored: uuid.UUID, sent: uuid.UUID) -> str:
    """The rejection text for a reading whose seq already holds another reading."""
    return (
        f"seq {seq} of stream {stream} already holds reading {stored}; "
        f"this reading has id {sent} (seq conflict)"
    )


def id_conflict(stored: StoredKey, sent_seq: int) -> str:
    """The rejection text for a reading whose id is already stored somewhere else."""
    return (
        f"id {stored.id} is already stored as seq {stored.seq} of stream {stored.stream} "
        f"of device {stored.device_id}; this reading has seq {sent_seq} (id conflict)"
    )


def find_conflicts(stream: str, readings: list[Reading], stored: Stored) -> dict[int, Rejection]:
    """Rejections for the readings no stored row matches exactly, by position in `readings`."""
    conflicts: dict[int, Rejection] = {}
    for position, reading in enumerate(readings):
        held = stored.ids_by_seq.get(reading.seq)
        if held == reading.id:
            continue
        if held is not None:
            error = seq_conflict(stream, reading.seq, held, reading.id)
        elif (elsewhere := stored.keys_by_id.get(reading.id)) is not None:
            error = id_conflict(elsewhere, reading.seq)
        else:
            # ON CONFLICT skipped it, yet nothing holds its seq or id: never acknowledge that
            raise StoreError(
                f"reading {reading.id} (seq {reading.seq}) was neither stored nor in conflict"
            )
        conflicts[position] = Rejection(id=str(reading.id), error=error)
    return conflicts


def settle(
    batch: Batch, good: list[Reading], rejected: list[Rejection], accepted: int, stored: Stored
) -> Ack:
    """The Ack for a batch of which `accepted` of the `good` readings were inserted."""
    conflicts = find_conflicts(batch.stream, good, stored)
    duplicates = len(good) - accepted - len(conflicts)
    if duplicates < 0:
        raise StoreError(
            f"{accepted} rows inserted and {len(conflicts)} conflicts among {len(good)} readings"
        )
    return Ack(
        accepted=accepted,
        duplicates=duplicates,
        rejected=in_batch_order(batch.readings, good, rejected, conflicts),
    )


def in_batch_order(
    readings: list[Reading],
    good: list[Reading],
    rejected: list[Rejection],
    conflicts: dict[int, Rejection],
) -> list[Rejection]:
    """Merge plausibility rejections and conflicts (by position in `good`) in batch order."""
    if not rejected:
        return [conflicts[position] for position in sorted(conflicts)]
    # `good` is a subsequence of the batch and `rejected` lists the rest, both in batch order
    merged: list[Rejection] = []
    failed = iter(rejected)
    position = 0
    for reading in readings:
        if position < len(good) and reading is good[position]:
            if position in conflicts:
                merged.append(conflicts[position])
            position += 1
        else:
            merged.append(next(failed))
    return merged
