"""The wait before a reconnect to a broker: doubling, capped, and jittered.

The MQTT sources and the Home Assistant bridge share it. (The sender's retry delay has its
own, full-jitter form with a floor: agent.sender.backoff_delay.)
"""

from __future__ import annotations

import random


def reconnect_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """The wait before retry `attempt` (0-based): doubling from `low` to `high`, jittered.

    The jitter takes a random 50-100 % of the step, so agents that lost one broker
    together do not all come back in the same instant.
    """
    step = min(high, low * 2.0 ** min(attempt, 30))
    return rng.uniform(step / 2, step)
