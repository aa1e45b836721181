"""Typed settings: load, validate every key, and save atomically."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import platformdirs

APP_NAME = "pulse"
CONFIG_NAME = "config.json"

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65_535)]
Host = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[^\s/]+$")]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ConfigError(ValueError):
    """The config file cannot be used; `errors` has one line per bad key."""

    def __init__(self, path: Path | None, errors: list[str]):
        self.path = path
        self.errors = errors
        where = f"{path}: " if path else ""
        super().__init__(where + "; ".join(errors))


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class SensorConfig(_Section):
    """Which sensor to read, and how often."""

    kind: Literal["fake_heart_rate", "counter"] = "fake_heart_rate"
    interval_s: PositiveSeconds = 3.0
    seed: int | None = None


class ServerConfig(_Section):
    """Where the collector is and how to reach it."""

    host: Host = "127.0.0.1"
    port: Port = 8080
    tls: bool = False
    path: Annotated[str, msgspec.Meta(pattern=r"^/\S*$")] = "/api/v1/readings"
    token: str = ""
    timeout_s: PositiveSeconds = 10.0

    @property
    def url(self) -> str:
        """The full URL that batches are POSTed to."""
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path}"


class SenderConfig(_Section):
    """Batching and retry of deliveries."""

    interval_s: PositiveSeconds = 5.0
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    catchup_batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    max_backoff_s: PositiveSeconds = 60.0


class StorageConfig(_Section):
    """The durable local queue."""

    path: Annotated[str, msgspec.Meta(min_length=1)] = "data/queue.db"
    max_pending: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000


class DashboardConfig(_Section):
    """The local web dashboard."""

    host: Host = "127.0.0.1"
    port: Port = 8765
    password: str = ""


class LogsConfig(_Section):
    """Hour-named log files."""

    dir: Annotated[str, msgspec.Meta(min_length=1)] = "logs"
    level: LogLevel = "INFO"
    keep_hours: Annotated[int, msgspec.Meta(ge=1)] = 336


class Config(_Section):
    """Every setting of the agent; config.json has the same shape."""

    device_id: Annotated[str, msgspec.Meta(max_length=128, pattern=r"^\S*$")] = ""
    sensor: SensorConfig = msgspec.field(default_factory=SensorConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    sender: SenderConfig = msgspec.field(default_factory=SenderConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    dashboard: DashboardConfig = msgspec.field(default_factory=DashboardConfig)
    logs: LogsConfig = msgspec.field(default_factory=LogsConfig)

    @property
    def effective_device_id(self) -> str:
        """device_id, or "pulse-<host name>" when it is left empty."""
        return self.device_id or f"pulse-{socket.gethostname()}"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and the file it came from; relative paths resolve beside it."""

    config: Config
    path: Path

    def resolve(self, value: str) -> Path:
        """Resolve a path from the config against the config file's own folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    @property
    def storage_path(self) -> Path:
        """Absolute path of the queue database."""
        return self.resolve(self.config.storage.path)

    @property
    def logs_dir(self) -> Path:
        """Absolute path of the logs folder."""
        return self.resolve(self.config.logs.dir)


def _describe(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(cls: type[msgspec.Struct], raw: object, path: str, errors: list[str]) -> None:
    """Validate `raw` against `cls`, collecting one error per bad key instead of the first."""
    if not isinstance(raw, dict):
        errors.append(f"{path}: expected an object, got {_describe(raw)}")
        return
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    for key in raw:
        if key not in fields:
            errors.append(f"{path}.{key}: unknown key (known: {', '.join(fields)})")
    for name, field in fields.items():
        if name not in raw:
            continue
        sub = f"{path}.{name}"
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            _check(field.type, raw[name], sub, errors)
            continue
        try:
            msgspec.convert(raw[name], field.type, strict=True)
        except msgspec.ValidationError as err:
            problem = str(err).split(" - at `", 1)[0]
            # msgspec names the found type; the found value itself says more
            problem = re.sub(r", got `[^`]*`$", "", problem)
            problem = problem[:1].lower() + problem[1:]
            choices = (
                typing.get_args(field.type) if typing.get_origin(field.type) is Literal else ()
            )
            if choices:
                problem = f"expected one of {', '.join(json.dumps(c) for c in choices)}"
            errors.append(f"{sub}: {problem}, got {_describe(raw[name])}")


def parse_config(data: bytes, path: Path | None = None) -> Config:
    """Parse and validate config JSON; raise ConfigError listing every bad key."""
    try:
        raw: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(path, [f"$: not valid JSON ({err})"]) from err
    errors: list[str] = []
    _check(Config, raw, "$", errors)
    if errors:
        raise ConfigError(path, errors)
    return msgspec.convert(raw, Config, strict=True)


def validate_dict(raw: object) -> tuple[Config | None, list[str]]:
    """Validate an already-parsed object; return the config or the errors."""
    try:
        return parse_config(json.dumps(raw).encode()), []
    except ConfigError as err:
        return None, err.errors


def load_config(path: Path) -> LoadedConfig:
    """Read and validate a config file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(path, [f"$: cannot read the file ({err.strerror})"]) from err
    return LoadedConfig(parse_config(data, path), path.resolve())


def to_json(config: Config) -> bytes:
    """Render a config the way users read it: indented, with every key."""
    return msgspec.json.format(msgspec.json.encode(config), indent=2) + b"\n"


def save_config(path: Path, config: Config) -> None:
    """Write atomically: temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(to_json(config))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _is_writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def default_config_path(cwd: Path | None = None) -> tuple[Path, str]:
    """Find config.json when --config is not given, and say why that one.

    Frozen: beside the executable if that folder is writable. From source: the
    current directory if it has one. Otherwise the per-user config folder.
    """
    if getattr(sys, "frozen", False):
        beside = Path(sys.executable).resolve().parent
        if _is_writable(beside):
            return beside / CONFIG_NAME, "beside the executable"
    else:
        here = (cwd or Path.cwd()) / CONFIG_NAME
        if here.is_file():
            return here, "in the current directory"
    user = Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    return user / CONFIG_NAME, "in the per-user config folder"


def ensure_config(path: Path) -> bool:
    """Create the file with defaults if it does not exist; never touch an existing one."""
    if path.exists():
        return False
    save_config(path, Config())
    return True


class LiveConfig:
    """The config in force; the settings editor swaps it, the workers read it each cycle."""

    def __init__(self, loaded: LoadedConfig):
        self.loaded = loaded

    @property
    def config(self) -> Config:
        """The current settings."""
        return self.loaded.config

    def replace(self, config: Config) -> None:
        """Save `config` atomically to the same file, then put it in force."""
        save_config(self.loaded.path, config)
        self.loaded = LoadedConfig(config, self.loaded.path)
