"""A queue writer to kill: `python -m tests.reliability.writer QUEUE MODE`.

It drives the agent's own Store as hard as it can and prints, after each commit returns,
what is now durable, so that the test that kills it knows what must survive:
  committed N   every seq up to N is stored
  acked N       every seq up to N is deleted (sent)
  checkpoint    a close (with its WAL checkpoint) starts now
Modes: `heavy` (adds of 200 rows, an ack of 500 every fifth add) and `checkpoint` (a WAL of
about 8,000 rows, then close and reopen: the checkpoint that close does, again and again).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path

from agent.store import Store, open_store

ADD_ROWS = 200
ACK_ROWS = 500
ADDS_PER_CHECKPOINT = 40


def say(line: str) -> None:
    """One line to the test, flushed at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def add(store: Store) -> None:
    """Store ADD_ROWS readings in one transaction and say so."""
    now = dt.datetime.now(dt.UTC)
    results = await store.add_many([(now, 70, "bpm")] * ADD_ROWS)
    say(f"committed {results[-1].seq}")


async def run_heavy(path: Path) -> None:
    """Add and ack forever."""
    async with open_store(path, 10**9) as store:
        say("open")
        n = 0
        while True:
            await add(store)
            n += 1
            if n % 5 == 0:
                batch = await store.oldest(ACK_ROWS)
                if batch is not None:
                    await store.ack(batch)
                    say(f"acked {batch.last_seq}")


async def run_checkpoint(path: Path) -> None:
    """Fill the WAL, then close (checkpoint) and reopen, forever."""
    while True:
        async with open_store(path, 10**9) as store:
            say("open")
            for _ in range(ADDS_PER_CHECKPOINT):
                await add(store)
            say("checkpoint")
        say("closed")


def main() -> None:
    """Entry point."""
    path, mode = Path(sys.argv[1]), sys.argv[2]
    asyncio.run(run_heavy(path) if mode == "heavy" else run_checkpoint(path))


if __name__ == "__main__":
    main()
