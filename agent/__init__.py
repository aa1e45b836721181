"""Pulse agent: reads a sensor, queues every reading durably, delivers them in batches."""

__version__ = "0.1.0"
APP_NAME = "pulse-agent"
