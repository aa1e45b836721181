"""The agent's metrics in the Prometheus text format, by prometheus-client.

Imported at the first scrape (see agent.metrics). A custom collector reads the StatusHub
and the send durations at each scrape: nothing is copied or kept in step. Each agent app
has its own CollectorRegistry, never the global one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from agent.status import State

if TYPE_CHECKING:
    from agent.metrics import AgentMetrics, SendDurations, SourceCount


class Exposition:
    """One app's registry, with the collector of its metrics."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(HubCollector(metrics))

    def render(self) -> bytes:
        """Every metric, as it is now, in the text format 0.0.4."""
        return generate_latest(self.registry)


class HubCollector:
    """Reads the StatusHub, the per-source counts and the send durations at each scrape."""

    def __init__(self, metrics: AgentMetrics):
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """The metric families, from the status as it is now."""
        status = self._metrics.hub.status
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
        yield from _per_source(list(self._metrics.sources()))
        yield _send_durations(self._metrics.sends)


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


def _send_durations(sends: SendDurations) -> HistogramMetricFamily:
    counts = sends.cumulative()
    # the `le` labels as prometheus-client's own Histogram writes them: 0.005, 10.0, +Inf
    bounds = [repr(bound) for bound in sends.bounds] + ["+Inf"]
    return HistogramMetricFamily(
        "pulse_agent_send_duration_seconds",
        "How long each batch request took until the collector's answer, any answer.",
        buckets=list(zip(bounds, counts, strict=True)),
        sum_value=sends.sum,
    )
