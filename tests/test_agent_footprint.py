"""What keeps the agent small: lazy imports, packed chart points, and the C heap's tuning.

The figures themselves are measured by bench/hub_footprint.py; these tests hold the parts.
"""

from __future__ import annotations

import asyncio
import ctypes
import subprocess
import sys

import pytest

from agent import memory
from agent.dashboard import Points
from agent.resources import resource_path
from agent.templates import Templates

LAZY = (
    "jinja2",
    "aiohttp_jinja2",
    "prometheus_client",
    "agent.exposition",
    "aiomqtt",
    "plistlib",
    "webbrowser",
)


def test_the_running_agent_imports_nothing_it_loads_lazily() -> None:
    """What `python -m agent` imports to run leaves out the pages' and metrics' libraries."""
    code = (
        "import sys, agent.__main__, agent.app, agent.lanes, agent.serve\n"
        f"print(','.join(m for m in {LAZY!r} if m in sys.modules))\n"
        "import frozenlist; print(frozenlist.NO_EXTENSIONS)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["", "True"]


def test_templates_load_jinja_at_the_first_page() -> None:
    templates = Templates(resource_path("web", "templates"))
    assert not templates.loaded
    with pytest.raises(Exception, match="nope.html"):
        templates.render("nope.html", {})
    assert templates.loaded


def test_points_keep_order_prune_and_give_room_back() -> None:
    points = Points(maxlen=5000)
    for i in range(3000):
        points.append(float(i), i * 0.5)
    points.prune(2000.0)
    assert points.times() == [float(i) for i in range(2000, 3000)]
    assert points.values() == [i * 0.5 for i in range(2000, 3000)]
    assert points.pairs()[0] == (2000.0, 1000.0)
    # the 2000 dropped points were more than half: their room was given back
    assert len(points._t) == 1000
    points.prune(10_000.0)
    assert len(points) == 0
    assert points.times() == []


def test_points_drop_the_oldest_past_maxlen() -> None:
    points = Points(maxlen=3)
    for i in range(5):
        points.append(float(i), float(i))
    assert points.times() == [2.0, 3.0, 4.0]


def test_prune_stops_at_the_first_newer_point() -> None:
    """Out of order points stay until the ones before them go, as the deque did."""
    points = Points()
    for when in (5.0, 1.0, 9.0):
        points.append(when, 0.0)
    points.prune(6.0)
    assert points.times() == [9.0]
    points = Points()
    for when in (1.0, 7.0, 2.0):
        points.append(when, 0.0)
    points.prune(6.0)
    assert points.times() == [7.0, 2.0]


needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="malloc tuning exists on glibc only"
)


@needs_glibc
def test_arenas_are_limited_on_glibc() -> None:
    assert memory.limit_arenas(memory.ARENAS)


@needs_glibc
def test_trim_gives_freed_heap_pages_back() -> None:
    libc = ctypes.CDLL(memory.GLIBC)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # blocks under the mmap threshold live in the heap; the last one keeps its top in place,
    # so only a trim that returns the pages in the middle gives anything back
    blocks = [libc.malloc(64 * 1024) for _ in range(256)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    for block in blocks[:-1]:
        libc.free(block)
    try:
        assert memory.trim()
    finally:
        libc.free(blocks[-1])


async def test_the_trimmer_waits_out_start_up_then_trims_now_and_then() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await memory.run_trim(first_s=10.0, every_s=600.0, sleep=sleep)
    assert waits == [10.0, 600.0, 600.0]
