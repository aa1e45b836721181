"""Config: defaults, validation errors that name the key, atomic saves, path resolution."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import platformdirs
import pytest

from agent.config import (
    CONFIG_NAME,
    Config,
    ConfigError,
    LiveConfig,
    LoadedConfig,
    SenderConfig,
    ServerConfig,
    StorageConfig,
    load_config,
    parse_config,
    save_config,
    to_json,
    validate_dict,
)
from agent.discovery import default_config_path, ensure_config
from pulse_common.settings import Problem

ROOT = Path(__file__).resolve().parent.parent


def errors_of(raw: object) -> list[str]:
    """The error lines parse_config gives for `raw` (encoded as JSON)."""
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(raw).encode())
    return info.value.errors


def write_json(path: Path, raw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


# defaults and round trips


def test_defaults_round_trip_through_json() -> None:
    data = to_json(Config())
    assert parse_config(data) == Config()
    raw = json.loads(data)
    # every section and key is written out, so users see what they can change
    assert set(raw) == {
        "device_id",
        "sensor",
        "sources",
        "server",
        "sender",
        "storage",
        "dashboard",
        "logs",
        "mqtt",
        "homeassistant",
    }
    assert raw["sender"]["batch_size"] == SenderConfig().batch_size
    assert data.endswith(b"\n")


def test_changed_values_round_trip() -> None:
    cfg = Config(
        device_id="bench-7",
        server=ServerConfig(host="collector.example", port=443, tls=True, token="s3cret"),
        sender=SenderConfig(batch_size=250, interval_s=0.5),
    )
    assert parse_config(to_json(cfg)) == cfg


def test_empty_object_gives_defaults() -> None:
    assert parse_config(b"{}") == Config()


def test_partial_section_keeps_other_defaults() -> None:
    cfg = parse_config(b'{"sender": {"batch_size": 42}}')
    assert cfg.sender.batch_size == 42
    assert cfg.sender.interval_s == SenderConfig().interval_s
    assert cfg.server == ServerConfig()


def test_int_is_accepted_for_a_float_setting() -> None:
    assert parse_config(b'{"sender": {"interval_s": 5}}').sender.interval_s == 5.0


def test_null_seed_is_allowed() -> None:
    assert parse_config(b'{"sensor": {"seed": null}}').sensor.seed is None
    assert parse_config(b'{"sensor": {"seed": 7}}').sensor.seed == 7


# errors that name the key path, the expectation and the found value


def test_wrong_type_names_path_expectation_and_value() -> None:
    assert errors_of({"sender": {"batch_size": "ten"}}) == [
        '$.sender.batch_size: expected int, got "ten"'
    ]


@pytest.mark.parametrize(
    ("raw", "path", "expectation", "found"),
    [
        ({"sender": {"batch_size": 0}}, "$.sender.batch_size", ">= 1", "0"),
        ({"sender": {"interval_s": -1}}, "$.sender.interval_s", "> 0", "-1"),
        ({"server": {"port": 70000}}, "$.server.port", "<= 65535", "70000"),
        ({"server": {"tls": "yes"}}, "$.server.tls", "expected bool", '"yes"'),
        ({"server": {"host": "a b"}}, "$.server.host", "matching regex", '"a b"'),
        ({"server": {"path": "api"}}, "$.server.path", "matching regex", '"api"'),
        ({"logs": {"level": "LOUD"}}, "$.logs.level", 'one of "DEBUG", "INFO"', '"LOUD"'),
        ({"storage": {"path": ""}}, "$.storage.path", "length >= 1", '""'),
        ({"logs": 3}, "$.logs", "expected an object", "3"),
    ],
)
def test_each_error_names_key_expectation_and_value(
    raw: object, path: str, expectation: str, found: str
) -> None:
    (line,) = errors_of(raw)
    assert line.startswith(f"{path}: ")
    assert expectation in line
    assert line.endswith(f"got {found}")


def test_long_values_are_shortened_in_the_message() -> None:
    (line,) = errors_of({"device_id": "x" * 300})
    assert line.startswith("$.device_id: expected str of length <= 128")
    assert line.endswith('got "' + "x" * 56 + "...")
    assert len(line) < 200


def test_several_bad_keys_give_several_errors_at_once() -> None:
    errors = errors_of(
        {
            "sender": {"batch_size": 0, "interval_s": "soon"},
            "server": {"port": 0},
            "dashboard": {"port": "http"},
        }
    )
    paths = sorted(line.split(":", 1)[0] for line in errors)
    assert paths == [
        "$.dashboard.port",
        "$.sender.batch_size",
        "$.sender.interval_s",
        "$.server.port",
    ]


def test_unknown_keys_are_named_with_the_known_ones() -> None:
    errors = errors_of({"bogus": 1, "sender": {"batchsize": 10}})
    assert len(errors) == 2
    top = next(e for e in errors if e.startswith("$.bogus:"))
    inner = next(e for e in errors if e.startswith("$.sender.batchsize:"))
    assert "unknown key" in top
    assert "sender" in top
    assert "unknown key" in inner
    assert "batch_size" in inner


def test_top_level_must_be_an_object() -> None:
    assert errors_of([1, 2]) == ["$: expected an object, got [1, 2]"]


def test_invalid_json_is_one_error_at_the_root() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(b'{"sender": ', Path("/x/config.json"))
    (line,) = info.value.errors
    assert line.startswith("$: not valid JSON (")
    assert info.value.path == Path("/x/config.json")
    assert str(info.value).startswith("/x/config.json: $: not valid JSON")


def test_invalid_utf8_is_reported_not_raised_raw() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(b'{"device_id": "\xff"}')
    assert info.value.errors[0].startswith("$: not valid JSON")


def test_config_error_message_joins_every_error(tmp_path: Path) -> None:
    path = write_json(tmp_path / CONFIG_NAME, {"sender": {"batch_size": 0}, "x": 1})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    for line in info.value.errors:
        assert line in text


def test_config_error_carries_structured_problems() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(b'{"sender": {"batch_size": 0}, "server": {"tls": "yes"}}')
    assert info.value.problems == [
        Problem("sender.batch_size", "expected int >= 1, got 0"),
        Problem("server.tls", 'expected bool, got "yes"'),
    ]
    assert info.value.errors == [str(p) for p in info.value.problems]


def test_validate_dict_returns_config_or_errors() -> None:
    cfg, errors = validate_dict({"sender": {"batch_size": 3}})
    assert errors == []
    assert cfg is not None
    assert cfg.sender.batch_size == 3
    cfg, errors = validate_dict({"sender": {"batch_size": "3"}})
    assert cfg is None
    assert errors == [Problem("sender.batch_size", 'expected int, got "3"')]
    assert [str(e) for e in errors] == ['$.sender.batch_size: expected int, got "3"']


# files


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    (line,) = info.value.errors
    assert line.startswith("$: cannot read the file (")
    assert info.value.path == missing


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    # a folder where the file should be cannot be read, even by root
    folder = tmp_path / CONFIG_NAME
    folder.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(folder)
    assert info.value.errors[0].startswith("$: cannot read the file (")


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    write_json(conf_dir / CONFIG_NAME, {"storage": {"path": "data/q.db"}, "logs": {"dir": "lg"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    loaded = load_config(Path("conf") / CONFIG_NAME)
    monkeypatch.chdir(elsewhere)
    assert loaded.path == (conf_dir / CONFIG_NAME).resolve()
    assert loaded.storage_path == (conf_dir / "data" / "q.db").resolve()
    assert loaded.logs_dir == (conf_dir / "lg").resolve()
    assert not str(loaded.storage_path).startswith(str(elsewhere))


def test_absolute_and_home_paths_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    absolute = tmp_path / "abs" / "queue.db"
    cfg = Config(storage=StorageConfig(path=str(absolute)))
    loaded = LoadedConfig(cfg, tmp_path / "conf" / CONFIG_NAME)
    assert loaded.storage_path == absolute
    assert loaded.resolve("~/pulse/logs") == home / "pulse" / "logs"


def test_save_config_writes_the_config_and_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "new" / CONFIG_NAME
    cfg = Config(device_id="saved")
    save_config(path, cfg)
    assert load_config(path).config == cfg
    assert path.read_bytes() == to_json(cfg)
    assert [p.name for p in path.parent.iterdir()] == [CONFIG_NAME]


def test_save_config_keeps_the_old_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / CONFIG_NAME
    save_config(path, Config(device_id="old"))
    before = path.read_bytes()

    def fail_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="No space left"):
        save_config(path, Config(device_id="new"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_config(path).config.device_id == "old"
    assert [p.name for p in tmp_path.iterdir()] == [CONFIG_NAME]


def test_save_config_keeps_the_old_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / CONFIG_NAME
    save_config(path, Config(device_id="old"))
    before = path.read_bytes()

    def fail_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail_fsync)
    with pytest.raises(OSError, match="Input/output"):
        save_config(path, Config(device_id="new"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CONFIG_NAME]


# where the config lives


def test_default_config_path_prefers_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_dir = tmp_path / "user"
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda *a, **k: str(user_dir))
    (tmp_path / CONFIG_NAME).write_text("{}", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    path, why = default_config_path()
    assert path == tmp_path / CONFIG_NAME
    assert "current directory" in why


def test_default_config_path_falls_back_to_the_user_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_dir = tmp_path / "user"
    calls: list[tuple[object, ...]] = []

    def fake_user_config_dir(*args: object, **kwargs: object) -> str:
        calls.append(args)
        return str(user_dir)

    monkeypatch.setattr(platformdirs, "user_config_dir", fake_user_config_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    path, why = default_config_path(cwd=empty)
    assert path == user_dir / CONFIG_NAME
    assert "per-user" in why
    assert calls
    assert calls[0][0] == "pulse"


def test_default_config_path_ignores_a_folder_named_config_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda *a, **k: str(tmp_path / "u"))
    (tmp_path / CONFIG_NAME).mkdir()
    path, _ = default_config_path(cwd=tmp_path)
    assert path == tmp_path / "u" / CONFIG_NAME


def test_default_config_path_when_frozen_is_beside_the_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = tmp_path / "dist" / "pulse-agent.exe"
    exe.parent.mkdir()
    exe.write_bytes(b"")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe))
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda *a, **k: str(tmp_path / "u"))
    path, why = default_config_path(cwd=tmp_path)
    assert path == exe.parent.resolve() / CONFIG_NAME
    assert "executable" in why


def test_ensure_config_creates_defaults_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / CONFIG_NAME
    assert ensure_config(path) is True
    assert load_config(path).config == Config()


def test_ensure_config_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    path.write_bytes(b"not even json")
    assert ensure_config(path) is False
    assert path.read_bytes() == b"not even json"
    save_config(path, Config(device_id="mine"))
    assert ensure_config(path) is False
    assert load_config(path).config.device_id == "mine"


def test_check_config_command_lists_every_error(tmp_path: Path) -> None:
    bad = write_json(
        tmp_path / "bad.json",
        {"sender": {"batch_size": "ten"}, "server": {"port": 0}, "bogus": True},
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", str(bad)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout + proc.stderr
    assert "invalid config" in out
    assert '$.sender.batch_size: expected int, got "ten"' in out
    assert "$.server.port: expected int >= 1, got 0" in out
    assert "$.bogus: unknown key" in out
    assert bad.read_text(encoding="utf-8") == json.dumps(
        {"sender": {"batch_size": "ten"}, "server": {"port": 0}, "bogus": True}
    )


def test_check_config_command_accepts_a_good_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    save_config(good, Config())
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", str(good)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stderr


# the live config


def test_live_config_replace_writes_the_file_and_swaps(tmp_path: Path) -> None:
    path = tmp_path / CONFIG_NAME
    save_config(path, Config())
    live = LiveConfig(load_config(path))
    new = Config(device_id="replaced", sender=SenderConfig(batch_size=77))
    live.replace(new)
    assert live.config == new
    assert live.loaded.path == path.resolve()
    assert load_config(path).config == new


def test_live_config_replace_keeps_the_old_config_if_saving_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / CONFIG_NAME
    save_config(path, Config(device_id="old"))
    live = LiveConfig(load_config(path))

    def fail_replace(src: object, dst: object) -> None:
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(OSError, match="Permission denied"):
        live.replace(Config(device_id="new"))
    assert live.config.device_id == "old"


# server URL


@pytest.mark.parametrize(
    ("server", "url"),
    [
        (ServerConfig(), "http://127.0.0.1:8080/api/v1/readings"),
        (
            ServerConfig(host="c.example", port=443, tls=True),
            "https://c.example:443/api/v1/readings",
        ),
        (ServerConfig(host="::1", port=9000, path="/in"), "http://[::1]:9000/in"),
        (ServerConfig(host="fe80::2", tls=True), "https://[fe80::2]:8080/api/v1/readings"),
    ],
)
def test_server_url(server: ServerConfig, url: str) -> None:
    assert server.url == url


def test_effective_device_id_defaults_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "desk-12")
    assert Config().effective_device_id == "pulse-desk-12"
    assert Config(device_id="mine").effective_device_id == "mine"
