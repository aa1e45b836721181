"""Prometheus metrics of one collector process: requests, stored batches, alert states.

GET /metrics answers in the Prometheus text format (`text/plain; version=0.0.4`). Each app
keeps its counters in its own CollectorRegistry, never the global one, so two apps in one
process count apart. With N processes behind nginx each process counts only what it served:
scrape every process on its own port (one scrape target each) and sum in PromQL; a scrape
through the balancer would see a different process each time. The alert states are read
from the shared database at each scrape, so every process shows the same values for them.

Access: /metrics is a read like the JSON read APIs (collector.accounts.access): open mode,
a session, or `Authorization: Bearer <read token>` (Prometheus: `authorization:
{credentials: ...}` in the scrape config). A device token does not read it.
"""

from __future__ import annotations

import logging
from typing import get_args

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from collector.alerts.evaluation import State
from collector.alerts.store import AlertStore
from collector.alerts.worker import ALERTS
from pulse_wire import Ack, Rejection

logger = logging.getLogger(__name__)

OUTCOMES = ("accepted", "duplicate", "conflict", "rejected")
ALERT_STATES: tuple[State, ...] = get_args(State)
# any other method a client makes up is counted as "other": label values stay bounded
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# a path no route matches (404) or a method its route does not take (405)
UNMATCHED = "unmatched"
# the endings of collector.conflicts' texts: a conflict is a rejection of its own kind
CONFLICT_ENDINGS = ("(seq conflict)", "(id conflict)")


def is_conflict(rejection: Rejection) -> bool:
    """True if the store refused the reading because its seq or id holds another one."""
    return rejection.error.endswith(CONFLICT_ENDINGS)


class Metrics:
    """This process's counters and the alert-state gauge, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "pulse_collector_http_requests",
            "HTTP requests answered, by method, route (its pattern) and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._batches = Counter(
            "pulse_collector_batches",
            "Batches stored and acknowledged.",
            registry=self.registry,
        )
        self._readings = Counter(
            "pulse_collector_readings",
            "Readings of acknowledged batches by outcome: accepted, duplicate, conflict "
            "(its seq or id holds another reading) or rejected (implausible).",
            ["outcome"],
            registry=self.registry,
        )
        self._alerts = Gauge(
            "pulse_collector_alerts",
            "Current alerts by state, read from the database at scrape time.",
            ["state"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            # shown at 0 from the start: a rate() needs the series before the first event
            self._readings.labels(outcome)

    def count_request(self, method: str, route: str, status: int) -> None:
        """One answered request."""
        shown = method if method in METHODS else "other"
        self._requests.labels(shown, route, str(status)).inc()

    def count_batch(self, ack: Ack) -> None:
        """One stored batch, by the outcome of each of its readings."""
        conflicts = sum(1 for rejection in ack.rejected if is_conflict(rejection))
        self._batches.inc()
        self._readings.labels("accepted").inc(ack.accepted)
        self._readings.labels("duplicate").inc(ack.duplicates)
        self._readings.labels("conflict").inc(conflicts)
        self._readings.labels("rejected").inc(len(ack.rejected) - conflicts)

    def render(self, alert_counts: dict[str, int]) -> bytes:
        """The text exposition, with the alert gauge set from `alert_counts` first."""
        for state in ALERT_STATES:
            self._alerts.labels(state).set(alert_counts.get(state, 0))
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


async def alert_counts(store: AlertStore) -> dict[str, int]:
    """How many current alerts are in each state."""
    return await store.state_counts()


def route_of(request: web.Request) -> str:
    """The pattern of the route that took the request (never the raw URL), or UNMATCHED."""
    resource = request.match_info.route.resource
    return UNMATCHED if resource is None else resource.canonical


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answered request by method, route and status (outermost: final status)."""
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        metrics.count_request(request.method, route_of(request), exc.status)
        raise
    except Exception:
        metrics.count_request(request.method, route_of(request), 500)
        raise
    # a request cancelled by a client that hung up got no answer, and is not counted
    metrics.count_request(request.method, route_of(request), response.status)
    return response


async def get_metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics: this process's counters and the database's alert states."""
    # 0.0.4 by name: prometheus-client's CONTENT_TYPE_LATEST now says 1.0.0, which older
    # scrapers do not know; generate_latest's output (legacy names) is valid 0.0.4
    # prometheus collectors are synchronous: the async query runs first, then the render
    counts = await alert_counts(request.app[ALERTS].store)
    body = request.app[METRICS].render(counts)
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAIN_0_0_4})


def add_metrics(app: web.Application) -> None:
    """Give the app its own metrics and the GET /metrics route (the middleware goes first)."""
    app[METRICS] = Metrics()
    app.router.add_get("/metrics", get_metrics)
