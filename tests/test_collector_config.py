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
            '$.log_level: expected one of "DEBUG", "INFO", "WARNING", "ERROR", got "loud"',
        ),
        (
            {"database_url": "mysql://x"},
            '$.database_url: expected a postgresql:// URL, or "", got "mysql://x"',
        ),
        ({"host": ""}, '$.host: expected str of length >= 1, got ""'),
        ({"tokens": {"dev": 5}}, '$.tokens["dev"]: expected str, got 5'),
        ({"tokens": {"dev": ""}}, '$.tokens["dev"]: expected str of length >= 1, got ""'),
        ({"tokens": {"dev": "a b"}}, '$.tokens["dev"]: expected a token without spaces, got "a b"'),
        (
            {"tokens": {"a b": "t"}},
            '$.tokens["a b"]: device id: expected str matching regex',
        ),
        ({"host": "a/b"}, '$.host: expected a host name or address, got "a/b"'),
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


# --- the alerts section -------------------------------------------------------------------

ISSUE_ALERTS = {
    "channels": {"ops": ["json://127.0.0.1:9000/hook"]},
    "rules": [
        {
            "name": "High heart rate",
            "device": "*",
            "when": "above",
            "threshold": 120,
            "clear": 110,
            "for_s": 30,
            "channels": ["ops"],
        },
        {
            "name": "Device silent",
            "device": "*",
            "when": "silent",
            "for_s": 300,
            "channels": ["ops"],
            "repeat_s": 3600,
        },
    ],
}


def alerts_with(*rules: dict[str, object], **channels: object) -> dict[str, object]:
    return {"alerts": {"channels": channels or ISSUE_ALERTS["channels"], "rules": list(rules)}}


def test_the_alerts_section_in_the_issue_s_shape() -> None:
    config = parse_config(json.dumps({"alerts": ISSUE_ALERTS}).encode())
    high, silent = config.alerts.rules
    assert (high.name, high.when, high.threshold, high.clear_at, high.for_s) == (
        "High heart rate",
        "above",
        120,
        110,
        30,
    )
    assert (high.repeat_s, silent.repeat_s, silent.threshold) == (None, 3600, None)
    assert config.alerts.channels == {"ops": ["json://127.0.0.1:9000/hook"]}
    assert config.alerts.interval_s == 5.0
    assert CollectorConfig().alerts.rules == []


def test_clear_defaults_to_the_threshold() -> None:
    rule = {"name": "r", "when": "below", "threshold": 40, "channels": ["ops"]}
    (parsed,) = parse_config(json.dumps(alerts_with(rule)).encode()).alerts.rules
    assert parsed.clear is None
    assert parsed.clear_at == 40


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            alerts_with({"name": "r", "when": "above", "channels": ["ops"]}),
            '$.alerts.rules[0].threshold: required when `when` is "above"',
        ),
        (
            alerts_with({"name": "r", "when": "silent", "threshold": 1, "for_s": 5}),
            '$.alerts.rules[0].threshold: not allowed when `when` is "silent"',
        ),
        (
            alerts_with({"name": "r", "when": "above", "threshold": 120, "clear": 130}),
            "$.alerts.rules[0].clear: must be <= threshold 120 for above",
        ),
        (
            alerts_with({"name": "r", "when": "below", "threshold": 40, "clear": 30}),
            "$.alerts.rules[0].clear: must be >= threshold 40 for below",
        ),
        (
            alerts_with({"name": "r", "when": "silent", "channels": ["pager"]}),
            '$.alerts.rules[0].channels[0]: unknown channel "pager" (known: ops)',
        ),
        (
            alerts_with({"name": "r", "when": "silent"}, {"name": "r", "when": "silent"}),
            '$.alerts.rules[1].name: duplicate rule name "r"',
        ),
        (
            alerts_with({"name": "r", "when": "sometimes"}),
            '$.alerts.rules[0].when: expected one of "above", "below", "silent", got "sometimes"',
        ),
        (
            alerts_with({"name": "r", "when": "silent", "for_s": -1}),
            "$.alerts.rules[0].for_s: expected float >= 0",
        ),
        (
            alerts_with({"name": "r", "when": "silent", "repeat_s": 0}),
            "$.alerts.rules[0].repeat_s: expected float > 0.0, got 0",
        ),
        (alerts_with({"when": "silent"}), "$.alerts.rules[0].name: missing"),
        (
            alerts_with({"name": "r", "when": "silent", "for": 5}),
            "$.alerts.rules[0].for: unknown key (known: name, device,",
        ),
        (alerts_with("r"), "$.alerts.rules[0]: expected an object, got"),
        (
            alerts_with(ops=["bogus://somewhere"]),
            '$.alerts.channels["ops"][0]: Apprise cannot use this URL: bogus://somewhere',
        ),
        (alerts_with(ops=[5]), '$.alerts.channels["ops"][0]: expected an Apprise URL, got 5'),
        (alerts_with(ops=[]), '$.alerts.channels["ops"]: expected at least one URL'),
        (
            alerts_with(**{"o p": ["json://h/x"]}),
            '$.alerts.channels["o p"]: channel name: expected a channel name without spaces',
        ),
        ({"alerts": {"rules": {}}}, "$.alerts.rules: expected an array, got {}"),
        ({"alerts": {"rule": []}}, "$.alerts.rule: unknown key (known: channels, rules,"),
    ],
)
def test_a_bad_alert_setting_names_its_key(settings: object, expected: str) -> None:
    (error,) = errors_of(settings)
    assert error.startswith(expected)


def test_an_apprise_url_error_does_not_show_the_secret_in_it() -> None:
    (error,) = errors_of(alerts_with(ops=["bogus://user:hunter2@host/path"]))
    assert "hunter2" not in error


def test_alerts_problems_come_with_the_other_keys_problems() -> None:
    settings = {"port": -1, **alerts_with({"name": "r", "when": "above"})}
    assert [e.split(":", 1)[0] for e in errors_of(settings)] == [
        "$.port",
        "$.alerts.rules[0].threshold",
    ]


def test_command_line_overrides_keep_the_alerts(tmp_path: Path) -> None:
    path = write(tmp_path, {"alerts": ISSUE_ALERTS})
    config = build_config(parse_args(["--config", str(path), "--port", "9100"]), tmp_path)
    assert [r.name for r in config.alerts.rules] == ["High heart rate", "Device silent"]


def test_main_exits_2_on_a_bad_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, alerts_with({"name": "r", "when": "above", "clear": 3}))
    assert main(["--config", str(path)]) == 2
    assert "$.alerts.rules[0].threshold: required" in capsys.readouterr().err
