"""bench/pg_writes.py against the real PostgreSQL with tiny numbers: its contract, not its speed.

The bench compares what each strategy stored with what it sent, reading by reading, and the
ledger, rollups and summaries with the readings; these tests hold it to its JSON line, to
zero lost, duplicated and mismatched for every strategy, and show that its check does see a
lost reading, a second copy and a wrong rollup.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from bench import pg_writes
from tests import harness
from tests.requirements import postgres_schema_url, postgres_url

SUMMARY_KEYS = {"producers", "batches", "big_batches", "rounds", "strategies", "profile"}
STRATEGY_KEYS = {
    "readings_per_s",
    "batches_per_s",
    "p50_ms",
    "p99_ms",
    "runs",
    "lost",
    "duplicated",
    "mismatches",
    "per_batch",
    "client_steps_ms_per_batch",
    "readings_per_s_vs_unnest",
    "p99_vs_unnest",
}


def run_bench(*args: str) -> dict[str, Any]:
    """Run bench/pg_writes.py and decode its last line."""
    return harness.run_bench("pg_writes.py", *args)


def test_every_strategy_stores_every_reading_exactly_once() -> None:
    url = postgres_url()
    summary = run_bench(
        "--server-url", url, "--producers", "2", "--batches", "20", "--big-batches", "2",
        "--rounds", "1",
    )  # fmt: skip
    assert set(summary) == SUMMARY_KEYS
    strategies = summary["strategies"]
    assert isinstance(strategies, dict)
    assert set(strategies) == {"small", "big"}
    for size, per in strategies.items():
        assert set(per) == set(pg_writes.STRATEGIES), size
        for name, figures in per.items():
            assert set(figures) - {"batches_per_group"} == STRATEGY_KEYS, (size, name)
            assert figures["runs"] == 1
            assert (figures["lost"], figures["duplicated"], figures["mismatches"]) == (0, 0, 0), (
                size,
                name,
            )
            assert figures["readings_per_s"] > 0
    profile = summary["profile"]
    assert isinstance(profile, dict)
    assert set(profile) == {"unnest", "group"}
    assert all(p["explain_execution_ms"] > 0 for p in profile.values())
    assert all(p["commit_ms"] > 0 for p in profile.values())


def test_the_check_sees_a_lost_reading_a_second_copy_a_stranger_and_a_wrong_rollup() -> None:
    with postgres_schema_url("bench_check") as url:
        clean, found = asyncio.run(spoil_and_check(url))
    assert clean == dict.fromkeys(pg_writes.CHECKS, 0)
    assert found["lost"] == 1
    assert found["stored_twice"] == 1
    assert found["extra"] == 1
    assert found["ledger_mismatch"] == 3
    assert found["rollup_minute_mismatch"] >= 2


async def spoil_and_check(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """Store a small workload the collector's way and check it; then lose one reading, store
    another twice, add one nobody sent, nudge a rollup, and check again."""
    workload = pg_writes.make_workload(8, 10, 2, seed=1)
    writer = await pg_writes.UnnestWriter.open(url)
    try:
        await pg_writes.produce(writer, workload.warm + workload.batches, 2, None)
    finally:
        await writer.close()
    clean = await pg_writes.check_stored(url, workload)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "DELETE FROM readings WHERE id = (SELECT id FROM readings ORDER BY id LIMIT 1)"
        )
        await conn.execute("INSERT INTO readings SELECT * FROM readings ORDER BY id DESC LIMIT 1")
        await conn.execute(
            "INSERT INTO readings SELECT device_id, stream, seq + 1000, gen_random_uuid(), "
            "datetime, value, unit, received_at FROM readings LIMIT 1"
        )
        await conn.execute(
            "UPDATE rollup_minute SET max = max + 1 "
            "WHERE (device_id, bucket) = (SELECT device_id, bucket FROM rollup_minute LIMIT 1)"
        )
    finally:
        await conn.close()
    return clean, await pg_writes.check_stored(url, workload)
