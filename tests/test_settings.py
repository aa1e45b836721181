"""Shared settings machinery: problems by key, the form from the model, secrets, restarts."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import pytest

from agent.config import Config
from collector.config import CollectorConfig
from pulse_common.settings import (
    MASK,
    Problem,
    SettingsError,
    changed_keys,
    expecting,
    flatten,
    form,
    masked,
    merge_update,
    needs_restart,
    parse,
    problems,
    restart_keys,
    secret_keys,
    section,
    setting,
    validate,
)

DeviceKey = Annotated[str, msgspec.Meta(pattern=r"^\S+$", title="device id")]


class Inner(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A section of the test model."""

    size: Annotated[int, msgspec.Meta(ge=1, le=10_000), setting("Size", "How many.")] = 10
    rate: Annotated[float, msgspec.Meta(gt=0), setting("Rate", "How fast.", restart=True)] = 1.0
    mode: Annotated[Literal["slow", "fast"], setting("Mode", "Which way.")] = "slow"
    key: Annotated[str, setting("Key", "The secret.", secret=True, restart=True)] = ""
    seed: Annotated[
        Annotated[int, msgspec.Meta(ge=0)] | None, setting("Seed", "Repeatable runs.")
    ] = None


class Model(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The test model: top-level settings, a section, and a table of secrets."""

    name: Annotated[
        str,
        msgspec.Meta(max_length=8, pattern=r"^\S*$"),
        expecting("a name without spaces"),
        setting("Name", "What to call it."),
    ] = ""
    on: Annotated[bool, setting("On", "Whether it runs.")] = True
    inner: Annotated[Inner, section("Inner", "The inner part.")] = msgspec.field(
        default_factory=Inner
    )
    tokens: Annotated[
        dict[DeviceKey, Annotated[str, msgspec.Meta(min_length=1)]],
        expecting("an object of device id to token"),
        setting("Tokens", "One per device.", secret=True),
    ] = msgspec.field(default_factory=dict)


# problems, each under its key


def test_a_valid_object_gives_the_struct_and_no_problems() -> None:
    model, found = validate(Model, {"inner": {"size": 5}, "tokens": {"d": "t"}})
    assert found == []
    assert model == Model(inner=Inner(size=5), tokens={"d": "t"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"inner": {"size": "ten"}}, Problem("inner.size", 'expected int, got "ten"')),
        ({"inner": {"size": True}}, Problem("inner.size", "expected int, got true")),
        ({"inner": {"size": 0}}, Problem("inner.size", "expected int >= 1, got 0")),
        ({"inner": {"size": 10_001}}, Problem("inner.size", "expected int <= 10000, got 10001")),
        ({"inner": {"rate": 0}}, Problem("inner.rate", "expected float > 0.0, got 0")),
        ({"inner": {"seed": "x"}}, Problem("inner.seed", 'expected int | null, got "x"')),
        ({"inner": {"seed": -1}}, Problem("inner.seed", "expected int >= 0, got -1")),
        (
            {"inner": {"mode": "quick"}},
            Problem("inner.mode", 'expected one of "slow", "fast", got "quick"'),
        ),
        ({"on": "yes"}, Problem("on", 'expected bool, got "yes"')),
        ({"name": "a b"}, Problem("name", 'expected a name without spaces, got "a b"')),
        ({"name": "x" * 9}, Problem("name", 'expected str of length <= 8, got "xxxxxxxxx"')),
        ({"inner": 3}, Problem("inner", "expected an object, got 3")),
        (
            {"tokens": ["a"]},
            Problem("tokens", 'expected an object of device id to token, got ["a"]'),
        ),
        ({"tokens": {"d": ""}}, Problem('tokens["d"]', 'expected str of length >= 1, got ""')),
        (
            {"tokens": {"a b": "t"}},
            Problem(
                'tokens["a b"]', "device id: expected str matching regex '^\\\\S+$', got \"a b\""
            ),
        ),
        ([1, 2], Problem("$", "expected an object, got [1, 2]")),
    ],
)
def test_each_problem_names_its_key_the_expectation_and_the_value(
    raw: object, expected: Problem
) -> None:
    assert problems(Model, raw) == [expected]


def test_unknown_keys_are_named_at_their_own_path_with_the_known_ones() -> None:
    found = problems(Model, {"bogus": 1, "inner": {"sise": 3}})
    assert found == [
        Problem("bogus", "unknown key (known: name, on, inner, tokens)"),
        Problem("inner.sise", "unknown key (known: size, rate, mode, key, seed)"),
    ]


def test_every_problem_comes_at_once_in_the_order_written() -> None:
    model, found = validate(
        Model,
        {"on": 1, "inner": {"rate": "fast", "size": 0, "extra": None}, "name": "a b"},
    )
    assert model is None
    assert [p.key for p in found] == ["on", "inner.rate", "inner.size", "inner.extra", "name"]


def test_a_required_key_that_is_missing_is_a_problem() -> None:
    class Needs(msgspec.Struct):
        port: Annotated[int, setting("Port", "Where.")]

    assert problems(Needs, {}) == [Problem("port", "missing, and it has no default")]


def test_long_values_are_shortened() -> None:
    (found,) = problems(Model, {"name": "y" * 300})
    assert found.problem.endswith('got "' + "y" * 56 + "...")


def test_parse_reports_invalid_json_as_one_problem_at_the_root() -> None:
    model, found = parse(Model, b'{"inner": ')
    assert model is None
    (problem,) = found
    assert problem.key == "$"
    assert problem.problem.startswith("not valid JSON (")
    assert parse(Model, b"\xff")[1][0].problem.startswith("not valid JSON (")
    assert parse(Model, b'{"on": false}') == (Model(on=False), [])


def test_a_problem_reads_as_a_line_and_the_error_joins_them() -> None:
    found = [Problem("inner.size", "expected int >= 1, got 0"), Problem("$", "not valid JSON")]
    assert [str(p) for p in found] == [
        "$.inner.size: expected int >= 1, got 0",
        "$: not valid JSON",
    ]
    err = SettingsError("c.json", found)
    assert err.problems == found
    assert err.errors == ["$.inner.size: expected int >= 1, got 0", "$: not valid JSON"]
    assert str(err) == "c.json: $.inner.size: expected int >= 1, got 0; $: not valid JSON"


# the form, read from the model


def test_the_form_reads_label_help_restart_secret_limits_and_choices_from_the_model() -> None:
    sections = form(Model, "General", "The top.")
    assert [(s.title, s.description) for s in sections] == [
        ("General", "The top."),
        ("Inner", "The inner part."),
    ]
    fields = {f.key: f for s in sections for f in s.fields}
    assert list(fields) == [
        "name",
        "on",
        "tokens",
        "inner.size",
        "inner.rate",
        "inner.mode",
        "inner.key",
        "inner.seed",
    ]
    size = fields["inner.size"]
    assert (size.label, size.help, size.kind, size.restart) == ("Size", "How many.", "int", False)
    assert size.limits == "at least 1, at most 10,000"
    assert fields["inner.rate"].restart is True
    assert fields["inner.rate"].kind == "float"
    assert fields["inner.rate"].limits == "more than 0"
    assert fields["inner.mode"].kind == "choice"
    assert fields["inner.mode"].choices == ("slow", "fast")
    assert fields["inner.key"].kind == "secret"
    assert fields["inner.seed"].kind == "optional_int"
    assert fields["inner.seed"].limits == "at least 0"
    assert fields["on"].kind == "bool"
    assert fields["name"].kind == "text"
    assert fields["tokens"].kind == "secret"


def test_a_setting_without_a_label_or_help_cannot_make_a_form() -> None:
    class NoLabel(msgspec.Struct):
        port: int = 1

    class NoHelp(msgspec.Struct):
        port: Annotated[int, msgspec.Meta(title="Port")] = 1

    class NoSectionTitle(msgspec.Struct):
        inner: Inner = msgspec.field(default_factory=Inner)

    for model in (NoLabel, NoHelp):
        with pytest.raises(TypeError, match="^port: a setting needs a label and help"):
            form(model, "T", "D")
    with pytest.raises(TypeError, match="^inner: "):
        form(NoSectionTitle, "T", "D")


@pytest.mark.parametrize("model", [Config, CollectorConfig])
def test_every_setting_of_both_programs_has_a_label_and_help(
    model: type[msgspec.Struct],
) -> None:
    # form() refuses a setting without label or help, so a new one cannot ship without
    fields = [f for s in form(model, "T", "D") for f in s.fields]
    assert [f.key for f in fields] == list(flatten(model()))
    for field in fields:
        assert field.label, field.key
        assert field.help, field.key


def test_the_flags_of_both_programs() -> None:
    assert secret_keys(Config) == {"server.token", "dashboard.password", "mqtt.password"}
    assert "sender.batch_size" not in restart_keys(Config)
    assert {"storage.path", "dashboard.port", "logs.dir"} <= restart_keys(Config)
    assert secret_keys(CollectorConfig) == {"tokens", "read_tokens"}
    # the collector reads its settings once, at start
    assert restart_keys(CollectorConfig) == set(flatten(CollectorConfig()))


# values: flattening, secrets, changes


def test_flatten_names_every_setting_by_its_dotted_key() -> None:
    flat = flatten(Model(tokens={"d": "t"}))
    assert flat["inner.size"] == 10
    assert flat["tokens"] == {"d": "t"}
    assert "inner" not in flat


def test_masked_hides_every_secret_that_is_set() -> None:
    raw = masked(Model(inner=Inner(key="k"), tokens={"a": "t1", "b": "t2"}))
    assert raw["inner"]["key"] == MASK
    assert raw["tokens"] == {"a": MASK, "b": MASK}
    assert raw["inner"]["size"] == 10
    # an empty secret stays empty, so the page shows that none is set
    assert masked(Model())["inner"]["key"] == ""


def test_merge_update_lays_sections_over_and_the_mask_keeps_a_secret() -> None:
    current = Model(name="n", inner=Inner(key="k", size=3), tokens={"a": "t1", "b": "t2"})
    body = {"inner": {"key": MASK, "rate": 2.0}, "tokens": {"a": MASK, "c": "t3"}}
    raw = merge_update(current, body)
    assert raw["inner"] == {**msgspec.to_builtins(Inner(key="k", size=3)), "rate": 2.0}
    # a table is replaced, not merged, so an entry can be removed; a masked one keeps its value
    assert raw["tokens"] == {"a": "t1", "c": "t3"}
    assert raw["name"] == "n"
    assert merge_update(current, {"inner": {"key": ""}})["inner"]["key"] == ""


def test_changed_keys_and_which_of_them_need_a_restart() -> None:
    old = Model()
    new = Model(name="m", inner=Inner(rate=2.0, size=4))
    assert changed_keys(old, new) == ["name", "inner.size", "inner.rate"]
    assert needs_restart(old, new) == ["inner.rate"]
    assert changed_keys(old, Model()) == []
