"""`read_tokens` in the collector's config: a list of tokens, each error naming its key."""

from __future__ import annotations

import json

import pytest

from collector.config import ConfigError, parse_config, with_overrides


def config_error(raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(raw).encode())
    return str(caught.value)


def test_read_tokens_default_to_none_and_are_read_as_a_list() -> None:
    assert parse_config(b"{}").read_tokens == []
    assert parse_config(b'{"read_tokens": ["a-1", "b-2"]}').read_tokens == ["a-1", "b-2"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"read_tokens": "a-1"}, "$.read_tokens: expected an array"),
        ({"read_tokens": ["ok", "has space"]}, "$.read_tokens[1]: expected a token of 1 to 1024"),
        ({"read_tokens": [""]}, "$.read_tokens[0]: expected a token"),
        ({"read_tokens": [7]}, "$.read_tokens[0]: expected a token of 1 to 1024 characters"),
        ({"read_tokens": ["x" * 1025]}, "$.read_tokens[0]: expected a token"),
        (
            {"read_tokens": ["ok", "dev-secret"], "tokens": {"dev": "dev-secret"}},
            "$.read_tokens[1]: is also a device's token (tokens); device tokens never read",
        ),
    ],
)
def test_a_bad_read_token_is_named_by_its_key(raw: object, expected: str) -> None:
    assert expected in config_error(raw)


def test_a_bad_read_token_is_described_never_echoed() -> None:
    assert "has space" not in config_error({"read_tokens": ["has space"]})


def test_read_tokens_are_checked_in_overrides_too() -> None:
    config = parse_config(b"{}")
    with pytest.raises(ConfigError, match=r"read_tokens\[0\]"):
        with_overrides(config, {"read_tokens": ["a b"]})
