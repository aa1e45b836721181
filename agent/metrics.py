"""Prometheus metrics of the agent, at GET /metrics on the dashboard's port.

The sender's batch round trips are counted here as they happen (`SendDurations`, fed by
`StatusHub.observe_send`); everything else is read from the StatusHub at each scrape.
prometheus-client itself (about 1 MiB of RSS) is imported at the first scrape, by
agent.exposition, which turns these into the text format: an agent nobody scrapes never
loads it. Each app has its own registry, never the global one. Per-source counts come from
a callable set on `AgentMetrics.sources` (empty until the sources provide one).

Access: a GET that reads, like /api/status: it needs no unlock, and the dashboard's guard
(agent.security) still refuses a foreign Host, so a rebound DNS name cannot read it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import hdrs, web

from agent.status import StatusHub

if TYPE_CHECKING:
    from agent.exposition import Exposition

logger = logging.getLogger(__name__)

# from a LAN round trip to the sender's longest timeouts
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# the Prometheus text format, version 0.0.4 (what prometheus-client writes)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SourceCount(NamedTuple):
    """One source's counts since the agent started."""

    device_id: str
    readings_total: int
    errors_total: int


SourceCounts = Callable[[], Iterable[SourceCount]]


def no_sources() -> list[SourceCount]:
    """The per-source counts before the sources provide theirs: none."""
    return []


class SendDurations:
    """A histogram of batch round trips: a count per bucket of SEND_BUCKETS, and the sum."""

    def __init__(self, bounds: tuple[float, ...] = SEND_BUCKETS) -> None:
        self.bounds = bounds
        # one count per bound, and the last for what is above them all (+Inf)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one round trip in the first bucket whose bound is at least `seconds`."""
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[int]:
        """Each bucket's count of round trips at most its bound, +Inf last (as Prometheus)."""
        out, total = [], 0
        for count in self.counts:
            total += count
            out.append(total)
        return out


class AgentMetrics:
    """The agent's metrics: the hub read at each scrape, and the send durations."""

    def __init__(self, hub: StatusHub) -> None:
        self.hub = hub
        # set by whoever runs the sources, e.g. `metrics.sources = registry.counts`
        self.sources: SourceCounts = no_sources
        self.sends = SendDurations()
        # the hub lives as long as this app: the observer is never removed
        hub.add_send_observer(self.sends.observe)
        self._exposition: Exposition | None = None

    def render(self) -> bytes:
        """The text exposition of every metric, as it is now."""
        if self._exposition is None:
            # imported here, at the first scrape: see the module's doc
            from agent.exposition import Exposition

            self._exposition = Exposition(self)
        return self._exposition.render()


METRICS = web.AppKey("metrics", AgentMetrics)


async def get_metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics in the Prometheus text format 0.0.4."""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})


def add_metrics(app: web.Application, hub: StatusHub) -> None:
    """Give the app its own metrics of `hub` and the GET /metrics route."""
    app[METRICS] = AgentMetrics(hub)
    app.router.add_get("/metrics", get_metrics)
