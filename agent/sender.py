"""The delivery loop: batching, response classification, backoff and catch-up."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec

import pulse_wire as wire
from agent.config import Config
from agent.status import State, StatusHub
from agent.store import QueuedBatch, Store

logger = logging.getLogger(__name__)

# names the agent that relays a source's device (the server shows it beside the device)
HUB_HEADER = "Pulse-Hub"

BACKOFF_BASE_S = 0.5
BACKOFF_FLOOR_S = 0.05
RETRY_AFTER_MAX_S = 3600.0
# Batches in flight at once while catching up: one commits at the collector, one travels.
IN_FLIGHT = 2
RATE_MIN_SPAN_S = 1.0


class Verdict(enum.Enum):
    """What to do with a batch after one attempt."""

    ACKED = "acked"
    RETRY = "retry"  # connection error, timeout, 5xx, 408, 429, unreadable ack
    OFFLINE = "offline"
    UNAUTHORIZED = "unauthorized"  # 401, 403
    SHRINK = "shrink"  # 413
    REJECTED = "rejected"  # any other 4xx: the whole batch refused


@dataclass(frozen=True)
class Outcome:
    """One attempt's verdict, with the ack or the reason, and any Retry-After."""

    verdict: Verdict
    ack: wire.Ack | None = None
    reason: str = ""
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_MAX_S)


def classify(status: int, body: bytes, batch_len: int, retry_after: float | None) -> Outcome:
    """Turn an HTTP answer into a verdict; never drops readings on an unclear answer."""
    if status == 200:
        try:
            ack = wire.decode_ack(body)
        except wire.WireError as err:
            return Outcome(Verdict.RETRY, reason=f"unreadable ack: {err}")
        covered = ack.accepted + ack.duplicates + len(ack.rejected)
        if covered != batch_len:
            return Outcome(Verdict.RETRY, reason=f"ack covers {covered} of {batch_len} readings")
        return Outcome(Verdict.ACKED, ack=ack)
    reason = f"HTTP {status}: {_error_text(body)}"
    if status in (408, 429) or status >= 500:
        return Outcome(Verdict.RETRY, reason=reason, retry_after=retry_after)
    if status in (401, 403):
        return Outcome(Verdict.UNAUTHORIZED, reason=reason, retry_after=retry_after)
    if status == 413:
        return Outcome(Verdict.SHRINK, reason=reason)
    return Outcome(Verdict.REJECTED, reason=reason, retry_after=retry_after)


def _error_text(body: bytes) -> str:
    try:
        return msgspec.json.decode(body, type=wire.ErrorBody).error[:300]
    except msgspec.DecodeError:
        return body[:300].decode("utf-8", "replace") or "(empty body)"


def backoff_delay(attempt: int, max_backoff: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [floor, min(max, base * 2^attempt)]."""
    ceiling = min(max_backoff, BACKOFF_BASE_S * 2 ** min(attempt, 30))
    return min(max_backoff, max(BACKOFF_FLOOR_S, rng.uniform(0, ceiling)))


def encode_batch(device_id: str, batch: QueuedBatch) -> bytes:
    """The POST body; the readings are already wire JSON, straight from SQLite."""
    return wire.batch_body(batch.device_id or device_id, batch.stream, batch.readings_json)


_FAILURE_STATES = {
    Verdict.RETRY: State.RETRYING,
    Verdict.OFFLINE: State.OFFLINE,
    Verdict.UNAUTHORIZED: State.UNAUTHORIZED,
    Verdict.REJECTED: State.REJECTED,
    Verdict.SHRINK: State.RETRYING,
}


def _never_paused() -> bool:
    return False


class Sender:
    """Drains the queue to the collector; Control wakes it with send_now() and owns the pause,
    which the Sender asks for (`is_paused`) before each batch."""

    def __init__(
        self,
        store: Store,
        hub: StatusHub,
        session: aiohttp.ClientSession,
        get_config: Callable[[], Config],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        in_flight: int = IN_FLIGHT,
        is_paused: Callable[[], bool] = _never_paused,
        relay_for: Callable[[], str] | None = None,
    ):
        # relaying another device's readings: the agent's own id, sent as the Pulse-Hub header
        self._relay_for = relay_for
        self._store = store
        self._hub = hub
        self._session = session
        self._get_config = get_config
        self._rng = rng or random.Random()
        self._clock = clock
        self._in_flight = in_flight
        self._wake = asyncio.Event()
        self._attempt = 0
        self._cap: int | None = None
        self._down_since: float | None = None
        self._catchup_started: float | None = None
        self._catchup_sent = 0
        self._is_paused = is_paused

    def send_now(self) -> None:
        """Wake up at once: send now, or see that the pause changed."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; a failed cycle is logged, backed off and survived."""
        delay = 0.0
        while True:
            await self._sleep(delay)
            if self._is_paused():
                delay = 3600.0
                continue
            try:
                delay = await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("sender cycle failed")
                self._attempt += 1
                delay = backoff_delay(
                    self._attempt, self._get_config().sender.max_backoff_s, self._rng
                )

    async def _sleep(self, delay: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that lands as the wake-up fires, and the worker would then never stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    async def cycle(self) -> float:
        """Send the oldest batch, and keep going back to back while a backlog remains.

        Returns how long to wait before the next cycle.
        """
        cfg = self._get_config().sender
        if self._store.salvage_pending:
            delay = await self._send_salvaged()
            if delay is not None:
                return delay
        window: collections.deque[tuple[QueuedBatch, asyncio.Task[Outcome]]] = collections.deque()
        size = self._limit(cfg.batch_size)  # the first batch: whatever is there, up to this
        last_seq = 0
        more = True
        acking: asyncio.Task[None] | None = None
        try:
            while not self._is_paused():
                while more and len(window) < self._in_flight and not self._is_paused():
                    # later batches fly while the collector commits the earlier ones
                    nxt = await self._store.oldest(size, last_seq)
                    if nxt is None or (last_seq and len(nxt) < cfg.batch_size):
                        more = False  # below one batch: back to the normal cadence
                        break
                    window.append((nxt, asyncio.create_task(self.post(nxt))))
                    last_seq = nxt.last_seq
                    size = self._limit(max(cfg.batch_size, cfg.catchup_batch_size))
                if not window:
                    break
                batch, posting = window.popleft()
                outcome = await posting
                if acking is not None:
                    await acking  # acks commit in order, each while later batches fly
                    acking = None
                if outcome.verdict is Verdict.REJECTED and not self._is_paused():
                    # batches behind this one were read past it: drop them, re-read after
                    outcome = await self._bisect(batch, outcome)
                    if outcome.verdict is Verdict.ACKED:
                        return 0.0
                if outcome.verdict is not Verdict.ACKED:
                    return self._on_failure(outcome, len(batch))
                assert outcome.ack is not None  # ACKED always carries it
                acking = asyncio.create_task(self._on_success(batch, outcome.ack))
        finally:
            # batches still in flight stay queued; a resend is only a duplicate
            for _, posting in window:
                posting.cancel()
            await asyncio.gather(*(p for _, p in window), return_exceptions=True)
            if acking is not None:
                await acking
        return self._finish_cycle(cfg.interval_s)

    async def _send_salvaged(self) -> float | None:
        """Send the readings recovered from a damaged queue file, one batch at a time.

        Returns the delay after a failure, or None once they are all delivered.
        """
        size = self._get_config().sender.catchup_batch_size
        while not self._is_paused() and (batch := await self._store.oldest_salvaged(size)):
            outcome = await self.post(batch)
            if outcome.verdict is Verdict.REJECTED:
                outcome = await self._bisect(batch, outcome)
            if outcome.verdict is not Verdict.ACKED:
                return self._on_failure(outcome, len(batch))
            if outcome.ack is not None:
                await self._on_success(batch, outcome.ack)
        return None

    async def _bisect(self, batch: QueuedBatch, refused: Outcome) -> Outcome:
        """Find the readings the collector refuses in a batch it refused whole.

        Halves are sent until each refused reading stands alone; those become dead letters
        with the server's reason, the rest are delivered. If no reading of the batch is
        accepted, the refusal is about the request (address, device id), not a reading:
        everything stays queued. Returns ACKED when the batch is resolved, or the verdict
        that stopped the search (offline, retry...), with the batch kept.
        """
        parts = [batch]
        refusals: list[tuple[QueuedBatch, str]] = []
        accepted = False
        while parts:
            part = parts.pop(0)
            outcome = refused if part is batch else await self.post(part)
            if outcome.verdict is Verdict.ACKED:
                assert outcome.ack is not None
                await self._on_success(part, outcome.ack)
                accepted = True
            elif outcome.verdict is Verdict.REJECTED and len(part) > 1:
                parts[:0] = part.split()
            elif outcome.verdict is Verdict.REJECTED:
                refusals.append((part, outcome.reason))
            else:
                return outcome
        if not accepted:
            return refused
        for single, reason in refusals:
            rejection = wire.Rejection(id=single.ids[0], error=f"refused alone: {reason}")
            await self._on_success(single, wire.Ack(accepted=0, duplicates=0, rejected=[rejection]))
        return Outcome(Verdict.ACKED, ack=wire.Ack(accepted=0, duplicates=0))

    def _finish_cycle(self, interval: float) -> float:
        self._end_catchup()
        if self._hub.status.state is State.STARTING:
            self._set_state(State.SENDING)
        return interval

    def _set_state(self, state: State, detail: str = "") -> None:
        # while paused the hub keeps showing "paused": a send that was in flight when the
        # user paused does not unpause the display
        self._hub.set_state(state, detail)

    def _limit(self, size: int) -> int:
        return min(size, self._cap) if self._cap else size

    async def post(self, batch: QueuedBatch) -> Outcome:
        """POST one batch and classify the answer."""
        cfg = self._get_config()
        body = encode_batch(self._store.device_for(cfg.device_id), batch)
        headers = {"Content-Type": "application/json"}
        if self._relay_for is not None:
            headers[HUB_HEADER] = self._relay_for()
        if cfg.server.token:
            headers["Authorization"] = f"Bearer {cfg.server.token}"
        timeout = aiohttp.ClientTimeout(total=cfg.server.timeout_s)
        started = time.monotonic()
        try:
            async with self._session.post(
                cfg.server.url, data=body, headers=headers, timeout=timeout
            ) as resp:
                data = await resp.read()
                # the round trip of an answered request; a refused connection is not timed
                self._hub.observe_send(time.monotonic() - started)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
                return classify(resp.status, data, len(batch), retry_after)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            return Outcome(Verdict.OFFLINE, reason=_describe(err))

    async def _on_success(self, batch: QueuedBatch, ack: wire.Ack) -> None:
        sent = await self._store.ack(batch, ack.rejected)
        if ack.rejected:
            logger.warning(
                "collector rejected %d readings; kept as dead letters (first: %s)",
                len(ack.rejected),
                ack.rejected[0].error,
            )
        now = self._clock()
        if self._down_since is not None:
            logger.info(
                "collector reachable again after %s; %d queued, draining",
                _duration(now - self._down_since),
                self._store.pending,
            )
            self._down_since = None
        self._attempt = 0
        if self._cap:
            self._cap *= 2
            if self._cap >= self._get_config().sender.catchup_batch_size:
                self._cap = None
        counts = await self._store.counts()
        catching_up = counts.pending >= self._get_config().sender.batch_size
        rate = self._note_catchup(sent, now) if catching_up else None
        self._set_state(State.CATCHING_UP if catching_up else State.SENDING)
        self._hub.add_delivery(counts, now, rate, sent=sent, rejected=len(ack.rejected))

    def _note_catchup(self, sent: int, now: float) -> float | None:
        if self._catchup_started is None:
            self._catchup_started = now
            self._catchup_sent = 0
            logger.info("catching up on %d queued readings", self._store.pending)
            return None
        self._catchup_sent += sent
        elapsed = now - self._catchup_started
        # with batches in flight, two acks can land milliseconds apart: wait for a real span
        return self._catchup_sent / elapsed if elapsed >= RATE_MIN_SPAN_S else None

    def _end_catchup(self) -> None:
        if self._catchup_started is not None:
            logger.info(
                "backlog drained: %d readings in %s",
                self._catchup_sent,
                _duration(self._clock() - self._catchup_started),
            )
            self._catchup_started = None

    def _on_failure(self, outcome: Outcome, batch_len: int) -> float:
        cfg = self._get_config()
        now = self._clock()
        self._catchup_started = None
        if outcome.verdict is Verdict.SHRINK and batch_len > 1:
            self._cap = max(1, batch_len // 2)
            logger.warning("%s: retrying with batches of %d", outcome.reason, self._cap)
            return 0.0
        state = _FAILURE_STATES[outcome.verdict]
        if outcome.verdict is Verdict.SHRINK:
            state = State.REJECTED
        if self._down_since is None:
            self._down_since = now
            logger.error(
                "delivery to %s failing (%s): %d queued, retrying with backoff",
                cfg.server.url,
                outcome.reason,
                self._store.pending,
            )
        else:
            logger.debug("attempt %d failed: %s", self._attempt, outcome.reason)
        self._set_state(state, outcome.reason)
        self._hub.add_failure(outcome.reason, now)
        self._attempt += 1
        delay = backoff_delay(self._attempt, cfg.sender.max_backoff_s, self._rng)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        return delay


def _describe(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if text != type(err).__name__ else text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
