"""The alerts API against real `python -m collector` processes, on SQLite and PostgreSQL.

Rules and channels are made through the API only, then fire and resolve through a real
webhook receiver (aiohttp on loopback) and a real SMTP server (aiosmtpd on loopback). The
engine's own behaviour (grouping, retries, state across a restart) is tested in
test_alerts_delivery.py; here, what the API adds: its answers, its errors naming keys, and
that what it stores drives the engine and survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.conftest import reading
from tests.harness import ROOT, Proc, start_collector
from tests.receivers import Mailbox, Webhook
from tests.test_collector_postgres import postgres_schema
from tests.test_collector_standalone import SITECUSTOMIZE

pytestmark = pytest.mark.e2e

INTERVAL_S = 0.2
IDS = itertools.count(1)


class Api:
    """A collector process and a client session for its JSON API."""

    def __init__(self, proc: Proc, session: aiohttp.ClientSession):
        self.proc = proc
        self.session = session

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """One request; the status and the decoded body (None when there is none)."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body)
        headers = {"Content-Type": "application/json"}
        url = f"{self.proc.url}/api/v1/{path}"
        async with self.session.request(method, url, data=data, headers=headers) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def ok(self, method: str, path: str, body: object = None) -> Any:
        """A request that must answer 2xx; its body."""
        status, answer = await self.call(method, path, body)
        assert 200 <= status < 300, (status, answer)
        return answer

    async def post_readings(self, device: str, *values: float, seq: int = 1) -> None:
        """Store readings of `device` from `seq` on."""
        readings = [reading(seq + i, value=v, id_=next(IDS)) for i, v in enumerate(values)]
        body = {"device_id": device, "stream": "hr", "readings": readings}
        answer = await self.ok("POST", "readings", body)
        assert answer["accepted"] == len(values), answer

    async def alert(self, rule: str, device: str) -> dict[str, Any] | None:
        """The current alert of `rule` on `device`, or None."""
        alerts = await self.ok("GET", f"alerts?device_id={quote(device)}")
        found = [a for a in alerts if a["rule"] == rule]
        return found[0] if found else None

    async def wait_for_state(self, rule: str, device: str, state: str) -> dict[str, Any]:
        """Poll until the alert is in `state`; fail after 20 s."""
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            alert = await self.alert(rule, device)
            if alert is not None and alert["state"] == state:
                return alert
            assert asyncio.get_running_loop().time() < deadline, alert
            await asyncio.sleep(0.05)


def path(name: str) -> str:
    """A rule or channel name as one path segment."""
    return quote(name, safe="")


async def wait_for(received: list[Any], count: int, within_s: float = 20.0) -> None:
    """Poll until `received` holds `count` messages."""
    deadline = asyncio.get_running_loop().time() + within_s
    while len(received) < count:
        assert asyncio.get_running_loop().time() < deadline, received
        await asyncio.sleep(0.05)


def write_config(workdir: Path, **alerts: Any) -> Path:
    """A collector config with a fast evaluation and `alerts` merged into its section."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "collector.json"
    config.write_text(json.dumps({"alerts": {"interval_s": INTERVAL_S, **alerts}}))
    return config


@contextlib.asynccontextmanager
async def database(backend: str) -> AsyncIterator[list[str]]:
    """The collector arguments for a fresh SQLite file (the default) or PostgreSQL schema."""
    if backend == "sqlite":
        yield []
        return
    async with postgres_schema() as url:
        yield ["--database-url", url]


@contextlib.asynccontextmanager
async def collector(workdir: Path, *args: str) -> AsyncIterator[Api]:
    """A collector process with an API client; stopped cleanly (exit 0) at the end."""
    proc = await asyncio.to_thread(start_collector, workdir, None, *args)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(proc, session)
    finally:
        code = await asyncio.to_thread(proc.stop)
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output(), proc.output()


def keys(answer: dict[str, Any]) -> list[str]:
    """The keys a 400 or 409 answer names."""
    return [p["key"] for p in answer["problems"]]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_rules_and_channels_are_made_changed_and_deleted_with_errors_naming_keys(
    backend: str, tmp_path: Path
) -> None:
    async with database(backend) as args:
        config = write_config(tmp_path)
        async with collector(tmp_path, "--config", str(config), *args) as api:
            # channels: each bad URL is named by its index
            status, answer = await api.call(
                "PUT", "channels/ops", {"urls": ["json://127.0.0.1:9/hook", "nope", 3]}
            )
            assert status == 400
            assert keys(answer) == ["urls[1]", "urls[2]"]
            assert "$.urls[1]" in answer["error"]
            status, answer = await api.call("PUT", "channels/ops", {"urls": []})
            assert (status, keys(answer)) == (400, ["urls"])
            status, answer = await api.call("PUT", "channels/ops", {"name": "other", "urls": []})
            assert status == 400
            assert "name" in keys(answer)
            assert (await api.call("PUT", "channels/a%20b", {"urls": ["json://h"]}))[0] == 400
            hook = {"urls": ["json://127.0.0.1:9/hook"]}
            odd = "ward/3·é"  # a slash (percent-encoded in the path) and non-ASCII
            assert await api.call("PUT", f"channels/{path(odd)}", hook) == (
                201,
                {"name": odd, "urls": hook["urls"]},
            )
            assert (await api.call("PUT", f"channels/{path(odd)}", hook))[0] == 200
            assert await api.ok("GET", "channels") == [{"name": odd, "urls": hook["urls"]}]

            # rules: the walk's keys first, then the checks across fields, then the channels
            name = "High rate / ward 3 — night"
            rule_path = f"rules/{path(name)}"
            status, answer = await api.call("PUT", rule_path, {"when": "above", "channels": [1]})
            assert (status, keys(answer)) == (400, ["channels[0]"])
            status, answer = await api.call("PUT", rule_path, {"when": "above", "for_s": -1})
            assert (status, keys(answer)) == (400, ["for_s"])
            status, answer = await api.call("PUT", rule_path, {"when": "above"})
            assert (status, keys(answer)) == (400, ["threshold"])
            body = {"when": "above", "threshold": 120, "clear": 130}
            status, answer = await api.call("PUT", rule_path, body)
            assert (status, keys(answer)) == (400, ["clear"])
            body = {"when": "silent", "threshold": 1, "surprise": True}
            status, answer = await api.call("PUT", rule_path, body)
            assert (status, keys(answer)) == (400, ["surprise"])
            body = {"name": "another", "when": "silent"}
            status, answer = await api.call("PUT", rule_path, body)
            assert (status, keys(answer)) == (400, ["name"])
            status, answer = await api.call("PUT", rule_path, b"{")
            assert status == 400
            body = {"when": "above", "threshold": 120, "channels": [odd, "ops"]}
            status, answer = await api.call("PUT", rule_path, body)
            assert (status, keys(answer)) == (409, ["channels[1]"])
            assert 'unknown channel "ops"' in answer["error"]
            body = {"when": "above", "threshold": 120, "clear": 110, "channels": [odd]}
            status, rule = await api.call("PUT", rule_path, body)
            assert status == 201
            assert rule == {
                "name": name,
                "device": "*",
                "when": "above",
                "threshold": 120,
                "clear": 110,
                "for_s": 0,
                "channels": [odd],
                "repeat_s": None,
            }
            # what GET lists can be PUT back as it is
            assert await api.ok("GET", "rules") == [rule]
            assert await api.call("PUT", rule_path, {**rule, "for_s": 30}) == (
                200,
                {**rule, "for_s": 30},
            )

            # a channel in use is not deleted; the answer names the rules
            status, answer = await api.call("DELETE", f"channels/{path(odd)}")
            assert (status, answer["rules"]) == (409, [name])
            assert await api.call("DELETE", rule_path) == (204, None)
            assert (await api.call("DELETE", rule_path))[0] == 404
            assert await api.call("DELETE", f"channels/{path(odd)}") == (204, None)
            assert (await api.call("DELETE", f"channels/{path(odd)}"))[0] == 404
            assert await api.ok("GET", "rules") == []
            assert await api.ok("GET", "channels") == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_rule_made_through_the_api_fires_and_resolves_through_a_webhook_and_smtp(
    backend: str, tmp_path: Path, webhook: Webhook, mailbox: tuple[Mailbox, str]
) -> None:
    box, mail_url = mailbox
    async with database(backend) as args:
        config = write_config(tmp_path)
        async with collector(tmp_path, "--config", str(config), *args) as api:
            await api.ok("PUT", "channels/ops", {"urls": [webhook.url, mail_url]})
            # for_s longer than the engine's read lag (2 s), so that pending can be seen
            rule = {"when": "above", "threshold": 120, "clear": 110, "for_s": 4}
            await api.ok("PUT", "rules/High%20heart%20rate", {**rule, "channels": ["ops"]})
            await api.post_readings("ward-3", 125, 130)
            await api.wait_for_state("High heart rate", "ward-3", "pending")
            firing = await api.wait_for_state("High heart rate", "ward-3", "firing")
            assert (firing["value"], firing["acknowledged"]) == (130, False)
            await wait_for(webhook.received, 1)
            await wait_for(box.messages, 1)
            await api.post_readings("ward-3", 100, seq=3)
            resolved = await api.wait_for_state("High heart rate", "ward-3", "resolved")
            assert resolved["value"] == 100
            assert await api.ok("GET", "alerts?state=resolved") == [resolved]
            assert await api.ok("GET", "alerts?state=firing") == []
            await wait_for(webhook.received, 2)
            await wait_for(box.messages, 2)
            history = await api.ok("GET", "alerts/history?device_id=ward-3")
            assert [h["state"] for h in history] == ["resolved", "firing", "pending"]
            assert history[0]["value"] == 100
            assert await api.ok("GET", "alerts/history?rule=nothing") == []
            assert len(await api.ok("GET", "alerts/history?limit=1")) == 1
    for texts in (webhook.texts(), box.messages):
        assert len(texts) == 2, texts
        (firing_text, resolved_text) = texts
        assert "firing" in firing_text
        assert "resolved" in resolved_text
        for text in texts:
            assert "High heart rate" in text
            assert "ward-3" in text


async def test_acknowledging_stops_the_repeats(tmp_path: Path, webhook: Webhook) -> None:
    config = write_config(tmp_path)
    async with collector(tmp_path, "--config", str(config)) as api:
        await api.ok("PUT", "channels/ops", {"urls": [webhook.url]})
        rule = {"when": "below", "threshold": 50, "repeat_s": 0.5, "channels": ["ops"]}
        await api.ok("PUT", "rules/Low", rule)
        await api.post_readings("bed-1", 40)
        await api.wait_for_state("Low", "bed-1", "firing")
        await wait_for(webhook.received, 3)  # the firing, then repeats
        assert "(still)" in webhook.texts()[-1]
        acked = await api.ok("POST", "alerts/ack", {"rule": "Low", "device_id": "bed-1"})
        assert (acked["state"], acked["acknowledged"]) == ("firing", True)
        told = len(webhook.received)
        await asyncio.sleep(2.5)  # five repeat periods
        # a repeat already on its way at the ack may still land, but no more after it
        assert len(webhook.received) <= told + 1
        status, answer = await api.call("POST", "alerts/ack", {"rule": "Low", "device_id": "x"})
        assert status == 404
        assert "'x'" in answer["error"]
        status, answer = await api.call("POST", "alerts/ack", {"rule": "Low"})
        assert (status, keys(answer)) == (400, ["device_id"])
        history = await api.ok("GET", "alerts/history?rule=Low")
        assert history[0]["state"] == "acknowledged"


async def test_a_silence_holds_the_notices_back_then_lets_them_through(
    tmp_path: Path, webhook: Webhook
) -> None:
    config = write_config(tmp_path)
    async with collector(tmp_path, "--config", str(config)) as api:
        await api.ok("PUT", "channels/ops", {"urls": [webhook.url]})
        rule = {"when": "above", "threshold": 120, "for_s": 5, "channels": ["ops"]}
        await api.ok("PUT", "rules/High", rule)
        await api.post_readings("bed-2", 130)
        await api.wait_for_state("High", "bed-2", "pending")
        key = {"rule": "High", "device_id": "bed-2"}
        status, answer = await api.call("POST", "alerts/silence", {**key, "for_s": 99e9})
        assert (status, keys(answer)) == (400, ["for_s"])
        silenced = await api.ok("POST", "alerts/silence", {**key, "for_s": 8})
        assert silenced["silenced_until"] is not None
        await api.post_readings("bed-2", 131, seq=2)
        firing = await api.wait_for_state("High", "bed-2", "firing")
        assert firing["silenced_until"] == silenced["silenced_until"]
        assert webhook.received == []  # fired, but silenced
        await wait_for(webhook.received, 1)  # told once the silence is over
        assert webhook.texts()[0].startswith("[firing] High on bed-2")
        # a silence of 0 lifts it
        await api.ok("POST", "alerts/silence", {**key, "for_s": 60})
        lifted = await api.ok("POST", "alerts/silence", {**key, "for_s": 0})
        assert lifted["silenced_until"] is None
        states = [h["state"] for h in await api.ok("GET", "alerts/history?rule=High")]
        assert states[:2] == ["silenced", "silenced"]


async def test_a_test_notification_reaches_the_webhook(tmp_path: Path, webhook: Webhook) -> None:
    config = write_config(tmp_path)
    async with collector(tmp_path, "--config", str(config)) as api:
        await api.ok("PUT", "channels/ops", {"urls": [webhook.url]})
        assert await api.call("POST", "channels/ops/test") == (200, {"delivered": True})
        (text,) = webhook.texts()
        assert text.startswith("[test] Pulse notification\n")
        assert "channel ops" in text
        webhook.fail = True
        status, answer = await api.call("POST", "channels/ops/test")
        assert (status, answer["delivered"]) == (200, False)
        assert "failed" in answer["error"]
        assert (await api.call("POST", "channels/nope/test"))[0] == 404


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_restart_keeps_alert_state_and_the_edits_made_through_the_api(
    backend: str, tmp_path: Path, webhook: Webhook
) -> None:
    seeded = {"name": "High", "when": "above", "threshold": 120, "for_s": 600}
    config = write_config(tmp_path, channels={"ops": [webhook.url]}, rules=[seeded])
    async with database(backend) as args:
        async with collector(tmp_path, "--config", str(config), *args) as api:
            # an edit through the API: the config file's rule no longer overrides it
            edited = {"when": "above", "threshold": 120, "for_s": 1, "channels": ["ops"]}
            await api.ok("PUT", "rules/High", edited)
            await api.post_readings("done", 130)
            await api.wait_for_state("High", "done", "firing")
            await api.post_readings("done", 100, seq=2)
            await api.wait_for_state("High", "done", "resolved")
            await wait_for(webhook.received, 2)
            # a second rule, left pending: its start must survive the restart
            slow = {"when": "below", "threshold": 50, "for_s": 3600, "channels": ["ops"]}
            await api.ok("PUT", "rules/Slow", slow)
            await api.post_readings("slow", 40)
            pending = await api.wait_for_state("Slow", "slow", "pending")
            before = await api.ok("GET", "alerts")
        async with collector(tmp_path, "--config", str(config), *args) as api:
            rules = {r["name"]: r for r in await api.ok("GET", "rules")}
            assert (rules["High"]["for_s"], rules["High"]["channels"]) == (1, ["ops"])
            await asyncio.sleep(1)  # a few evaluations after the restart
            assert await api.ok("GET", "alerts") == before
            assert await api.alert("Slow", "slow") == pending
    assert len(webhook.received) == 2, webhook.texts()  # the resolved alert did not fire again


async def test_without_apprise_the_server_evaluates_and_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apprise is in the server extra: without it the engine runs, and each send fails with
    an error that names the extra to install (the notices wait in the outbox)."""
    folder = tmp_path / "sitecustomize"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    paths = [str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("PULSE_BLOCKED", "apprise")
    monkeypatch.setenv("PULSE_BLOCKED_LOG", str(tmp_path / "blocked.log"))
    config = write_config(tmp_path / "work")
    async with collector(tmp_path / "work", "--config", str(config)) as api:
        # the URLs cannot be checked without Apprise: they are taken as they are
        await api.ok("PUT", "channels/ops", {"urls": ["json://127.0.0.1:9/hook"]})
        status, answer = await api.call("POST", "channels/ops/test")
        assert (status, answer["delivered"]) == (200, False)
        assert "pip install 'pulse-agent[server]'" in answer["error"]
        await api.ok("PUT", "rules/Low", {"when": "below", "threshold": 50, "channels": ["ops"]})
        await api.post_readings("bed-3", 40)
        await api.wait_for_state("Low", "bed-3", "firing")
        output = api.proc.output()
        deadline = asyncio.get_running_loop().time() + 20
        while "channel ops: notifications need the server extra" not in output:
            assert asyncio.get_running_loop().time() < deadline, output
            await asyncio.sleep(0.05)
            output = api.proc.output()
    assert "import apprise" in (tmp_path / "blocked.log").read_text()
    assert "alerts are evaluated, but no notification can be sent" in output


async def test_changes_and_transitions_are_told_to_the_live_hub(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """Pages refresh on {"type": "alerts"}: after each change through the API, and after an
    evaluation that moved an alert (not after one that moved none)."""
    from collector.app import create_app
    from collector.config import AlertsConfig, CollectorConfig
    from collector.live import LIVE

    config = CollectorConfig(db=str(tmp_path / "c.db"), alerts=AlertsConfig(interval_s=0.05))
    app = create_app(config)
    client = await aiohttp_client(app)

    async def next_event(subscription: Any) -> Any:
        """The next alerts event; the hub's other events (batches) are passed over."""
        async with asyncio.timeout(20):
            while (event := await subscription.next())["type"] != "alerts":
                pass
            return event

    with app[LIVE].subscribe() as events:
        answer = await client.put("/api/v1/rules/Low", json={"when": "below", "threshold": 50})
        assert answer.status == 201
        assert await next_event(events) == {"type": "alerts"}
        await asyncio.sleep(0.5)  # evaluations that move nothing tell nothing
        queued = []
        while not events.queue.empty():
            queued.append(events.queue.get_nowait())
        assert [e for e in queued if e["type"] == "alerts"] == []
        readings = [reading(1, value=40, id_=next(IDS))]
        body = {"device_id": "bed-4", "stream": "hr", "readings": readings}
        assert (await client.post("/api/v1/readings", json=body)).status == 200
        assert await next_event(events) == {"type": "alerts"}
        alerts = await (await client.get("/api/v1/alerts")).json()
        assert [a["state"] for a in alerts] == ["firing"]
        answer = await client.post("/api/v1/alerts/ack", json={"rule": "Low", "device_id": "bed-4"})
        assert answer.status == 200
        assert await next_event(events) == {"type": "alerts"}
        assert (await client.delete("/api/v1/rules/Low")).status == 204
        assert await next_event(events) == {"type": "alerts"}
        assert await (await client.get("/api/v1/alerts")).json() == []
    await client.close()
