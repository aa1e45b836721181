"""Typed collector settings: defaults, a JSON file, then command-line overrides."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec

from agent.wire import DeviceId

Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
Host = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=253, pattern=r"^[^\s/]+$", description="a host name or address"
    ),
]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
DatabaseUrl = Annotated[
    str,
    msgspec.Meta(pattern=r"^(postgres(ql)?://\S*)?$", description='a postgresql:// URL, or ""'),
]
Token = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=1024, pattern=r"^\S+$", description="a token without spaces"
    ),
]
BodyLimit = Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

MIB = 1024 * 1024


class ConfigError(ValueError):
    """The settings cannot be used; `errors` has one line per bad key, each naming it."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


class CollectorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Every setting of the collector; a config file has the same shape."""

    host: Host = "127.0.0.1"
    port: Port = 8080
    # SQLite file, used when database_url is empty
    db: NonEmpty = "data/collector.db"
    # postgresql://user@host/db selects PostgreSQL instead of SQLite
    database_url: DatabaseUrl = ""
    body_limit_bytes: BodyLimit = 4 * MIB
    # device_id -> bearer token; empty means no authentication
    tokens: dict[DeviceId, Token] = msgspec.field(default_factory=dict)
    logs_dir: NonEmpty = "logs"
    log_level: LogLevel = "INFO"
    keep_hours: Annotated[int, msgspec.Meta(ge=1)] = 336


def _describe(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(kind: Any, err: msgspec.ValidationError) -> str:
    """msgspec's complaint as `expected …`, in the words of the type's description if any."""
    text = str(err).partition(" - at `")[0].replace("`", "")
    if text.startswith("Invalid enum value"):
        return "expected one of " + ", ".join(map(str, get_args(kind)))
    if "matching regex" in text:
        for meta in get_args(kind)[1:]:
            if isinstance(meta, msgspec.Meta) and meta.description:
                return f"expected {meta.description}"
    # the caller shows the value itself, which says more than msgspec's name of its type
    text = re.sub(r", got \w+$", "", text)
    return text[:1].lower() + text[1:]


def _check_value(kind: Any, value: object, path: str, errors: list[str]) -> None:
    try:
        msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError as err:
        errors.append(f"{path}: {_expected(kind, err)}, got {_describe(value)}")


def _check_tokens(value: object, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append(f"$.tokens: expected an object of device id to token, got {_describe(value)}")
        return
    for device_id, token in value.items():
        path = f"$.tokens[{_describe(device_id)}]"
        _check_value(DeviceId, device_id, f"{path} (device id)", errors)
        _check_value(Token, token, path, errors)


def check_dict(raw: object) -> list[str]:
    """Return one error per bad key of a parsed config object, or [] if it is valid."""
    if not isinstance(raw, dict):
        return [f"$: expected an object, got {_describe(raw)}"]
    fields = {f.encode_name: f for f in msgspec.structs.fields(CollectorConfig)}
    errors: list[str] = []
    for key, value in raw.items():
        field = fields.get(key)
        if field is None:
            errors.append(f"$.{key}: unknown key (known: {', '.join(fields)})")
        elif key == "tokens":
            _check_tokens(value, errors)
        else:
            _check_value(field.type, value, f"$.{key}", errors)
    return errors


def parse_config(data: bytes, source: str = "config") -> CollectorConfig:
    """Parse and validate config JSON; raise ConfigError naming every bad key."""
    try:
        raw: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(source, [f"$: not valid JSON ({err})"]) from err
    errors = check_dict(raw)
    if errors:
        raise ConfigError(source, errors)
    return msgspec.convert(raw, CollectorConfig, strict=True)


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
        raise ConfigError(str(path), [f"$: cannot read the file ({err.strerror})"]) from err
    return resolve_paths(parse_config(data, str(path)), path.resolve().parent)


def with_overrides(
    config: CollectorConfig, overrides: dict[str, Any], source: str = "command line"
) -> CollectorConfig:
    """A copy with some keys replaced, validated like a file; ConfigError names the key."""
    raw = msgspec.to_builtins(config)
    raw.update(overrides)
    errors = check_dict(raw)
    if errors:
        raise ConfigError(source, errors)
    return msgspec.convert(raw, CollectorConfig, strict=True)
