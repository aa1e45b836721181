"""The MQTT source: payload parsing, and a real subscription on the real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from agent.backoff import reconnect_delay
from agent.sources.base import Sample, SourceHealth, SourceState
from agent.sources.mqtt import (
    BAD_LOG_EVERY_S,
    MqttSource,
    PayloadError,
    default_client_id,
    parse_value,
)
from tests.harness import free_port
from tests.requirements import mosquitto_address, require

LOGGER = "agent.sources.mqtt"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
DEADLINE_S = 15.0

# --- the parser, a pure function ---


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"21.5", 21.5),
        (b" -3\n", -3.0),
        (b"+4", 4.0),
        (b"1e3", 1000.0),
        (b".5", 0.5),
        (b"0", 0.0),
        (b"true", 1.0),
        (b"ON", 1.0),
        (b"off", 0.0),
        (b"False", 0.0),
    ],
)
def test_a_plain_payload_is_the_value(payload: bytes, expected: float) -> None:
    assert parse_value(payload, None) == expected


@pytest.mark.parametrize(
    ("payload", "path", "expected"),
    [
        (b'{"power": 9.1}', "power", 9.1),
        (b'{"power": 9}', "power", 9.0),
        (b'{"sensors": [{"temp": 20.0}, {"temp": 21.5}]}', "sensors.1.temp", 21.5),
        (b'[{"v": 3}]', "0.v", 3.0),
        (b'{"0": {"v": 4}}', "0.v", 4.0),
        (b'{"state": true}', "state", 1.0),
        (b'{"state": false}', "state", 0.0),
        (b'{"state": "ON"}', "state", 1.0),
        (b'{"temp": "21.5"}', "temp", 21.5),
        (b'{"a": {"b": {"c": -1.25}}}', "a.b.c", -1.25),
    ],
)
def test_a_json_payload_gives_the_value_at_the_path(
    payload: bytes, path: str, expected: float
) -> None:
    assert parse_value(payload, path) == expected


@pytest.mark.parametrize(
    ("payload", "path", "message"),
    [
        (b"", None, "not a number: ''"),
        (b"hello", None, "not a number: 'hello'"),
        (b"nan", None, "not a number: 'nan'"),
        (b"inf", None, "not a number: 'inf'"),
        (b"1e999", None, "not a finite number: inf"),
        (b"1_000", None, "not a number"),
        (b"\xff\xfe", None, "not UTF-8 text"),
        (b'{"power": 9}', None, "not a number"),
        (b"{power: 9}", "power", "not JSON"),
        (b"NaN", "power", "not JSON"),
        (b'{"power": 1e999}', "power", "not JSON (Number out of range"),
        (b'{"power": "1e999"}', "power", "at 'power': not a finite number: inf"),
        (b'{"power": 9}', "energy", "no 'energy' at the top"),
        (b'{"a": {"b": 1}}', "a.c", "no 'c' at a"),
        (b'{"a": [1, 2]}', "a.2", "no item '2' in the list at a"),
        (b'{"a": [1, 2]}', "a.x", "no item 'x' in the list at a"),
        (b'{"a": 5}', "a.b", "no 'a.b': a is not an object or list"),
        (b'{"a": null}', "a", "at 'a': expected a number, got null"),
        (b'{"a": {"b": 1}}', "a", "at 'a': expected a number, got object"),
        (b'{"a": [1]}', "a", "at 'a': expected a number, got list"),
        (b'{"a": "warm"}', "a", "at 'a': not a number: 'warm'"),
        (b'{"a": "nan"}', "a", "at 'a': not a number: 'nan'"),
    ],
)
def test_a_payload_without_a_usable_number_is_refused_with_the_reason(
    payload: bytes, path: str | None, message: str
) -> None:
    with pytest.raises(PayloadError, match="^" + re.escape(message)) as raised:
        parse_value(payload, path)
    assert message in str(raised.value)


def test_a_long_bad_payload_is_cut_in_the_message() -> None:
    with pytest.raises(PayloadError) as raised:
        parse_value(b"x" * 10_000, None)
    assert len(str(raised.value)) < 100


def test_backoff_doubles_to_the_maximum_with_jitter() -> None:
    rng = random.Random(1)
    delays = [reconnect_delay(attempt, 0.5, 30.0, rng) for attempt in range(12)]
    steps = [min(30.0, 0.5 * 2**attempt) for attempt in range(12)]
    assert all(step / 2 <= d <= step for d, step in zip(delays, steps, strict=True))
    assert delays[-1] >= 15.0
    # the jitter makes no two waits of a kind alike
    assert len({reconnect_delay(20, 0.5, 30.0, rng) for _ in range(10)}) == 10
    assert reconnect_delay(10_000, 0.5, 30.0, rng) <= 30.0


def test_the_default_client_id_is_stable_per_broker_and_topic() -> None:
    first = default_client_id("pulse", "broker", 1883, "home/bulb")
    assert first == default_client_id("pulse", "broker", 1883, "home/bulb")
    assert first.startswith("pulse-")
    assert first != default_client_id("pulse", "broker", 1883, "home/heater")
    assert first != default_client_id("pulse", "other", 1883, "home/bulb")
    assert MqttSource("broker", 1883, "home/bulb", None, "W").client_id == first


# --- against a real broker ---


@dataclass
class Received:
    """What the source handed over: its samples and its health."""

    samples: list[Sample] = field(default_factory=list)
    health: SourceHealth = field(default_factory=SourceHealth)
    states: list[SourceState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.health.on_change = lambda: self._note_state()

    def _note_state(self) -> None:
        if not self.states or self.states[-1] != self.health.state:
            self.states.append(self.health.state)

    async def emit(self, sample: Sample) -> None:
        # a commit takes a moment: the source must wait for it before the next message
        await asyncio.sleep(0)
        self.samples.append(sample)

    def values(self) -> list[float]:
        return [s.value for s in self.samples]


async def until(predicate: Callable[[], object], what: str, within: float = DEADLINE_S) -> None:
    """Poll until predicate() is true; fail naming `what` after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(source: MqttSource, received: Received) -> AsyncIterator[asyncio.Task[None]]:
    """The source's run loop as a task, cancelled at the end; the cancel must propagate."""
    task = asyncio.create_task(source.run(received.emit, received.health))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "run() swallowed its cancellation"


async def publish(host: str, port: int, topic: str, *payloads: bytes | str) -> None:
    """Publish each payload with QoS 1 from a separate real client, in order."""
    async with aiomqtt.Client(host, port) as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


async def forget_session(host: str, port: int, client_id: str) -> None:
    """Drop the broker's persistent session for `client_id` (a clean connect does)."""
    async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True):
        pass


@pytest.fixture
def broker() -> tuple[str, int]:
    """The system Mosquitto ($PULSE_TEST_MQTT, 127.0.0.1:1883 by default)."""
    return mosquitto_address()


@pytest.fixture
def topic() -> str:
    """A topic no other test run publishes on."""
    return f"pulse-test/{uuid.uuid4().hex}"


@pytest.fixture
async def source_for(
    broker: tuple[str, int],
) -> AsyncIterator[Callable[..., MqttSource]]:
    """Builds sources on the test broker with unique client ids; their sessions go after."""
    made: list[MqttSource] = []
    prefix = f"pulse-test-{uuid.uuid4().hex[:8]}"

    def make(topic: str, value_path: str | None = None, **kwargs: object) -> MqttSource:
        kwargs.setdefault("client_id_prefix", prefix)
        kwargs.setdefault("backoff_min_s", 0.05)
        kwargs.setdefault("backoff_max_s", 0.2)
        source = MqttSource(*broker, topic, value_path, "u", **kwargs)  # type: ignore[arg-type]
        made.append(source)
        return source

    yield make
    for source in made:
        await forget_session(*broker, source.client_id)


async def test_messages_arrive_in_order_value_by_value(
    broker: tuple[str, int], topic: str, source_for: Callable[..., MqttSource]
) -> None:
    received = Received()
    values = [round(random.uniform(-50, 50), 3) for _ in range(200)]
    async with running(source_for(topic), received):
        await until(lambda: received.health.state == SourceState.OK, "subscribed")
        assert received.health.detail == f"subscribed to {topic} at {broker[0]}:{broker[1]}"
        await publish(*broker, topic, *(str(v) for v in values))
        await until(lambda: len(received.samples) >= len(values), "all messages in")
    assert received.values() == values
    assert {s.unit for s in received.samples} == {"u"}
    assert received.health.errors_total == 0
    assert received.states == [SourceState.OK]


async def test_a_json_value_path_picks_the_value(
    broker: tuple[str, int], topic: str, source_for: Callable[..., MqttSource]
) -> None:
    received = Received()
    payloads = [
        b'{"sensors": [{"temp": 20.5}, {"temp": 1}]}',
        b'{"sensors": [{"temp": 21}, {"temp": 2}], "other": "x"}',
        b'{"sensors": [{"temp": 21.25}]}',
    ]
    async with running(source_for(topic, "sensors.0.temp"), received):
        await until(lambda: received.health.state == SourceState.OK, "subscribed")
        await publish(*broker, topic, *payloads)
        await until(lambda: len(received.samples) >= 3, "three messages in")
    assert received.values() == [20.5, 21.0, 21.25]


async def test_bad_payloads_are_counted_logged_once_a_minute_per_topic_and_survived(
    broker: tuple[str, int],
    topic: str,
    source_for: Callable[..., MqttSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    now = [1000.0]
    received = Received()
    source = source_for(f"{topic}/+", "power", clock=lambda: now[0])

    def refusals(device: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == LOGGER
            and "refused" in r.getMessage()
            and f"{topic}/{device}" in r.getMessage()
        ]

    async with running(source, received):
        await until(lambda: received.health.state == SourceState.OK, "subscribed")
        await publish(*broker, f"{topic}/a", b"not json", b'{"power": "warm"}', b"NaN")
        await publish(*broker, f"{topic}/b", b'{"energy": 3}', b'{"power": null}')
        await publish(*broker, f"{topic}/a", b'{"power": 9.5}')
        await until(lambda: received.values() == [9.5], "the good message after the bad")
        assert received.health.errors_total == 5
        assert received.health.last_error == f"{topic}/b: at 'power': expected a number, got null"
        assert received.health.state == SourceState.OK
        assert len(refusals("a")) == 1
        assert "not JSON" in refusals("a")[0]
        assert len(refusals("b")) == 1
        assert "no 'power' at the top" in refusals("b")[0]

        # a minute on, the next bad one on a is logged with the two held back before it
        now[0] += BAD_LOG_EVERY_S
        await publish(*broker, f"{topic}/a", b"[]", b'{"power": 9.25}')
        await until(lambda: received.values() == [9.5, 9.25], "the second good message")
    assert received.health.errors_total == 6
    assert len(refusals("a")) == 2
    assert "(3 such messages on this topic since the last report)" in refusals("a")[1]
    assert "(1 such messages" in refusals("a")[0]
    assert len(refusals("b")) == 1


async def test_the_session_keeps_messages_while_the_source_is_away(
    broker: tuple[str, int], topic: str, source_for: Callable[..., MqttSource]
) -> None:
    received = Received()
    source = source_for(topic)
    async with running(source, received):
        await until(lambda: received.health.state == SourceState.OK, "subscribed")
        await publish(*broker, topic, b"1")
        await until(lambda: received.values() == [1.0], "the first message")
    # the agent is away (a restart): the broker holds QoS 1 messages for its session
    await publish(*broker, topic, b"2", b"3", b"4")
    again = source_for(topic)
    assert again.client_id == source.client_id
    async with running(again, received):
        await until(lambda: len(received.samples) >= 4, "the messages sent while away")
    assert received.values() == [1.0, 2.0, 3.0, 4.0]


async def test_a_missing_broker_is_retried_with_backoff_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await asyncio.sleep(0)

    received = Received()
    port = free_port()  # nothing listens there: each connect is refused at once
    source = MqttSource(
        "127.0.0.1", port, "t", None, "u", backoff_min_s=0.5, backoff_max_s=4.0, sleep=sleep
    )
    async with running(source, received):
        await until(lambda: len(waits) >= 8, "eight retries")
    assert received.health.state == SourceState.RECONNECTING
    assert "Connection refused" in received.health.detail
    assert received.states == [SourceState.RECONNECTING]
    assert all(
        step / 2 <= w <= step for w, step in zip(waits[:8], [0.5, 1, 2, 4, 4, 4, 4, 4], strict=True)
    )
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "reconnecting with backoff" in warnings[0].getMessage()


# --- a broker of our own, to restart ---


class Mosquitto:
    """A mosquitto process on a port of its own, which a test can kill and start again."""

    def __init__(self, workdir: Path, *, allow_anonymous: bool = True) -> None:
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        anonymous = "true" if allow_anonymous else "false"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous {anonymous}\n")
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn mosquitto; `is_listening` tells when it takes connections."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )

    def is_listening(self) -> bool:
        """Whether the port takes a connection; a mosquitto that exited fails the test."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash or a pulled plug: no goodbye to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def _own_broker(tmp_path: Path, *, allow_anonymous: bool) -> Iterator[Mosquitto]:
    require(Path(MOSQUITTO).is_file(), f"missing {MOSQUITTO} (scripts/setup installs it)")
    broker = Mosquitto(tmp_path, allow_anonymous=allow_anonymous)
    yield broker
    broker.kill()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto (not yet started), killed at the end whatever happened."""
    yield from _own_broker(tmp_path, allow_anonymous=True)


@pytest.fixture
def refusing_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto that refuses anonymous clients (not yet started)."""
    yield from _own_broker(tmp_path, allow_anonymous=False)


async def test_a_broker_restart_is_reconnected_and_messages_flow_again(
    own_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    own_broker.start()
    await until(own_broker.is_listening, "mosquitto listening")
    received = Received()
    source = MqttSource(
        "127.0.0.1",
        own_broker.port,
        "home/heater",
        None,
        "°C",
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )
    async with running(source, received):
        await until(lambda: received.health.state == SourceState.OK, "subscribed")
        await publish("127.0.0.1", own_broker.port, "home/heater", b"55.5")
        await until(lambda: received.values() == [55.5], "the message before the restart")

        own_broker.kill()
        await until(
            lambda: received.health.state == SourceState.RECONNECTING, "reconnecting reported"
        )
        # let it fail a few times against the dead port before the broker comes back
        await until(lambda: "refused" in received.health.detail, "a refused reconnect", within=5)
        own_broker.start()
        await until(own_broker.is_listening, "mosquitto listening again")
        await until(lambda: received.health.state == SourceState.OK, "reconnected")
        await publish("127.0.0.1", own_broker.port, "home/heater", b"48", b"49.5")
        await until(lambda: len(received.samples) >= 3, "the messages after the restart")
    assert received.values() == [55.5, 48.0, 49.5]
    assert received.states == [SourceState.OK, SourceState.RECONNECTING, SourceState.OK]
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("reconnecting with backoff" in m for m in messages) == 1
    assert sum("reconnected after" in m for m in messages) == 1
    # the retries against the dead port stay below WARNING: one line for the outage
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "connection lost" in warnings[0].getMessage()


async def test_a_broker_that_refuses_us_is_an_error_not_a_lost_link(
    refusing_broker: Mosquitto,
) -> None:
    refusing_broker.start()
    await until(refusing_broker.is_listening, "mosquitto listening")
    received = Received()
    source = MqttSource("127.0.0.1", refusing_broker.port, "t", None, "u", backoff_min_s=0.05)
    async with running(source, received):
        await until(lambda: received.health.state == SourceState.ERROR, "the error state")
    assert received.health.detail.startswith("the broker refused the connection")
    assert "authori" in received.health.detail
