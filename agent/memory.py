"""The process's C heap: fewer malloc arenas, and free pages given back to the system.

The agent runs one SQLite thread per queue file (aiosqlite), so a hub of ten sources has a
dozen threads. glibc gives each thread that allocates its own arena (up to 8 per core), and
each arena keeps its freed pages: that cost about 1.6 MiB of RSS for ten sources
(bench/hub_footprint.py). `limit_arenas` caps them at two before any thread starts, and
`trim` returns the heap's free pages (glibc's malloc_trim), which an agent that has only
started, or drained a backlog, otherwise keeps until it exits.

Both exist only on glibc (Linux); elsewhere (Windows, macOS, musl) they do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

# mallopt(3): M_ARENA_MAX
M_ARENA_MAX = -8
# glibc's soname, the same since 1997; loading it again only finds the loaded one
GLIBC = "libc.so.6"
# after start-up (its imports and first batches freed), then now and then: a trim takes
# well under a millisecond on the agent's heap
TRIM_FIRST_S = 10.0
TRIM_EVERY_S = 600.0
ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(GLIBC)
    except OSError:
        return None  # musl's C library has another name, and neither call
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before threads start); whether it took effect."""
    libc = _glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))
    if not done:
        logger.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return done


def trim() -> bool:
    """Give the heap's free pages back to the system; whether any were (glibc only)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))


async def run_trim(
    first_s: float = TRIM_FIRST_S,
    every_s: float = TRIM_EVERY_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """`trim` once start-up's garbage is freed, then every `every_s`; until cancelled."""
    await sleep(first_s)
    while True:
        logger.debug("heap trimmed: %s", trim())
        await sleep(every_s)
