"""Typed settings with their label, help, restart and secret flags; load, validate, save."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from pulse_common.files import write_atomic
from pulse_common.settings import Problem, SettingsError, parse, section, setting, validate

APP_NAME = "pulse"
CONFIG_NAME = "config.json"
# the settings form's first section, which holds the top-level settings
TOP_SECTION = ("Device", "How this computer names itself to the server.")

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65_535)]
Host = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[^\s/]+$")]
BatchSize = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ConfigError(SettingsError):
    """The config file cannot be used; `problems` names every bad key, `errors` as lines."""

    def __init__(self, path: Path | None, problems: list[Problem]):
        self.path = path
        super().__init__(str(path) if path else "", problems)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class SensorConfig(_Section):
    """Which sensor to read, and how often."""

    kind: Annotated[
        Literal["fake_heart_rate", "counter"],
        setting(
            "Sensor kind",
            "The sensor to read: the fake heart rate, or a counter (1, 2, 3…) for checks.",
            restart=True,
        ),
    ] = "fake_heart_rate"
    interval_s: Annotated[
        PositiveSeconds, setting("Reading interval (s)", "Seconds between two readings.")
    ] = 3.0
    seed: Annotated[
        int | None,
        setting(
            "Random seed",
            "Makes the fake sensor repeat the same values; empty for different ones each run.",
            restart=True,
        ),
    ] = None


class ServerConfig(_Section):
    """Where the collector is and how to reach it."""

    host: Annotated[Host, setting("Server host", "Name or IP address of the collector.")] = (
        "127.0.0.1"
    )
    port: Annotated[Port, setting("Server port", "TCP port the collector listens on.")] = 8080
    tls: Annotated[
        bool, setting("Use HTTPS", "Connect with TLS (https://) instead of plain http://.")
    ] = False
    path: Annotated[
        str,
        msgspec.Meta(pattern=r"^/\S*$"),
        setting("Server path", "The URL path readings are POSTed to; starts with /."),
    ] = "/api/v1/readings"
    token: Annotated[
        str,
        setting(
            "Server token",
            "Sent as a Bearer token. Shown masked; leave the mask to keep the current token, "
            "clear the field to send none.",
            secret=True,
        ),
    ] = ""
    timeout_s: Annotated[
        PositiveSeconds,
        setting("Request timeout (s)", "How long one delivery may take before retry."),
    ] = 10.0

    @property
    def url(self) -> str:
        """The full URL that batches are POSTed to."""
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.path}"


class SenderConfig(_Section):
    """Batching and retry of deliveries."""

    interval_s: Annotated[
        PositiveSeconds, setting("Send interval (s)", "Seconds between deliveries when caught up.")
    ] = 5.0
    batch_size: Annotated[
        BatchSize, setting("Batch size", "Readings per delivery when caught up.")
    ] = 10
    catchup_batch_size: Annotated[
        BatchSize,
        setting(
            "Catch-up batch size", "Readings per delivery while a backlog drains after an outage."
        ),
    ] = 1000
    max_backoff_s: Annotated[
        PositiveSeconds,
        setting(
            "Longest retry wait (s)", "Upper bound of the growing wait between failed deliveries."
        ),
    ] = 60.0


class StorageConfig(_Section):
    """The durable local queue."""

    path: Annotated[
        str,
        msgspec.Meta(min_length=1),
        setting(
            "Queue file",
            "The SQLite file readings wait in; relative to the config file's folder.",
            restart=True,
        ),
    ] = "data/queue.db"
    max_pending: Annotated[
        int,
        msgspec.Meta(ge=1),
        setting(
            "Queue limit",
            "Most readings kept while the server is unreachable; past it the oldest are dropped.",
        ),
    ] = 1_000_000


class DashboardConfig(_Section):
    """The local web dashboard."""

    host: Annotated[
        Host,
        setting(
            "Dashboard address",
            "Address this page listens on. Anything but 127.0.0.1, ::1 or localhost needs a "
            "password.",
            restart=True,
        ),
    ] = "127.0.0.1"
    port: Annotated[Port, setting("Dashboard port", "TCP port of this page.", restart=True)] = 8765
    password: Annotated[
        str,
        setting(
            "Dashboard password",
            "Also unlocks the controls and settings. Shown masked; leave the mask to keep it.",
            restart=True,
            secret=True,
        ),
    ] = ""


class LogsConfig(_Section):
    """Hour-named log files."""

    dir: Annotated[
        str,
        msgspec.Meta(min_length=1),
        setting(
            "Logs folder",
            "Where hour-named log files go; relative to the config file.",
            restart=True,
        ),
    ] = "logs"
    level: Annotated[
        LogLevel,
        setting("Log level", "DEBUG logs every attempt; INFO only changes of state."),
    ] = "INFO"
    keep_hours: Annotated[
        int,
        msgspec.Meta(ge=1),
        setting("Keep logs (hours)", "Log files older than this are deleted.", restart=True),
    ] = 336


class Config(_Section):
    """Every setting of the agent; config.json has the same shape."""

    device_id: Annotated[
        str,
        msgspec.Meta(max_length=128, pattern=r"^\S*$"),
        setting(
            "Device ID",
            "The name the server files readings under. Leave empty to use pulse-<computer name>.",
        ),
    ] = ""
    sensor: Annotated[SensorConfig, section("Sensor", "Which sensor is read, and how often.")] = (
        msgspec.field(default_factory=SensorConfig)
    )
    server: Annotated[ServerConfig, section("Server", "Where readings are delivered.")] = (
        msgspec.field(default_factory=ServerConfig)
    )
    sender: Annotated[
        SenderConfig,
        section("Sending", "How readings are batched, and how failures are retried."),
    ] = msgspec.field(default_factory=SenderConfig)
    storage: Annotated[
        StorageConfig,
        section("Local queue", "Readings wait here, on disk, until the server has them."),
    ] = msgspec.field(default_factory=StorageConfig)
    dashboard: Annotated[DashboardConfig, section("Dashboard", "This page.")] = msgspec.field(
        default_factory=DashboardConfig
    )
    logs: Annotated[LogsConfig, section("Logs", "Hour-named log files.")] = msgspec.field(
        default_factory=LogsConfig
    )

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


def parse_config(data: bytes, path: Path | None = None) -> Config:
    """Parse and validate config JSON; raise ConfigError listing every bad key."""
    config, problems = parse(Config, data)
    if config is None:
        raise ConfigError(path, problems)
    return config


def validate_dict(raw: object) -> tuple[Config | None, list[Problem]]:
    """Validate an already-parsed object; return the config, or None and every problem."""
    return validate(Config, raw)


def load_config(path: Path) -> LoadedConfig:
    """Read and validate a config file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(path, [Problem("$", f"cannot read the file ({err.strerror})")]) from err
    return LoadedConfig(parse_config(data, path), path.resolve())


def to_json(config: Config) -> bytes:
    """Render a config the way users read it: indented, with every key."""
    return msgspec.json.format(msgspec.json.encode(config), indent=2) + b"\n"


def save_config(path: Path, config: Config) -> None:
    """Write atomically: temp file in the same folder, fsync, rename, fsync the folder."""
    write_atomic(path, to_json(config))


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
