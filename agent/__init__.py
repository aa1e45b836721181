"""Pulse agent: reads a sensor, queues every reading durably, delivers them in batches."""

import os

__version__ = "0.1.0"
APP_NAME = "pulse-agent"

# Before aiohttp is imported: frozenlist (aiohttp's, through aiosignal) in pure Python. Its
# C++ extension maps libstdc++, 0.9 MiB of the agent's RSS (bench/hub_footprint.py), for
# the few lists an app reads at start-up and shutdown. frozenlist documents the switch.
os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
