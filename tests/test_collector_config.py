"""Collector settings: errors name the key, paths resolve, the command line overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.__main__ import build_config, main, parse_args
from collector.config import CollectorConfig, ConfigError, load_config, parse_config


def write(tmp_path: Path, settings: object) -> Path:
    path = tmp_path / "etc" / "collector.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings))
    return path


def errors_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps(data).encode())
    return info.value.errors


def test_defaults() -> None:
    config = parse_config(b"{}")
    assert config == CollectorConfig()
    assert (config.host, config.port, config.db) == ("127.0.0.1", 8080, "data/collector.db")
    assert (config.database_url, config.tokens) == ("", {})
    assert config.body_limit_bytes == 4 * 1024 * 1024
    assert (config.logs_dir, config.log_level, config.keep_hours) == ("logs", "INFO", 336)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"port": "8080"}, '$.port: expected int, got "8080"'),
        ({"port": 70000}, "$.port: expected int <= 65535, got 70000"),
        ({"port": True}, "$.port: expected int, got true"),
        ({"body_limit_bytes": 10}, "$.body_limit_bytes: expected int >= 1024, got 10"),
        ({"keep_hours": 0}, "$.keep_hours: expected int >= 1, got 0"),
        (
            {"log_level": "loud"},
            '$.log_level: expected one of DEBUG, INFO, WARNING, ERROR, got "loud"',
        ),
        (
            {"database_url": "mysql://x"},
            '$.database_url: expected a postgresql:// URL, or "", got "mysql://x"',
        ),
        ({"host": ""}, '$.host: expected str of length >= 1, got ""'),
        ({"tokens": {"dev": 5}}, '$.tokens["dev"]: expected str, got 5'),
        ({"tokens": {"dev": ""}}, '$.tokens["dev"]: expected str of length >= 1, got ""'),
        ({"tokens": ["a"]}, '$.tokens: expected an object of device id to token, got ["a"]'),
        ({"prot": 1}, "$.prot: unknown key (known: host, port, db, database_url,"),
    ],
)
def test_errors_name_the_key_what_was_expected_and_found(settings: object, expected: str) -> None:
    (error,) = errors_of(settings)
    assert error.startswith(expected)


def test_every_bad_key_is_reported_at_once() -> None:
    errors = errors_of({"port": -1, "host": 5, "extra": None})
    assert [e.split(":", 1)[0] for e in errors] == ["$.port", "$.host", "$.extra"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{", "$: not valid JSON"),
        (b"[]", "$: expected an object, got []"),
        (b"\xff", "$: not valid JSON"),
    ],
)
def test_unreadable_files(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match="^" + str(path).replace(".", r"\.")) as info:
        load_config(path)
    assert info.value.errors[0].startswith(expected)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.json")


def test_relative_paths_resolve_against_the_file_folder(tmp_path: Path) -> None:
    path = write(tmp_path, {"db": "store/c.db", "logs_dir": "../logs", "port": 9000})
    config = load_config(path)
    assert config.db == str(tmp_path / "etc" / "store" / "c.db")
    assert config.logs_dir == str(tmp_path / "logs")
    assert config.port == 9000
    defaults = load_config(write(tmp_path, {}))
    assert defaults.db == str(tmp_path / "etc" / "data" / "collector.db")


def test_absolute_paths_stay(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"db": str(tmp_path / "x.db")}))
    assert config.db == str(tmp_path / "x.db")


def test_command_line_overrides_the_file_and_resolves_against_cwd(tmp_path: Path) -> None:
    path = write(tmp_path, {"port": 9000, "host": "0.0.0.0", "db": "file.db", "tokens": {"d": "t"}})
    cwd = tmp_path / "work"
    args = parse_args(["--config", str(path), "--port", "9100", "--db", "cli.db"])
    config = build_config(args, cwd)
    assert (config.host, config.port) == ("0.0.0.0", 9100)
    assert config.db == str(cwd / "cli.db")
    assert config.tokens == {"d": "t"}
    assert config.logs_dir == str(tmp_path / "etc" / "logs")


def test_command_line_without_a_file(tmp_path: Path) -> None:
    args = parse_args(["--database-url", "postgresql://u@h/db", "--log-level", "DEBUG"])
    config = build_config(args, tmp_path)
    assert config.database_url == "postgresql://u@h/db"
    assert config.log_level == "DEBUG"
    assert config.db == str(tmp_path / "data" / "collector.db")
    assert config.logs_dir == str(tmp_path / "logs")


def test_bad_command_line_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"command line: \$\.port: expected int <= 65535"):
        build_config(parse_args(["--port", "99999"]), tmp_path)


def test_main_reports_a_config_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, {"port": "x"})
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "$.port: expected int" in err
    assert str(path) in err
