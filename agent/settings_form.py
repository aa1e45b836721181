"""The agent's settings editor: the shared form machinery applied to the agent's Config.

Labels, help, restart and secret flags live on the fields of agent.config.Config; this
module only names the agent's model for the dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.config import TOP_SECTION, Config
from pulse_common import settings
from pulse_common.settings import MASK, Field, Problem, Section

__all__ = [
    "MASK",
    "RESTART_KEYS",
    "SECRET_KEYS",
    "Field",
    "Section",
    "changed_keys",
    "field_errors",
    "flatten",
    "form_sections",
    "masked",
    "merge_update",
]

SECRET_KEYS = settings.secret_keys(Config)
# Read once at start; everything else is read by the workers at each cycle.
RESTART_KEYS = settings.restart_keys(Config)


def form_sections() -> list[Section]:
    """Every config key as a form field, grouped by section: (title, description, fields)."""
    return settings.form(Config, *TOP_SECTION)


def flatten(config: Config) -> dict[str, Any]:
    """{"sender.interval_s": 5.0, ...} for every key."""
    return settings.flatten(config)


def masked(config: Config) -> dict[str, Any]:
    """The config as a JSON-ready dict with every secret that is set replaced by MASK."""
    return settings.masked(config)


def merge_update(current: Config, body: dict[str, Any]) -> dict[str, Any]:
    """Lay a (partial) config from the editor over the current one; MASK keeps a secret."""
    return settings.merge_update(current, body)


def field_errors(problems: Sequence[Problem]) -> tuple[dict[str, str], list[str]]:
    """Sort validation problems into {field key: problem} and lines that fit no field."""
    known = {field.key for section in form_sections() for field in section.fields}
    by_field: dict[str, str] = {}
    general: list[str] = []
    for problem in problems:
        if problem.key in known:
            by_field[problem.key] = problem.problem
        else:
            general.append(str(problem))
    return by_field, general


def changed_keys(old: Config, new: Config) -> list[str]:
    """The keys whose value differs, in form order."""
    return settings.changed_keys(old, new)
