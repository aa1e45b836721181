"""The collector's application factory: routes, middleware and the store's lifetime."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from collector.accounts.access import access_middleware, accounts_context, add_account_routes
from collector.alerts.api import add_alert_routes
from collector.alerts.worker import alerts_context
from collector.config import CollectorConfig
from collector.errors import error_middleware
from collector.handlers import CONFIG, STORE, get_devices, get_readings, healthz, post_readings
from collector.hubs import HUBS, Hubs
from collector.live import LIVE, LiveHub
from collector.maintenance import maintenance_context
from collector.metrics import add_metrics, metrics_middleware
from collector.overview import add_device_routes
from collector.proxies import create_proxy_middleware
from collector.series import get_series
from collector.store import Clock, ReadingStore, StoreError, utc_now
from collector.store_sqlite import SqliteStore
from collector.ui.pages import add_ui
from pulse_common.http import add_security_headers

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_store(
    config: CollectorConfig, clock: Clock = utc_now
) -> AsyncIterator[ReadingStore]:
    """PostgreSQL when database_url is set, else the SQLite file `db`; closed on exit."""
    store: ReadingStore
    retention = None if config.retention_days is None else dt.timedelta(config.retention_days)
    if config.database_url:
        # imported here: a SQLite-only install needs no PostgreSQL driver
        try:
            from collector.store_postgres import PostgresStore
        except ImportError as err:
            raise StoreError(
                f"PostgreSQL needs asyncpg ({err}): pip install 'pulse-agent[postgres]'"
            ) from err
        store = await PostgresStore.open(config.database_url, clock=clock, retention=retention)
    else:
        store = await SqliteStore.open(config.db, clock=clock, retention=retention)
    try:
        yield store
    finally:
        await store.close()


def _store_context(
    config: CollectorConfig, clock: Clock
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def store_context(app: web.Application) -> AsyncIterator[None]:
        async with open_store(config, clock) as store:
            app[STORE] = store
            yield

    return store_context


def create_app(config: CollectorConfig, *, clock: Clock = utc_now) -> web.Application:
    """Build the collector: JSON errors, access rules, then store, accounts and alerts, in order."""
    # metrics first: it counts the status the client gets, refusals and errors included
    middlewares: list[Middleware] = [metrics_middleware, error_middleware, access_middleware]
    if config.trusted_proxies:
        # first: every later middleware and handler sees the client's address and scheme
        middlewares.insert(0, create_proxy_middleware(config.trusted_proxies))
    app = web.Application(client_max_size=config.body_limit_bytes, middlewares=middlewares)
    app[CONFIG] = config
    app[LIVE] = LiveHub()
    app[HUBS] = Hubs()
    app.on_response_prepare.append(add_security_headers)
    app.cleanup_ctx.append(_store_context(config, clock))
    app.cleanup_ctx.append(maintenance_context())
    if config.database_url:
        # other processes may share the database: their live events reach this one's pages
        from collector.live_postgres import live_context

        app.cleanup_ctx.append(live_context(config.database_url))
    app.cleanup_ctx.append(accounts_context(config, clock))
    app.cleanup_ctx.append(alerts_context(config, clock))
    app.router.add_post("/api/v1/readings", post_readings)
    app.router.add_get("/api/v1/readings", get_readings)
    app.router.add_get("/api/v1/devices", get_devices)
    app.router.add_get("/api/v1/series", get_series)
    app.router.add_get("/healthz", healthz)
    add_metrics(app)
    add_device_routes(app)
    add_alert_routes(app)
    add_account_routes(app)
    add_ui(app)
    return app
