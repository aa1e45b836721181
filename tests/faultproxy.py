"""A TCP fault proxy between agent and collector, for tests: it can lose acks and more.

It runs its own asyncio loop in a thread so that synchronous tests can drive it. `fault`
applies to every request; `inject(fault, n)` applies a fault to the next n requests only
(a burst), after which `fault` applies again. Every request is counted by the fault it met
and logged with its arrival time in `requests`.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

from tests.harness import free_port


class Fault(enum.Enum):
    """What the proxy does to each connection."""

    PASS = "pass"
    # forward the request, let the collector commit, then close before the response
    LOSE_ACK = "lose_ack"
    # accept and read, never answer: the client times out
    BLACK_HOLE = "black_hole"
    # forward the head and part of the body, then cut both connections: the collector sees
    # a request that stops short of its Content-Length, the client never gets an answer
    RESET = "reset"
    # forward the request, send back only the first bytes of the response
    TRUNCATE = "truncate"
    # forward, but only after latency_s plus a random jitter of up to jitter_s
    LATENCY = "latency"
    # answer 500 / 503 without forwarding, with a Retry-After header if retry_after is set
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"


_STATUS_LINES = {
    Fault.HTTP_500: b"500 Internal Server Error",
    Fault.HTTP_503: b"503 Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    """One request as the proxy saw it: when it arrived (monotonic), what it met, and the
    client's port (one per connection)."""

    at: float
    fault: Fault
    client_port: int


class FaultProxy:
    """Listens on 127.0.0.1:port and forwards to upstream_port, applying `fault`."""

    def __init__(self, upstream_port: int, port: int | None = None):
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.fault = Fault.PASS
        self.delay_s = 0.0
        self.latency_s = 0.05
        self.jitter_s = 0.05
        self.retry_after: str | None = "1"
        self.counts: Counter[Fault] = Counter()
        self.requests: list[Request] = []
        self._burst: collections.deque[Fault] = collections.deque()
        self._rng = random.Random(5)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def inject(self, fault: Fault, n: int) -> None:
        """Apply `fault` to the next n requests (after any burst already queued)."""
        # deque appends and pops are atomic: safe from the test's thread
        self._burst.extend([fault] * n)

    @property
    def burst_left(self) -> int:
        """How many injected faults are still to be met."""
        return len(self._burst)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        assert self._server is not None  # started in __enter__
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        try:
            # keep-alive: each request on the connection meets the fault in force then
            while await self._one_request(reader, writer, up_reader, up_writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _one_request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        request = await _read_http_message(reader)
        fault = self._burst.popleft() if self._burst else self.fault
        self.counts[fault] += 1
        peer = writer.get_extra_info("peername")
        self.requests.append(Request(time.monotonic(), fault, int(peer[1]) if peer else 0))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fault is Fault.LATENCY:
            await asyncio.sleep(self.latency_s + self._rng.uniform(0, self.jitter_s))
        if fault in _STATUS_LINES:
            writer.write(self._error_response(fault))
            await writer.drain()
            return True
        if fault is Fault.BLACK_HOLE:
            await reader.read()
            return False
        if fault is Fault.RESET:
            await self._forward_part(request, up_writer)
            writer.transport.abort()
            return False
        up_writer.write(request)
        await up_writer.drain()
        response = await _read_http_message(up_reader)
        if fault is Fault.LOSE_ACK:
            # the collector has committed and answered; the client never hears it
            writer.transport.abort()
            return False
        if fault is Fault.TRUNCATE:
            writer.write(response[: max(1, len(response) // 2)])
            await writer.drain()
            writer.transport.abort()
            return False
        writer.write(response)
        await writer.drain()
        return True

    async def _forward_part(self, request: bytes, up_writer: asyncio.StreamWriter) -> None:
        """Forward the head and a random part of the body (never all of it), then hang up."""
        body_at = request.index(b"\r\n\r\n") + 4
        # a request without a body is cut inside its head instead
        start = body_at if len(request) > body_at else 0
        cut = self._rng.randrange(start, len(request))
        up_writer.write(request[:cut])
        # drain() only waits for the buffer to fall below its high-water mark; at 0 it waits
        # until every byte is with the kernel, which still delivers them after the close
        up_writer.transport.set_write_buffer_limits(high=0)
        await up_writer.drain()
        up_writer.close()

    def _error_response(self, fault: Fault) -> bytes:
        body = b'{"error":"injected by the fault proxy"}'
        head = [
            b"HTTP/1.1 " + _STATUS_LINES[fault],
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
        ]
        if self.retry_after is not None:
            head.append(b"Retry-After: " + self.retry_after.encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + body


async def _read_http_message(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (what aiohttp sends and answers)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body
