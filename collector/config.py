"""Typed collector settings: defaults, a JSON file, then command-line overrides."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from collector.alerts.rules import ChannelName, Rule
from collector.alerts.validation import alerts_problems, without_items
from pulse_common.settings import Problem, SettingsError, expecting, problems, section, setting
from pulse_wire import DeviceId

Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
Host = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=253, pattern=r"^[^\s/]+$"),
    expecting("a host name or address"),
]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
DatabaseUrl = Annotated[
    str, msgspec.Meta(pattern=r"^(postgres(ql)?://\S*)?$"), expecting('a postgresql:// URL, or ""')
]
Token = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=1024, pattern=r"^\S+$"),
    expecting("a token without spaces"),
]
TokenDeviceId = Annotated[DeviceId, msgspec.Meta(title="device id")]
ProxyAddress = Annotated[str, expecting("an IP address or network, e.g. 127.0.0.1 or 10.0.0.0/8")]
BodyLimit = Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

MIB = 1024 * 1024


class ConfigError(SettingsError):
    """The settings cannot be used; `problems` names every bad key, `errors` as lines."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        super().__init__(source, problems)


class AlertsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Alert rules and the channels they notify; seeded into the database at start."""

    channels: Annotated[
        dict[ChannelName, list[str]],
        expecting("an object of channel name to a list of Apprise URLs"),
        setting(
            "Channels",
            'Named lists of Apprise URLs, e.g. {"ops": ["json://host/hook"]}.',
            restart=True,
        ),
    ] = msgspec.field(default_factory=dict)
    rules: Annotated[
        list[Rule],
        setting("Rules", "Alert rules: above, below or silent, with for_s.", restart=True),
    ] = msgspec.field(default_factory=list)
    interval_s: Annotated[
        float,
        msgspec.Meta(ge=0.05, le=3600),
        setting("Evaluate every (s)", "How often the rules are evaluated.", restart=True),
    ] = 5.0


# The collector reads its settings once, at start: every change needs a restart.
class CollectorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Every setting of the collector; a config file has the same shape."""

    host: Annotated[
        Host, setting("Listen address", "Address the collector listens on.", restart=True)
    ] = "127.0.0.1"
    port: Annotated[
        Port,
        setting("Port", "TCP port the collector listens on; 0 picks a free one.", restart=True),
    ] = 8080
    db: Annotated[
        NonEmpty,
        setting(
            "SQLite file",
            "The database file, used when the PostgreSQL URL is empty; relative to the "
            "config file's folder.",
            restart=True,
        ),
    ] = "data/collector.db"
    database_url: Annotated[
        DatabaseUrl,
        setting(
            "PostgreSQL URL",
            "postgresql://user@host/db selects PostgreSQL instead of SQLite; empty for SQLite.",
            restart=True,
        ),
    ] = ""
    body_limit_bytes: Annotated[
        BodyLimit,
        setting(
            "Body limit (bytes)",
            "Largest request body accepted; a bigger one is refused with 413.",
            restart=True,
        ),
    ] = 4 * MIB
    tokens: Annotated[
        dict[TokenDeviceId, Token],
        expecting("an object of device id to token"),
        setting(
            "Device tokens",
            "The bearer token each device must send; empty means no authentication.",
            restart=True,
            secret=True,
        ),
    ] = msgspec.field(default_factory=dict)
    read_tokens: Annotated[
        list[Token],
        expecting("a list of tokens"),
        setting(
            "Read tokens",
            "Bearer tokens that may read (GET) the API and the pages, never change anything; "
            "once one is listed, every read needs a token or a signed-in user.",
            restart=True,
            secret=True,
        ),
    ] = msgspec.field(default_factory=list)
    trusted_proxies: Annotated[
        list[ProxyAddress],
        expecting("a list of IP addresses or networks"),
        setting(
            "Trusted proxies",
            "Addresses or networks of the reverse proxies in front (nginx: 127.0.0.1); a "
            "request from one of them is taken as from the client its X-Forwarded-For names. "
            "Empty: those headers are ignored.",
            restart=True,
        ),
    ] = msgspec.field(default_factory=list)
    logs_dir: Annotated[
        NonEmpty,
        setting(
            "Logs folder",
            "Where hour-named log files go; relative to the config file's folder.",
            restart=True,
        ),
    ] = "logs"
    log_level: Annotated[
        LogLevel,
        setting(
            "Log level",
            "DEBUG also logs every stored batch; INFO logs starts, stops and refusals.",
            restart=True,
        ),
    ] = "INFO"
    keep_hours: Annotated[
        int,
        msgspec.Meta(ge=1),
        setting("Keep logs (hours)", "Log files older than this are deleted.", restart=True),
    ] = 336
    retention_days: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=36_500)] | None,
        expecting("a whole number of days from 1 to 36500, or null to keep everything"),
        setting(
            "Keep readings (days)",
            "Readings older than this are deleted (whole days, UTC), with their per-minute "
            "rollups; readings that old are refused. Hourly rollups stay. null keeps all.",
            restart=True,
        ),
    ] = None
    alerts: Annotated[
        AlertsConfig,
        section("Alerts", "Rules over the readings, and where their notifications go."),
    ] = msgspec.field(default_factory=AlertsConfig)


# lists whose items get a check of their own: the shared walk would not look inside them
ITEM_CHECKED = ("read_tokens", "trusted_proxies")


def _without_item_checked(raw: object) -> object:
    """`raw` with the item-checked lists left out of the walk, which names no item."""
    if not isinstance(raw, dict):
        return raw
    return {**raw, **{k: [] for k in ITEM_CHECKED if isinstance(raw.get(k), list)}}


def _token_problem(token: object) -> str | None:
    try:
        msgspec.convert(token, Token, strict=True)
    except msgspec.ValidationError:
        # a secret is described, never echoed into a log
        got = f"a string of {len(token)} characters" if isinstance(token, str) else "not a string"
        return f"expected a token of 1 to 1024 characters without spaces, got {got}"
    return None


def _read_token_problems(raw: object) -> list[Problem]:
    """Each bad read token by its index; one that is also a device token would let it read."""
    read_tokens = raw.get("read_tokens") if isinstance(raw, dict) else None
    if not isinstance(read_tokens, list):
        return []
    tokens = raw.get("tokens") if isinstance(raw, dict) else None
    device_tokens = set(tokens.values()) if isinstance(tokens, dict) else set()
    found: list[Problem] = []
    for i, token in enumerate(read_tokens):
        problem = _token_problem(token)
        if problem is None and token in device_tokens:
            problem = "is also a device's token (tokens); device tokens never read"
        if problem is not None:
            found.append(Problem(f"read_tokens[{i}]", problem))
    return found


def _proxy_problem(entry: object) -> str | None:
    if not isinstance(entry, str):
        return f"expected an IP address or network, got {type(entry).__name__}"
    try:
        # strict, as aiohttp-remotes parses it: 10.0.0.1/8 (host bits set) is a typo
        ipaddress.ip_network(entry)
    except ValueError as err:
        return f"expected an IP address or network, e.g. 127.0.0.1 or 10.0.0.0/8 ({err})"
    return None


def _trusted_proxy_problems(raw: object) -> list[Problem]:
    """Each trusted proxy that is not an IP address or network, by its index."""
    entries = raw.get("trusted_proxies") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        return []
    found: list[Problem] = []
    for i, entry in enumerate(entries):
        problem = _proxy_problem(entry)
        if problem is not None:
            found.append(Problem(f"trusted_proxies[{i}]", problem))
    return found


def validate_config(raw: object) -> tuple[CollectorConfig | None, list[Problem]]:
    """`raw` as a CollectorConfig, or None and every problem, the alerts' items included."""
    # the shared walk stops at arrays: the alert rules and URLs get a walk of their own
    found = problems(CollectorConfig, _without_item_checked(without_items(raw)))
    found += alerts_problems(raw)
    found += _read_token_problems(raw)
    found += _trusted_proxy_problems(raw)
    if found:
        return None, found
    try:
        return msgspec.convert(raw, CollectorConfig, strict=True), []
    except msgspec.ValidationError as err:
        return None, [Problem("$", str(err))]


def parse_config(data: bytes, source: str = "config") -> CollectorConfig:
    """Parse and validate config JSON; raise ConfigError naming every bad key."""
    try:
        raw: object = json.loads(data)
    except ValueError as err:  # UnicodeDecodeError is one too
        raise ConfigError(source, [Problem("$", f"not valid JSON ({err})")]) from err
    config, found = validate_config(raw)
    if config is None:
        raise ConfigError(source, found)
    return config


def resolve_path(value: str, folder: Path) -> str:
    """`value` as an absolute path, taken relative to `folder` unless already absolute."""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (folder / p).resolve())


def resolve_paths(config: CollectorConfig, folder: Path) -> CollectorConfig:
    """A copy whose relative file paths are made absolute against `folder`."""
    return msgspec.structs.replace(
        config,
        db=resolve_path(config.db, folder),
        logs_dir=resolve_path(config.logs_dir, folder),
    )


def load_config(path: Path) -> CollectorConfig:
    """Read a config file; its relative paths resolve against the file's own folder."""
    try:
        data = path.read_bytes()
    except OSError as err:
        problem = Problem("$", f"cannot read the file ({err.strerror})")
        raise ConfigError(str(path), [problem]) from err
    return resolve_paths(parse_config(data, str(path)), path.resolve().parent)


def with_overrides(
    config: CollectorConfig, overrides: dict[str, Any], source: str = "command line"
) -> CollectorConfig:
    """A copy with some keys replaced, validated like a file; ConfigError names the key."""
    raw = msgspec.to_builtins(config)
    raw.update(overrides)
    new, found = validate_config(raw)
    if new is None:
        raise ConfigError(source, found)
    return new
