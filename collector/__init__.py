"""Pulse collector: the server that many agents deliver their readings to."""

__version__ = "0.1.0"
APP_NAME = "pulse-collector"
