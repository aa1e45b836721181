"""Typed settings with their label, help, restart and secret flags; load, validate, save."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

import pulse_wire as wire
from pulse_common.files import write_atomic
from pulse_common.settings import (
    ROOT,
    Problem,
    SettingsError,
    expecting,
    problems,
    section,
    setting,
)
from pulse_wire.types import DEVICE_ID_MAX, NO_SPACE

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


class MqttConfig(_Section):
    """The local MQTT broker that `mqtt` sources subscribe to."""

    host: Annotated[
        Host, setting("Broker host", "Name or IP address of the MQTT broker.", restart=True)
    ] = "127.0.0.1"
    port: Annotated[Port, setting("Broker port", "TCP port of the MQTT broker.", restart=True)] = (
        1883
    )
    username: Annotated[
        str,
        setting("Broker user", "User name for the broker; empty for none.", restart=True),
    ] = ""
    password: Annotated[
        str,
        setting(
            "Broker password",
            "Password for the broker. Shown masked; leave the mask to keep it.",
            restart=True,
            secret=True,
        ),
    ] = ""


class HomeAssistantConfig(_Section):
    """Announcing the sources to Home Assistant by MQTT discovery."""

    enabled: Annotated[
        bool,
        setting(
            "Announce to Home Assistant",
            "Publish every source and this hub by MQTT discovery on the broker above.",
            restart=True,
        ),
    ] = False
    discovery_prefix: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\s#+]+$"),
        setting(
            "Discovery prefix",
            "Home Assistant's MQTT discovery prefix (its default: homeassistant).",
            restart=True,
        ),
    ] = "homeassistant"


# --- sources: one entry per local device, tagged by `kind` ----------------------------------

SourceDeviceId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=DEVICE_ID_MAX, pattern=NO_SPACE),
    expecting("a device id of 1 to 128 characters without spaces"),
    setting("Device ID", "The name the server files this source's readings under."),
]
_INTERVAL = setting("Reading interval (s)", "Seconds between two readings.")
_SEED = setting("Random seed", "Repeats the same simulated values; empty for different ones.")


class _SourceEntry(_Section, tag_field="kind"):
    device_id: SourceDeviceId


class FakeHeartRateSource(_SourceEntry, tag="fake_heart_rate"):
    """The fake heart-rate monitor."""

    interval_s: Annotated[PositiveSeconds, _INTERVAL] = 3.0
    seed: Annotated[int | None, _SEED] = None


class CounterSource(_SourceEntry, tag="counter"):
    """1, 2, 3…: the reliability suite's source."""

    interval_s: Annotated[PositiveSeconds, _INTERVAL] = 3.0


class BulbPowerSource(_SourceEntry, tag="bulb_power"):
    """A simulated smart bulb's power draw in W."""

    interval_s: Annotated[PositiveSeconds, _INTERVAL] = 10.0
    seed: Annotated[int | None, _SEED] = None


class BulbStateSource(_SourceEntry, tag="bulb_state"):
    """A simulated smart bulb's on/off state (1/0)."""

    interval_s: Annotated[PositiveSeconds, _INTERVAL] = 10.0
    seed: Annotated[int | None, _SEED] = None


class WaterHeaterSource(_SourceEntry, tag="water_heater"):
    """A simulated water heater's temperature in °C."""

    interval_s: Annotated[PositiveSeconds, _INTERVAL] = 30.0
    seed: Annotated[int | None, _SEED] = None


class MirrorPresenceSource(_SourceEntry, tag="mirror_presence"):
    """A simulated smart mirror's presence sensor (1/0)."""

    interval_s: Annotated[PositiveSeconds, _INTERVAL] = 5.0
    seed: Annotated[int | None, _SEED] = None


class MirrorLuxSource(_SourceEntry, tag="mirror_lux"):
    """A simulated smart mirror's ambient light in lx."""

    interval_s: Annotated[PositiveSeconds, _INTERVAL] = 30.0
    seed: Annotated[int | None, _SEED] = None


class MqttSourceEntry(_SourceEntry, tag="mqtt"):
    """Numbers published on an MQTT topic of the broker in the `mqtt` section."""

    topic: Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=65_535),
        setting("Topic", "The MQTT topic to subscribe to; wildcards + and # allowed."),
    ]
    unit: Annotated[
        wire.Unit,
        expecting("a unit of 1 to 16 characters"),
        setting("Unit", "The unit the readings are sent with (W, °C, lx…)."),
    ]
    value_path: Annotated[
        str | None,
        setting(
            "Value path",
            "Dotted path to the number in a JSON payload (power, sensors.0.temp); empty: "
            "the payload itself is the number.",
        ),
    ] = None


SourceEntry = (
    FakeHeartRateSource
    | CounterSource
    | BulbPowerSource
    | BulbStateSource
    | WaterHeaterSource
    | MirrorPresenceSource
    | MirrorLuxSource
    | MqttSourceEntry
)
SOURCE_KINDS: dict[str, type[_SourceEntry]] = {
    str(cls.__struct_config__.tag): cls
    for cls in (
        FakeHeartRateSource,
        CounterSource,
        BulbPowerSource,
        BulbStateSource,
        WaterHeaterSource,
        MirrorPresenceSource,
        MirrorLuxSource,
        MqttSourceEntry,
    )
}
# a queue file's name is the device id itself when it is this tame
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(device_id: str) -> str:
    """A file name for a device's queue: the id if tame, else a sanitized prefix and a hash."""
    if _SAFE_NAME.fullmatch(device_id) and device_id.strip(".") != "":
        return device_id
    digest = hashlib.sha256(device_id.encode()).hexdigest()[:16]
    return f"{_UNSAFE.sub('_', device_id)[:40]}-{digest}"


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
            "Most readings kept while the server is unreachable; past it the oldest are "
            "dropped. With several sources the limit applies to each source's queue.",
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
    sources: Annotated[
        list[SourceEntry],
        expecting("a list of sources, each an object with device_id and kind"),
        setting(
            "Sources",
            "Several local devices, each sent as its own device; used instead of Sensor. "
            "Edit them in config.json.",
            restart=True,
        ),
    ] = msgspec.field(default_factory=list)
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
    mqtt: Annotated[MqttConfig, section("MQTT broker", "Where MQTT sources subscribe.")] = (
        msgspec.field(default_factory=MqttConfig)
    )
    homeassistant: Annotated[
        HomeAssistantConfig,
        section("Home Assistant", "Announcing the sources to Home Assistant."),
    ] = msgspec.field(default_factory=HomeAssistantConfig)

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

    def queue_path(self, device_id: str) -> Path:
        """The queue file of one source: storage.path for the agent's own device id (and
        for the one `sensor`), else sources/<safe name>.db beside it."""
        config = self.config
        if not config.sources or device_id == config.effective_device_id:
            return self.storage_path
        return self.storage_path.parent / "sources" / f"{safe_name(device_id)}.db"

    @property
    def logs_dir(self) -> Path:
        """Absolute path of the logs folder."""
        return self.resolve(self.config.logs.dir)


def parse_config(data: bytes, path: Path | None = None) -> Config:
    """Parse and validate config JSON; raise ConfigError listing every bad key."""
    try:
        raw: object = json.loads(data)
    except ValueError as err:  # UnicodeDecodeError is one too
        raise ConfigError(path, [Problem(ROOT, f"not valid JSON ({err})")]) from err
    config, found = validate_dict(raw)
    if config is None:
        raise ConfigError(path, found)
    return config


def _entry_problems(i: int, entry: object) -> list[Problem]:
    key = f"sources[{i}]"
    if not isinstance(entry, dict):
        return [Problem(key, "expected an object with device_id and kind")]
    kind = entry.get("kind")
    cls = SOURCE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        kinds = ", ".join(f'"{k}"' for k in SOURCE_KINDS)
        got = "nothing" if kind is None else json.dumps(kind)
        return [Problem(f"{key}.kind", f"expected one of {kinds}, got {got}")]
    rest = {k: v for k, v in entry.items() if k != "kind"}
    return [Problem(f"{key}.{p.key}", p.problem) for p in problems(cls, rest)]


def _source_problems(raw: object) -> list[Problem]:
    """Each bad source entry by its index, then ids used twice and `sensor` beside them."""
    top = raw if isinstance(raw, dict) else {}
    entries = top.get("sources")
    if not isinstance(entries, list):
        if "sources" in top:
            got = json.dumps(entries, default=repr)[:60]
            return [Problem("sources", f"expected a list of sources, got {got}")]
        return []
    found = [p for i, entry in enumerate(entries) for p in _entry_problems(i, entry)]
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        device_id = entry.get("device_id") if isinstance(entry, dict) else None
        if not isinstance(device_id, str):
            continue
        # two ids apart only in case would share a queue file on Windows and macOS
        name = safe_name(device_id).lower()
        if name in seen:
            first = entries[seen[name]]["device_id"]
            found.append(
                Problem(
                    f"sources[{i}].device_id",
                    f"{json.dumps(device_id)} is already used by sources[{seen[name]}] "
                    f"({json.dumps(first)}); each source needs its own device id",
                )
            )
        else:
            seen[name] = i
    if entries and "sensor" in top:
        found.append(
            Problem(
                "sensor",
                "use either `sensor` (one source) or `sources`, not both: move the sensor "
                "into `sources` as an entry with its own device_id",
            )
        )
    return found


def validate_dict(raw: object) -> tuple[Config | None, list[Problem]]:
    """Validate an already-parsed object; return the config, or None and every problem."""
    # the shared walk stops at arrays: each source entry gets a walk of its own kind
    rest = {**raw, "sources": []} if isinstance(raw, dict) and "sources" in raw else raw
    found = problems(Config, rest)
    found += _source_problems(raw)
    if found:
        return None, found
    try:
        return msgspec.convert(raw, Config, strict=True), []
    except msgspec.ValidationError as err:
        # the walks check each value with msgspec itself; if they ever disagree, refuse
        # the settings with msgspec's own words rather than let them through
        return None, [Problem(ROOT, str(err))]


def load_config(path: Path) -> LoadedConfig:
    """Read and validate a config file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(path, [Problem("$", f"cannot read the file ({err.strerror})")]) from err
    return LoadedConfig(parse_config(data, path), path.resolve())


def to_json(config: Config) -> bytes:
    """Render a config the way users read it: indented, with every key.

    With sources, `sensor` is left out: the two together are refused.
    """
    raw = msgspec.to_builtins(config)
    if config.sources:
        del raw["sensor"]
    return msgspec.json.format(msgspec.json.encode(raw), indent=2) + b"\n"


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
