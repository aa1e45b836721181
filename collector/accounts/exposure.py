"""Where the collector may run open: loopback only, and never open off loopback at start."""

from __future__ import annotations

from collector.config import ConfigError
from pulse_common.hosts import is_loopback
from pulse_common.settings import Problem

__all__ = ["exposure_error", "is_loopback"]

HOW_TO_CREATE = (
    "create a user with `python -m collector create-user NAME` (with the same --config, "
    "--db or --database-url), or list tokens under read_tokens in the config file"
)


def exposure_error(host: str) -> ConfigError:
    """The refusal to start on `host`, off loopback, with no user and no read token."""
    problem = (
        f"{host} is not a loopback address, and no user and no read token exist, so anyone "
        f"who can reach it could read every device's data; {HOW_TO_CREATE}"
    )
    return ConfigError("", [Problem("host", problem)])
