"""Prometheus metrics of the agent, at GET /metrics on the dashboard's port.

A custom collector reads the StatusHub at each scrape (nothing is copied or kept in step),
and a histogram takes the sender's batch round trips (`StatusHub.observe_send`). Each app
has its own CollectorRegistry, never the global one. Per-source counts come from a
callable set on `AgentMetrics.sources` (empty until the sources provide one).

Access: a GET that reads, like /api/status: it needs no unlock, and the dashboard's guard
(agent.security) still refuses a foreign Host, so a rebound DNS name cannot read it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.status import State, StatusHub

logger = logging.getLogger(__name__)

# from a LAN round trip to the sender's longest timeouts
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SourceCount(NamedTuple):
    """One source's counts since the agent started."""

    device_id: str
    readings_total: int
    errors_total: int


SourceCounts = Callable[[], Iterable[SourceCount]]


def no_sources() -> list[SourceCount]:
    """The per-source counts before the sources provide theirs: none."""
    return []


class HubCollector:
    """Reads the StatusHub's queue counts and delivery state at each scrape."""

    def __init__(self, hub: StatusHub, sources: SourceCounts):
        self._hub = hub
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        """The metric families, from the status as it is now."""
        status = self._hub.status
        yield GaugeMetricFamily(
            "pulse_agent_pending_readings", "Readings queued, not yet sent.", value=status.pending
        )
        yield CounterMetricFamily(
            "pulse_agent_sent_readings",
            "Readings the collector acknowledged (kept in the queue file across restarts).",
            value=status.sent_total,
        )
        # the queue's counts, not counters: a dropped reading found delivered after all
        # leaves `dropped`, and retry-dead empties `dead`
        yield GaugeMetricFamily(
            "pulse_agent_dropped_readings",
            "Readings dropped by the queue's cap and never delivered.",
            value=status.dropped_total,
        )
        yield GaugeMetricFamily(
            "pulse_agent_dead_letters",
            "Readings the collector refused for good, kept as dead letters.",
            value=status.dead_total,
        )
        yield CounterMetricFamily(
            "pulse_agent_invalid_values",
            "Values a source gave that cannot be sent (NaN, Inf), since the agent started.",
            value=status.invalid_total,
        )
        yield _delivery_state(status.state)
        if status.last_send_at is not None:
            yield GaugeMetricFamily(
                "pulse_agent_last_send_timestamp_seconds",
                "When the collector last acknowledged a batch (Unix time).",
                value=status.last_send_at,
            )
        yield from _per_source(list(self._sources()))


def _delivery_state(current: State) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "pulse_agent_delivery_state",
        "Where delivery stands: 1 for the current state, 0 for the others.",
        labels=["state"],
    )
    for state in State:
        family.add_metric([state.value], 1.0 if state is current else 0.0)
    return family


def _per_source(counts: list[SourceCount]) -> Iterator[Metric]:
    readings = CounterMetricFamily(
        "pulse_agent_source_readings",
        "Readings each source gave, by the device id they are sent under.",
        labels=["device_id"],
    )
    errors = CounterMetricFamily(
        "pulse_agent_source_errors",
        "Inputs each source refused or reads that failed, by device id.",
        labels=["device_id"],
    )
    for count in counts:
        readings.add_metric([count.device_id], count.readings_total)
        errors.add_metric([count.device_id], count.errors_total)
    yield readings
    yield errors


class AgentMetrics:
    """The agent's registry: the hub's collector and the send-duration histogram."""

    def __init__(self, hub: StatusHub) -> None:
        self.registry = CollectorRegistry()
        # set by whoever runs the sources, e.g. `metrics.sources = registry.counts`
        self.sources: SourceCounts = no_sources
        # looked up at each scrape: `sources` may be set after this
        self.registry.register(HubCollector(hub, lambda: self.sources()))
        self._sends = Histogram(
            "pulse_agent_send_duration_seconds",
            "How long each batch request took until the collector's answer, any answer.",
            buckets=SEND_BUCKETS,
            registry=self.registry,
        )
        # the hub lives as long as this app: the observer is never removed
        hub.add_send_observer(self._sends.observe)

    def render(self) -> bytes:
        """The text exposition of every metric, as it is now."""
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", AgentMetrics)


async def get_metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics in the Prometheus text format 0.0.4."""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAIN_0_0_4})


def add_metrics(app: web.Application, hub: StatusHub) -> None:
    """Give the app its own metrics of `hub` and the GET /metrics route."""
    app[METRICS] = AgentMetrics(hub)
    app.router.add_get("/metrics", get_metrics)
