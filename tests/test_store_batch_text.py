"""The queue's one-row batch read: joined texts split back into readings, in seq order."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec

import pulse_wire as wire
from agent.store import _joined_batch, open_store


def test_a_batch_joined_out_of_order_is_put_back_in_seq_order() -> None:
    batch = _joined_batch("3,1,2", "c,a,b", '{"n":3}\n{"n":1}\n{"n":2}', "stream")
    assert batch.seqs == [1, 2, 3]
    assert batch.ids == ["a", "b", "c"]
    assert batch.readings_json == ['{"n":1}', '{"n":2}', '{"n":3}']
    assert batch.stream == "stream"


async def test_commas_and_newlines_in_a_unit_keep_readings_apart(tmp_path: Path) -> None:
    when = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    async with open_store(tmp_path / "queue.db", max_pending=100) as store:
        await store.add_many([(when, 61, "a,b"), (when, 62, "c\nd"), (when, 63, "bpm")])
        batch = await store.oldest(10)
        assert batch is not None
        body = wire.batch_body("device", batch.stream, batch.readings_json)
        decoded = wire.decode_batch(body)
        assert [r.message.unit for r in decoded.readings] == ["a,b", "c\nd", "bpm"]
        assert [r.seq for r in decoded.readings] == batch.seqs
        assert [str(r.id) for r in decoded.readings] == batch.ids
        assert await store.ack(batch) == 3
        assert await store.oldest(10) is None


async def test_a_read_after_a_seq_starts_past_it(tmp_path: Path) -> None:
    when = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    async with open_store(tmp_path / "queue.db", max_pending=100) as store:
        added = await store.add_many([(when, 60 + i, "bpm") for i in range(5)])
        batch = await store.oldest(2, after_seq=added[1].seq)
        assert batch is not None
        assert batch.seqs == [added[2].seq, added[3].seq]
        values = [msgspec.json.decode(text)["message"]["value"] for text in batch.readings_json]
        assert values == [62, 63]
