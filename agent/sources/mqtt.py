"""An MQTT subscription as a push source: one topic, one number per message.

Payloads. Without `value_path` the payload itself is the value: a decimal number as
text ("21.5", "-3", "1e3"; surrounding spaces allowed), or a word for on/off devices:
true/on → 1.0, false/off → 0.0 (any case). With `value_path` the payload is JSON and the
value is at that dotted path: "power", "sensors.0.temp". A segment indexes a list when
the node there is a list and the segment is a whole number (0-based); in an object it is
always a key. The value found may be a JSON number, a boolean (true → 1.0, false → 0.0),
or a string that would be accepted as a whole payload ("21.5", "ON"). NaN and ±Inf are
refused in every form.

Session. The client connects with a persistent session (clean_session=False) and a
client id that is stable for this machine, broker and topic, and subscribes with QoS 1:
while the agent is away briefly (a restart, a network drop), the broker keeps the
messages and delivers them on reconnect. aiomqtt (paho underneath) sends the PUBACK
when it puts a message on its in-memory queue, before `emit` returns: a crash of the
agent loses the messages acked but not yet committed, at most the few in that queue.
A broker that restarts without persistence forgets the session; the source subscribes
again on every connect, so only messages published while it was down are missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import msgspec
from aiomqtt.exceptions import MqttConnectError

from agent.backoff import reconnect_delay
from agent.sources.base import Emit, Sample, SourceHealth, SourceState

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

QOS = 1
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
# a broker that never answers is noticed after 1.5 keepalives
KEEPALIVE_S = 30
# a device stuck on a bad payload would log at every message; once a minute is enough
BAD_LOG_EVERY_S = 60.0
# a wildcard topic could name ever new topics; forget the quiet ones past this many
BAD_TOPICS_MAX = 1000

_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_WORDS = {"true": 1.0, "on": 1.0, "false": 0.0, "off": 0.0}


class PayloadError(ValueError):
    """A message whose payload gives no usable number; the message says why."""


def _from_text(text: str) -> float:
    """A decimal number or an on/off word, else PayloadError."""
    stripped = text.strip()
    word = _WORDS.get(stripped.lower())
    if word is not None:
        return word
    if not _DECIMAL.fullmatch(stripped):
        raise PayloadError(f"not a number: {_excerpt(stripped)}")
    return _finite(float(stripped))


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise PayloadError(f"not a finite number: {value!r}")
    return value


def _excerpt(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _number(node: Any, path: str) -> float:
    """The value of a JSON node: a number, a boolean or a numeric/on-off string."""
    if isinstance(node, bool):
        return 1.0 if node else 0.0
    if isinstance(node, int | float):
        return _finite(float(node))
    if isinstance(node, str):
        try:
            return _from_text(node)
        except PayloadError as err:
            raise PayloadError(f"at {path!r}: {err}") from err
    kind = "null" if node is None else type(node).__name__.replace("dict", "object")
    raise PayloadError(f"at {path!r}: expected a number, got {kind}")


def _walk(doc: Any, value_path: str) -> Any:
    """The node at the dotted path, else PayloadError naming the first missing part."""
    node, done = doc, ""
    for key in value_path.split("."):
        here = f"{done}.{key}" if done else key
        if isinstance(node, dict):
            if key not in node:
                raise PayloadError(f"no {key!r} at {done or 'the top'}")
            node = node[key]
        elif isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise PayloadError(f"no item {key!r} in the list at {done or 'the top'}")
            node = node[int(key)]
        else:
            raise PayloadError(f"no {here!r}: {done or 'the payload'} is not an object or list")
        done = here
    return node


def parse_value(payload: bytes, value_path: str | None) -> float:
    """The number a message carries (see the module docstring), or PayloadError."""
    if value_path is None:
        try:
            text = payload.decode()
        except UnicodeDecodeError as err:
            raise PayloadError(f"not UTF-8 text: {err}") from err
        return _from_text(text)
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError as err:
        raise PayloadError(
            f"not JSON ({err}): {_excerpt(payload.decode(errors='replace'))}"
        ) from err
    return _number(_walk(doc, value_path), value_path)


class BadPayloads:
    """Logs refused payloads at most once a minute per topic, with the count held back."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        # topic -> (when last logged, refused since then)
        self._topics: dict[str, tuple[float, int]] = {}

    def note(self, topic: str, error: str) -> None:
        """One refused payload on `topic`: log it now, or count it for the next log line."""
        now = self._clock()
        logged_at, held = self._topics.get(topic, (None, 0))
        held += 1
        if logged_at is not None and now - logged_at < BAD_LOG_EVERY_S:
            self._topics[topic] = (logged_at, held)
            return
        logger.warning(
            "MQTT message on %s refused: %s (%d such messages on this topic since the last report)",
            topic,
            error,
            held,
        )
        self._topics[topic] = (now, 0)
        if len(self._topics) > BAD_TOPICS_MAX:
            self._forget_quiet(now)

    def _forget_quiet(self, now: float) -> None:
        for topic, (logged_at, _) in list(self._topics.items()):
            if now - logged_at >= BAD_LOG_EVERY_S:
                del self._topics[topic]


def default_client_id(prefix: str, host: str, port: int, topic: str) -> str:
    """A client id stable for this machine, broker and topic: the key to its session."""
    where = f"{socket.gethostname()}|{host}|{port}|{topic}"
    return f"{prefix}-{hashlib.sha256(where.encode()).hexdigest()[:12]}"


class _Refused(Exception):
    """The broker took the connection but refused the subscription."""


class MqttSource:
    """Numbers from one MQTT topic (wildcards allowed), one Sample per good message.

    Runs until cancelled: reconnects with exponential backoff when the broker is gone,
    reports its state through SourceHealth and counts refused payloads there. An
    exception from `emit` (the store failed) ends `run`: its owner decides.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        value_path: str | None,
        unit: str,
        *,
        client_id_prefix: str = "pulse",
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        backoff_min_s: float = BACKOFF_MIN_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.host, self.port, self.topic = host, port, topic
        self.value_path, self.unit = value_path, unit
        self.client_id = client_id or default_client_id(client_id_prefix, host, port, topic)
        self._username, self._password = username, password
        self._backoff = (backoff_min_s, backoff_max_s)
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._bad = BadPayloads(clock)

    @property
    def where(self) -> str:
        """The broker and topic, as log lines and the dashboard name them."""
        return f"{self.topic} at {self.host}:{self.port}"

    async def run(self, emit: Emit, health: SourceHealth) -> None:
        """Deliver samples until cancelled, reconnecting whenever the broker is lost."""
        attempt = 0
        lost_at: float | None = None
        while True:
            subscribed = False
            try:
                async with self._client() as client:
                    await self._subscribe(client)
                    self._connected(health, lost_at)
                    attempt, lost_at, subscribed = 0, None, True
                    async for message in client.messages:
                        await self._deliver(message, emit, health)
                    raise aiomqtt.MqttError("the message stream ended")
            except (aiomqtt.MqttError, _Refused) as err:
                reason, state = _describe(err, subscribed)
            if lost_at is None:
                lost_at = self._clock()
                logger.warning("MQTT %s: %s; reconnecting with backoff", self.where, reason)
            else:
                logger.debug("MQTT %s: retry %d failed: %s", self.where, attempt, reason)
            health.set_state(state, reason)
            await self._sleep(reconnect_delay(attempt, *self._backoff, self._rng))
            attempt += 1

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            clean_session=False,
            username=self._username,
            password=self._password,
            keepalive=KEEPALIVE_S,
        )

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        granted = await client.subscribe(self.topic, qos=QOS)
        codes = [code if isinstance(code, int) else code.value for code in granted]
        if any(code >= 0x80 for code in codes):
            raise _Refused(f"the broker refused the subscription to {self.topic!r}")

    def _connected(self, health: SourceHealth, lost_at: float | None) -> None:
        if lost_at is None:
            logger.info("MQTT %s: subscribed", self.where)
        else:
            logger.info("MQTT %s: reconnected after %.0f s", self.where, self._clock() - lost_at)
        health.set_state(SourceState.OK, f"subscribed to {self.where}")

    async def _deliver(self, message: aiomqtt.Message, emit: Emit, health: SourceHealth) -> None:
        topic = message.topic.value
        try:
            value = parse_value(message.payload, self.value_path)
        except PayloadError as err:
            error = f"{topic}: {err}"
            health.count_error(error)
            self._bad.note(topic, str(err))
            return
        await emit(Sample(value, self.unit))


def _describe(err: Exception, subscribed: bool) -> tuple[str, SourceState]:
    """Why the connection ended or never came, and the state that says it.

    A refused CONNACK (bad password, not authorised) or a refused subscription is an
    error that retrying alone will not cure; anything else is a lost broker.
    """
    if isinstance(err, _Refused):
        return str(err), SourceState.ERROR
    if isinstance(err, MqttConnectError):
        return f"the broker refused the connection: {err}", SourceState.ERROR
    # aiomqtt wraps the socket's error in "Disconnected during message iteration"
    detail = str(err.__cause__ or err) or type(err).__name__
    if subscribed:
        return f"connection lost ({detail})", SourceState.RECONNECTING
    return f"cannot connect ({detail})", SourceState.RECONNECTING
