"""Network faults between agent and collector, injected by a TCP fault proxy."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

from tests.faultproxy import Fault, FaultProxy, Request
from tests.harness import wait_until
from tests.reliability.figures import Scenario, scale, scaled
from tests.reliability.pipeline import Pipeline, drain_and_check

TIMEOUT_S = 0.5
RETRY_AFTER_S = 1
# each fault in turn, as a burst of this many requests
PHASES = [
    (Fault.LATENCY, 20),
    (Fault.RESET, 6),
    (Fault.BLACK_HOLE, 3),
    (Fault.HTTP_500, 2),
    (Fault.HTTP_503, 3),
    (Fault.TRUNCATE, 6),
    (Fault.LOSE_ACK, 6),
]
MIXED = 20
NAMES = {
    Fault.LATENCY: "latency + jitter",
    Fault.RESET: "connection reset mid-request",
    Fault.BLACK_HOLE: "black hole (client timeout)",
    Fault.HTTP_500: "HTTP 500 with Retry-After",
    Fault.HTTP_503: "HTTP 503 with Retry-After",
    Fault.TRUNCATE: "truncated response",
    Fault.LOSE_ACK: "lost ack (committed, never answered)",
}
STORM_ROUNDS = 4


def _round_gaps(requests: list[Request]) -> list[float]:
    """Gaps between rounds: requests sent together (a window of batches in flight) are one."""
    starts = [r.at for i, r in enumerate(requests) if i == 0 or r.at - requests[i - 1].at > 0.1]
    return [b - a for a, b in itertools.pairwise(starts)]


def _recover(pipe: Pipeline, proxy: FaultProxy, figures: Scenario) -> None:
    """Wait out the burst, then time how long the backlog takes to drain."""
    wait_until(lambda: proxy.burst_left == 0, 60 * scale())
    started = time.monotonic()
    sent = pipe.status()["sent_total"]
    batch = pipe.settings["sender"]["batch_size"]
    wait_until(lambda: (s := pipe.status())["sent_total"] > sent and s["pending"] < batch, 30, 0.02)
    figures.recovered(time.monotonic() - started)


def test_network_faults_lose_nothing(
    tmp_path: Path, figures: Scenario, collector_db: str | None
) -> None:
    """latency, resets, black hole, 500/503 with Retry-After, truncation and lost acks"""
    pipe = Pipeline(tmp_path, collector_db)
    pipe.settings["server"]["timeout_s"] = TIMEOUT_S
    pipe.settings["sender"]["max_backoff_s"] = 0.3
    pipe.start_collector()
    try:
        with FaultProxy(pipe.collector_port) as proxy:
            proxy.retry_after = str(RETRY_AFTER_S)
            pipe.server_port = proxy.port
            pipe.start_agent()
            wait_until(lambda: pipe.status()["sent_total"] > 0)
            for fault, n in PHASES:
                proxy.inject(fault, scaled(n))
                _recover(pipe, proxy, figures)
            # a collector that answers 503 with Retry-After to everything, for a while
            first = len(proxy.requests)
            proxy.fault = Fault.HTTP_503
            wait_until(lambda: len(_round_gaps(proxy.requests[first:])) >= STORM_ROUNDS, 30)
            proxy.fault = Fault.PASS
            storm = [r for r in proxy.requests[first:] if r.fault is Fault.HTTP_503]
            _recover(pipe, proxy, figures)
            rng = random.Random(3)
            kinds = [fault for fault, _ in PHASES]
            for _ in range(scaled(MIXED)):
                proxy.inject(rng.choice(kinds), 1)
            _recover(pipe, proxy, figures)
            figures.faults.update(
                {NAMES[f]: n for f, n in proxy.counts.items() if f is not Fault.PASS}
            )
        for fault, n in PHASES:
            assert proxy.counts[fault] >= scaled(n), f"{fault} injected too rarely"
        # a window of batches in flight meets the 503 together; the next round waits
        gaps = _round_gaps(storm)
        assert len(gaps) >= STORM_ROUNDS - 1
        assert min(gaps) >= RETRY_AFTER_S - 0.05, f"Retry-After not honoured: {gaps}"
        figures.notes["shortest_wait_after_retry_after_s"] = round(min(gaps), 3)
        log = pipe.agent_log()
        assert "failing" in log
        assert "reachable again" in log
        drain_and_check(pipe, figures)
    finally:
        pipe.stop()
