"""The settings editor: one field per config key, with help, and how a save takes effect."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi

from agent.config import Config

# Shown instead of a secret; a save that sends it back keeps the secret as it was.
MASK = "••••••••"
SECRET_KEYS = frozenset({"server.token", "dashboard.password"})
# Read once at start; everything else is read by the workers at each cycle.
RESTART_KEYS = frozenset(
    {
        "sensor.kind",
        "sensor.seed",
        "storage.path",
        "dashboard.host",
        "dashboard.port",
        "dashboard.password",
        "logs.dir",
        "logs.keep_hours",
    }
)

SECTIONS: dict[str, tuple[str, str]] = {
    "": ("Device", "How this computer names itself to the server."),
    "sensor": ("Sensor", "Which sensor is read, and how often."),
    "server": ("Server", "Where readings are delivered."),
    "sender": ("Sending", "How readings are batched, and how failures are retried."),
    "storage": ("Local queue", "Readings wait here, on disk, until the server has them."),
    "dashboard": ("Dashboard", "This page."),
    "logs": ("Logs", "Hour-named log files."),
}

HELP: dict[str, tuple[str, str]] = {
    "device_id": (
        "Device ID",
        "The name the server files readings under. Leave empty to use pulse-<computer name>.",
    ),
    "sensor.kind": (
        "Sensor kind",
        "The sensor to read: the fake heart rate, or a counter (1, 2, 3…) for checks.",
    ),
    "sensor.interval_s": ("Reading interval (s)", "Seconds between two readings."),
    "sensor.seed": (
        "Random seed",
        "Makes the fake sensor repeat the same values; empty for different ones each run.",
    ),
    "server.host": ("Server host", "Name or IP address of the collector."),
    "server.port": ("Server port", "TCP port the collector listens on."),
    "server.tls": ("Use HTTPS", "Connect with TLS (https://) instead of plain http://."),
    "server.path": ("Server path", "The URL path readings are POSTed to; starts with /."),
    "server.token": (
        "Server token",
        "Sent as a Bearer token. Shown masked; leave the mask to keep the current token, "
        "clear the field to send none.",
    ),
    "server.timeout_s": ("Request timeout (s)", "How long one delivery may take before retry."),
    "sender.interval_s": ("Send interval (s)", "Seconds between deliveries when caught up."),
    "sender.batch_size": ("Batch size", "Readings per delivery when caught up."),
    "sender.catchup_batch_size": (
        "Catch-up batch size",
        "Readings per delivery while a backlog drains after an outage.",
    ),
    "sender.max_backoff_s": (
        "Longest retry wait (s)",
        "Upper bound of the growing wait between failed deliveries.",
    ),
    "storage.path": (
        "Queue file",
        "The SQLite file readings wait in; relative to the config file's folder.",
    ),
    "storage.max_pending": (
        "Queue limit",
        "Most readings kept while the server is unreachable; past it the oldest are dropped.",
    ),
    "dashboard.host": (
        "Dashboard address",
        "Address this page listens on. Anything but 127.0.0.1, ::1 or localhost needs a password.",
    ),
    "dashboard.port": ("Dashboard port", "TCP port of this page."),
    "dashboard.password": (
        "Dashboard password",
        "Also unlocks the controls and settings. Shown masked; leave the mask to keep it.",
    ),
    "logs.dir": ("Logs folder", "Where hour-named log files go; relative to the config file."),
    "logs.level": ("Log level", "DEBUG logs every attempt; INFO only changes of state."),
    "logs.keep_hours": ("Keep logs (hours)", "Log files older than this are deleted."),
}


@dataclass(frozen=True)
class Field:
    """One input of the settings form."""

    key: str
    label: str
    help: str
    kind: str  # text | secret | int | optional_int | float | bool | choice
    limits: str
    choices: tuple[str, ...]
    restart: bool


def _limits(t: mi.Type) -> str:
    parts = []
    for attr, word in (("ge", "at least"), ("gt", "more than"), ("le", "at most")):
        value = getattr(t, attr, None)
        if value is not None:
            parts.append(f"{word} {value:,}")
    return ", ".join(parts)


def _kind(key: str, t: mi.Type) -> str:
    if key in SECRET_KEYS:
        return "secret"
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType):
        return "int"
    if isinstance(t, mi.FloatType):
        return "float"
    if isinstance(t, mi.LiteralType):
        return "choice"
    if isinstance(t, mi.UnionType) and any(isinstance(u, mi.IntType) for u in t.types):
        return "optional_int"
    return "text"


def _choices(cls: type, name: str) -> tuple[str, ...]:
    # the annotation keeps the order it was written in; msgspec sorts it
    hint = typing.get_type_hints(cls)[name]
    return tuple(str(v) for v in typing.get_args(hint)) if typing.get_origin(hint) else ()


def _field(cls: type, prefix: str, f: mi.Field) -> Field:
    key = f"{prefix}{f.encode_name}"
    label, help_text = HELP[key]
    t = f.type
    if isinstance(t, mi.UnionType):
        inner = [u for u in t.types if not isinstance(u, mi.NoneType)]
        limits = _limits(inner[0]) if inner else ""
    else:
        limits = _limits(t)
    kind = _kind(key, t)
    choices = _choices(cls, f.name) if kind == "choice" else ()
    return Field(key, label, help_text, kind, limits, choices, key in RESTART_KEYS)


def form_sections() -> list[tuple[str, str, list[Field]]]:
    """Every config key as a form field, grouped by section: (title, description, fields)."""
    top = mi.type_info(Config)
    assert isinstance(top, mi.StructType)  # Config is a Struct
    groups: dict[str, list[Field]] = {"": []}
    for f in top.fields:
        if isinstance(f.type, mi.StructType):
            section = f.type
            groups[f.encode_name] = [
                _field(section.cls, f"{f.encode_name}.", sub) for sub in section.fields
            ]
        else:
            groups[""].append(_field(Config, "", f))
    return [(SECTIONS[name][0], SECTIONS[name][1], fields) for name, fields in groups.items()]


def flatten(config: Config) -> dict[str, Any]:
    """{"sender.interval_s": 5.0, ...} for every key."""
    out: dict[str, Any] = {}
    for key, value in msgspec.to_builtins(config).items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def masked(config: Config) -> dict[str, Any]:
    """The config as a JSON-ready dict with every secret that is set replaced by MASK."""
    raw: dict[str, Any] = msgspec.to_builtins(config)
    for key in SECRET_KEYS:
        section, name = key.split(".")
        if raw[section][name]:
            raw[section][name] = MASK
    return raw


def merge_update(current: Config, body: dict[str, Any]) -> dict[str, Any]:
    """Lay a (partial) config from the editor over the current one; MASK keeps a secret."""
    raw: dict[str, Any] = msgspec.to_builtins(current)
    for key, value in body.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    for key in SECRET_KEYS:
        section, name = key.split(".")
        part = raw.get(section)
        if isinstance(part, dict) and part.get(name) == MASK:
            part[name] = getattr(getattr(current, section), name)
    return raw


_ERROR = re.compile(r"^\$\.(?P<key>[^:]+): (?P<problem>.*)$", re.DOTALL)


def field_errors(errors: list[str]) -> tuple[dict[str, str], list[str]]:
    """Sort validation errors into {field key: problem} and those that fit no field."""
    known = set(HELP)
    by_field: dict[str, str] = {}
    general: list[str] = []
    for error in errors:
        match = _ERROR.match(error)
        if match and match["key"] in known:
            by_field[match["key"]] = match["problem"].replace("`", "")
        else:
            general.append(error.replace("`", ""))
    return by_field, general


def changed_keys(old: Config, new: Config) -> list[str]:
    """The keys whose value differs, in form order."""
    before, after = flatten(old), flatten(new)
    return [key for key in after if before.get(key) != after[key]]
