"""The alerts JSON API: alerts, acknowledge, silence, history, rules and channels.

Every change is told to the pages' websockets (`{"type": "alerts"}` on the live hub), so an
alerts page open elsewhere refreshes. Bad input is a 400 naming each bad key, like the
config's errors.
"""

from __future__ import annotations

import datetime as dt
import logging

import msgspec
from aiohttp import web
from msgspec import UNSET

from collector.alerts.engine import AlertEngine
from collector.alerts.evaluation import Alert, State
from collector.alerts.payloads import (
    AlertKey,
    AlertsQuery,
    HistoryQuery,
    Refusal,
    SilenceRequest,
    parse_body,
    parse_channel,
    parse_rule,
)
from collector.alerts.store import HistoryEntry
from collector.alerts.worker import ALERTS, announce_change
from collector.handlers import parse_query, refuse
from collector.live import LIVE
from pulse_common.http import json_response

logger = logging.getLogger(__name__)


class AlertView(msgspec.Struct, kw_only=True):
    """An alert as the API shows it."""

    rule: str
    device_id: str
    state: State
    since: dt.datetime
    value: float | None
    acknowledged: bool
    silenced_until: dt.datetime | None


class HistoryView(msgspec.Struct, kw_only=True):
    """One line of alert history as the API shows it."""

    rule: str
    device_id: str
    state: str
    at: dt.datetime
    value: float | None


def _view(alert: Alert) -> AlertView:
    return AlertView(
        rule=alert.rule,
        device_id=alert.device_id,
        state=alert.state,
        since=alert.since,
        value=alert.value,
        acknowledged=alert.acknowledged,
        silenced_until=alert.silenced_until,
    )


def _history_view(entry: HistoryEntry) -> HistoryView:
    return HistoryView(
        rule=entry.rule,
        device_id=entry.device_id,
        state=entry.state,
        at=entry.at,
        value=entry.value,
    )


def _engine(request: web.Request) -> AlertEngine:
    return request.app[ALERTS]


def _changed(request: web.Request) -> None:
    announce_change(request.app[LIVE])


def _refused(request: web.Request, refusal: Refusal) -> web.Response:
    logger.warning(
        "refused %s %s from %s: %d %s",
        request.method,
        request.path,
        request.remote,
        refusal.status,
        refusal.error,
    )
    return json_response(refusal.body(), refusal.status)


def _no_alert(request: web.Request, key: AlertKey | SilenceRequest) -> web.Response:
    return refuse(request, 404, f"no alert of rule {key.rule!r} on device {key.device_id!r}")


async def get_alerts(request: web.Request) -> web.StreamResponse:
    """Every current alert, or those in one state and/or of one device."""
    query = parse_query(request, AlertsQuery)
    if isinstance(query, web.Response):
        return query
    state = query.state if query.state is not UNSET else None
    alerts = await _engine(request).alerts(state)
    device_id = query.device_id
    return json_response([_view(a) for a in alerts if device_id in (UNSET, a.device_id)])


async def post_ack(request: web.Request) -> web.StreamResponse:
    """Acknowledge an alert: no more repeats while it keeps firing."""
    key = parse_body(await request.read(), AlertKey)
    if isinstance(key, Refusal):
        return _refused(request, key)
    engine = _engine(request)
    if not await engine.acknowledge(key.rule, key.device_id):
        return _no_alert(request, key)
    _changed(request)
    alert = await engine.alert(key.rule, key.device_id)
    return json_response(_view(alert)) if alert else _no_alert(request, key)


async def post_silence(request: web.Request) -> web.StreamResponse:
    """Hold back an alert's notifications for `for_s` seconds; 0 lifts the silence."""
    silence = parse_body(await request.read(), SilenceRequest)
    if isinstance(silence, Refusal):
        return _refused(request, silence)
    engine = _engine(request)
    if not await engine.silence_for(silence.rule, silence.device_id, silence.for_s):
        return _no_alert(request, silence)
    _changed(request)
    alert = await engine.alert(silence.rule, silence.device_id)
    return json_response(_view(alert)) if alert else _no_alert(request, silence)


async def get_history(request: web.Request) -> web.StreamResponse:
    """The newest alert history lines, of one rule and/or device if given."""
    query = parse_query(request, HistoryQuery)
    if isinstance(query, web.Response):
        return query
    rule = query.rule if query.rule is not UNSET else None
    device_id = query.device_id if query.device_id is not UNSET else None
    entries = await _engine(request).history(rule, device_id, query.limit)
    return json_response([_history_view(e) for e in entries])


async def get_rules(request: web.Request) -> web.StreamResponse:
    """Every rule, by name, in the config file's shape."""
    return json_response(await _engine(request).store.rules())


async def put_rule(request: web.Request) -> web.StreamResponse:
    """Create or replace a rule; from now on the config file no longer overrides it."""
    store = _engine(request).store
    channels = {c.name for c in await store.channels()}
    rule = parse_rule(await request.read(), request.match_info["name"], channels)
    if isinstance(rule, Refusal):
        return _refused(request, rule)
    created = await store.put_rule(rule)
    logger.info("rule %r %s", rule.name, "created" if created else "replaced")
    _changed(request)
    return json_response(rule, 201 if created else 200)


async def delete_rule(request: web.Request) -> web.StreamResponse:
    """Delete a rule and its current alerts; their history stays."""
    name = request.match_info["name"]
    if not await _engine(request).store.delete_rule(name):
        return refuse(request, 404, f"no rule named {name!r}")
    logger.info("rule %r deleted", name)
    _changed(request)
    return web.Response(status=204)


async def get_channels(request: web.Request) -> web.StreamResponse:
    """Every channel with its URLs (which hold secrets: a change-level read)."""
    return json_response(await _engine(request).store.channels())


async def put_channel(request: web.Request) -> web.StreamResponse:
    """Create or replace a channel; every URL must be one Apprise can use."""
    channel = parse_channel(await request.read(), request.match_info["name"])
    if isinstance(channel, Refusal):
        return _refused(request, channel)
    created = await _engine(request).store.put_channel(channel)
    logger.info("channel %r %s", channel.name, "created" if created else "replaced")
    _changed(request)
    return json_response(channel, 201 if created else 200)


async def delete_channel(request: web.Request) -> web.StreamResponse:
    """Delete a channel no rule uses; a 409 names the rules that still do."""
    name = request.match_info["name"]
    users = await _engine(request).store.delete_channel(name)
    if users is None:
        return refuse(request, 404, f"no channel named {name!r}")
    if users:
        text = f"channel {name!r} is used by the rules {', '.join(map(repr, users))}"
        logger.warning("refused %s %s: 409 %s", request.method, request.path, text)
        return json_response({"error": text, "rules": users}, 409)
    logger.info("channel %r deleted", name)
    _changed(request)
    return web.Response(status=204)


async def post_test(request: web.Request) -> web.StreamResponse:
    """Send a test notification to a channel now; `delivered` false and why if it failed.

    A message that did not arrive is the channel's fault, not the collector's: a 200.
    """
    name = request.match_info["name"]
    engine = _engine(request)
    found = [c for c in await engine.store.channels() if c.name == name]
    if not found:
        return refuse(request, 404, f"no channel named {name!r}")
    why = await engine.send_test(found[0])
    if why is not None:
        text = f"the test notification to {name!r} failed: {why}"
        logger.warning("POST %s: %s", request.path, text)
        return json_response({"delivered": False, "error": text})
    return json_response({"delivered": True})


def add_alert_routes(app: web.Application) -> None:
    """Register the alert routes."""
    router = app.router
    router.add_get("/api/v1/alerts", get_alerts)
    router.add_post("/api/v1/alerts/ack", post_ack)
    router.add_post("/api/v1/alerts/silence", post_silence)
    router.add_get("/api/v1/alerts/history", get_history)
    router.add_get("/api/v1/rules", get_rules)
    router.add_put("/api/v1/rules/{name}", put_rule)
    router.add_delete("/api/v1/rules/{name}", delete_rule)
    router.add_get("/api/v1/channels", get_channels)
    router.add_put("/api/v1/channels/{name}", put_channel)
    router.add_delete("/api/v1/channels/{name}", delete_channel)
    router.add_post("/api/v1/channels/{name}/test", post_test)
