"""Settings models: metadata on the fields, every problem by key, and the form they make.

A program declares its settings as msgspec Structs whose fields carry `setting(...)`
metadata (label, help, restart-needed, secret). From that one model come the validation
(`validate`, `parse`: every problem at once, each under its dotted key), the settings form
(`form`), the masking of secrets and the list of changes that need a restart.
"""

from __future__ import annotations

import json
import operator
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import msgspec
import msgspec.inspect as mi

S = TypeVar("S", bound=msgspec.Struct)

ROOT = "$"
# Shown instead of a secret that is set; a save that sends it back keeps the secret.
MASK = "••••••••"

_BOUNDS: tuple[tuple[str, str, Callable[[float, float], bool]], ...] = (
    ("ge", ">=", operator.ge),
    ("gt", ">", operator.gt),
    ("le", "<=", operator.le),
    ("lt", "<", operator.lt),
)
# how an error names each JSON type, and the Python type that a parsed value of it has
_KINDS: dict[type[mi.Type], tuple[str, type]] = {
    mi.IntType: ("int", int),
    mi.FloatType: ("float", float),
    mi.StrType: ("str", str),
    mi.BoolType: ("bool", bool),
    mi.NoneType: ("null", type(None)),
    mi.StructType: ("an object", dict),
    mi.DictType: ("an object", dict),
    mi.ListType: ("an array", list),
}
_LIMIT_WORDS = (("ge", "at least"), ("gt", "more than"), ("le", "at most"), ("lt", "less than"))


def setting(
    label: str, description: str, *, restart: bool = False, secret: bool = False
) -> msgspec.Meta:
    """The metadata of one setting: label, help, needs a restart, shown masked."""
    return msgspec.Meta(
        title=label, description=description, extra={"restart": restart, "secret": secret}
    )


def section(title: str, description: str) -> msgspec.Meta:
    """The title and description of a group of settings (a sub-struct of the model)."""
    return msgspec.Meta(title=title, description=description)


def expecting(phrase: str) -> msgspec.Meta:
    """How an error words what a pattern or an object field asks for: `expected <phrase>`."""
    return msgspec.Meta(extra={"expects": phrase})


class Problem(NamedTuple):
    """One bad setting: its dotted key (`$` for the whole) and what is wrong with it."""

    key: str
    problem: str

    def __str__(self) -> str:
        where = ROOT if self.key == ROOT else f"{ROOT}.{self.key}"
        return f"{where}: {self.problem}"


class SettingsError(ValueError):
    """Settings that cannot be used: `problems` names every bad key, `errors` as lines."""

    def __init__(self, where: str, problems: list[Problem]):
        self.problems = problems
        self.errors = [str(p) for p in problems]
        super().__init__((f"{where}: " if where else "") + "; ".join(self.errors))


@dataclass(frozen=True)
class _Spec:
    """What one annotation says: the bare type, msgspec's view of it, and its metadata."""

    bare: Any
    type: mi.Type
    label: str
    help: str
    extra: dict[str, Any]


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _spec(annotation: Any) -> _Spec:
    info = mi.type_info(annotation)
    schema: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if isinstance(info, mi.Metadata):
        schema = info.extra_json_schema or {}
        extra = info.extra or {}
    is_annotated = typing.get_origin(annotation) is Annotated
    bare = typing.get_args(annotation)[0] if is_annotated else annotation
    return _Spec(bare, _unwrap(info), schema.get("title", ""), schema.get("description", ""), extra)


def _choices(bare: Any) -> tuple[Any, ...]:
    # the annotation keeps the order the choices were written in; msgspec.inspect sorts them
    return typing.get_args(bare) if typing.get_origin(bare) is Literal else ()


def _leaves(cls: type[msgspec.Struct], prefix: str = "") -> Iterator[tuple[str, _Spec]]:
    """Every setting under `cls` as (dotted key, spec), sub-structs flattened, in model order."""
    for field in msgspec.structs.fields(cls):
        key = f"{prefix}{field.encode_name}"
        spec = _spec(field.type)
        if isinstance(spec.type, mi.StructType):
            yield from _leaves(spec.type.cls, f"{key}.")
        else:
            yield key, spec


# --- validation ---------------------------------------------------------------------------


def _describe(value: object) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: object) -> bool:
    # JSON true is not a number, though Python's bool is an int
    return isinstance(value, int | float) and not isinstance(value, bool)


def _name(t: mi.Type) -> str:
    """The type in the words of an error: `int`, `str`, `an object`, `one of "A", "B"`."""
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in t.values)
    if isinstance(t, mi.UnionType):
        return " | ".join(_name(_unwrap(u)) for u in t.types)
    if type(t) in _KINDS:
        return _KINDS[type(t)][0]
    return type(t).__name__.removesuffix("Type").lower()


def _has_kind(t: mi.Type, value: object) -> bool:
    """Whether `value` has the JSON type that `t` asks for, its constraints aside."""
    if isinstance(t, mi.IntType):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(t, mi.FloatType):
        return _is_number(value)
    if isinstance(t, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(t, mi.LiteralType):
        return value in t.values
    # a type this walk does not know is left for msgspec's own verdict
    return type(t) not in _KINDS or isinstance(value, _KINDS[type(t)][1])


def _broken_rule(t: mi.Type, value: object, expects: str | None) -> str:
    """What `value` fails in `t`: its type, else the first constraint it breaks."""
    if isinstance(t, mi.UnionType):
        members = [_unwrap(u) for u in t.types]
        fitting = [u for u in members if _has_kind(u, value)]
        return _broken_rule(fitting[0], value, expects) if fitting else _name(t)
    if not _has_kind(t, value):
        return _name(t)
    if isinstance(t, mi.IntType | mi.FloatType):
        number = typing.cast(float, value)
        for attr, sign, holds in _BOUNDS:
            bound = getattr(t, attr)
            if bound is not None and not holds(number, bound):
                # a float's bound reads as one: `float > 0.0`
                shown = float(bound) if isinstance(t, mi.FloatType) else bound
                return f"{_name(t)} {sign} {shown}"
        if t.multiple_of is not None and number % t.multiple_of:
            return f"{_name(t)} that is a multiple of {t.multiple_of}"
    if isinstance(t, mi.StrType):
        text = typing.cast(str, value)
        if t.min_length is not None and len(text) < t.min_length:
            return f"str of length >= {t.min_length}"
        if t.max_length is not None and len(text) > t.max_length:
            return f"str of length <= {t.max_length}"
        # the model's own pattern, tried on the value (msgspec searches, it does not match)
        if t.pattern is not None and not re.search(t.pattern, text):
            return expects or f"str matching regex {t.pattern!r}"
    return _name(t)


def _leaf_problem(annotation: Any, value: object) -> str | None:
    """`expected …, got …` if msgspec refuses `value` as `annotation`, else None."""
    try:
        msgspec.convert(value, annotation, strict=True)
    except msgspec.ValidationError:
        spec = _spec(annotation)
        choices = _choices(spec.bare)
        if choices:
            expected = "one of " + ", ".join(json.dumps(c) for c in choices)
        else:
            expected = _broken_rule(spec.type, value, spec.extra.get("expects"))
        return f"expected {expected}, got {_describe(value)}"
    return None


def _child(key: str, name: str) -> str:
    return name if key == ROOT else f"{key}.{name}"


def _check(annotation: Any, value: object, key: str, found: list[Problem]) -> None:
    spec = _spec(annotation)
    t = spec.type
    if isinstance(t, mi.StructType) and isinstance(value, dict):
        _check_struct(t.cls, value, key, found)
    elif isinstance(t, mi.DictType) and isinstance(value, dict):
        _check_entries(spec.bare, value, key, found)
    elif isinstance(t, mi.StructType | mi.DictType):
        expected = spec.extra.get("expects", "an object")
        found.append(Problem(key, f"expected {expected}, got {_describe(value)}"))
    else:
        problem = _leaf_problem(annotation, value)
        if problem is not None:
            found.append(Problem(key, problem))


def _check_struct(
    cls: type[msgspec.Struct], raw: dict[Any, Any], key: str, found: list[Problem]
) -> None:
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    # in the order the user wrote them, so the errors read like the file
    for name, value in raw.items():
        field = fields.get(name)
        if field is None:
            known = ", ".join(fields)
            found.append(Problem(_child(key, str(name)), f"unknown key (known: {known})"))
        else:
            _check(field.type, value, _child(key, name), found)
    for name, field in fields.items():
        if field.required and name not in raw:
            found.append(Problem(_child(key, name), "missing, and it has no default"))


def _check_entries(bare: Any, raw: dict[Any, Any], key: str, found: list[Problem]) -> None:
    key_type, value_type = typing.get_args(bare) or (Any, Any)
    # "device id: expected …" says which half of the entry is wrong
    label = _spec(key_type).label or "key"
    for name, value in raw.items():
        entry = f"{key}[{_describe(name)}]"
        problem = _leaf_problem(key_type, name)
        if problem is not None:
            found.append(Problem(entry, f"{label}: {problem}"))
        _check(value_type, value, entry, found)


def problems(cls: type[msgspec.Struct], raw: object) -> list[Problem]:
    """Every problem of `raw` as a `cls`, each under its dotted key; [] when it is valid."""
    found: list[Problem] = []
    _check(cls, raw, ROOT, found)
    return found


def validate(cls: type[S], raw: object) -> tuple[S | None, list[Problem]]:
    """`raw` as a `cls` and no problems, or None and every problem at once."""
    found = problems(cls, raw)
    if found:
        return None, found
    try:
        return msgspec.convert(raw, cls, strict=True), []
    except msgspec.ValidationError as err:
        # the walk checks each value with msgspec itself; if the two ever disagree,
        # refuse the settings with msgspec's own words rather than let them through
        return None, [Problem(ROOT, str(err))]


def parse(cls: type[S], data: bytes) -> tuple[S | None, list[Problem]]:
    """JSON `data` as a `cls`, like `validate`; JSON that cannot be read is one problem at `$`."""
    try:
        raw: object = json.loads(data)
    except ValueError as err:  # UnicodeDecodeError is one too
        return None, [Problem(ROOT, f"not valid JSON ({err})")]
    return validate(cls, raw)


# --- the form -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One input of a settings form."""

    key: str
    label: str
    help: str
    kind: str  # text | secret | int | optional_int | float | bool | choice | map
    limits: str
    choices: tuple[str, ...]
    restart: bool


class Section(NamedTuple):
    """A titled group of form fields: a sub-struct of the model, or its top-level settings."""

    title: str
    description: str
    fields: list[Field]


def _require_text(key: str, spec: _Spec) -> None:
    if not (spec.label and spec.help):
        # no setting ships without a label and help; the tests generate every form
        raise TypeError(f"{key}: a setting needs a label and help (see settings.setting)")


def _kind(spec: _Spec) -> str:
    t = spec.type
    if spec.extra.get("secret"):
        return "secret"
    kinds: dict[type[mi.Type], str] = {
        mi.BoolType: "bool",
        mi.IntType: "int",
        mi.FloatType: "float",
        mi.LiteralType: "choice",
        mi.DictType: "map",
    }
    if isinstance(t, mi.UnionType) and any(isinstance(_unwrap(u), mi.IntType) for u in t.types):
        return "optional_int"
    return kinds.get(type(t), "text")


def _limits(t: mi.Type) -> str:
    if isinstance(t, mi.UnionType):
        inner = [_unwrap(u) for u in t.types if not isinstance(_unwrap(u), mi.NoneType)]
        return _limits(inner[0]) if inner else ""
    parts = []
    for attr, word in _LIMIT_WORDS:
        value = getattr(t, attr, None)
        if value is not None:
            parts.append(f"{word} {value:,}")
    return ", ".join(parts)


def _field(key: str, spec: _Spec) -> Field:
    _require_text(key, spec)
    choices = tuple(str(c) for c in _choices(spec.bare))
    restart = bool(spec.extra.get("restart"))
    return Field(key, spec.label, spec.help, _kind(spec), _limits(spec.type), choices, restart)


def form(cls: type[msgspec.Struct], title: str, description: str) -> list[Section]:
    """Every setting of `cls` as a form field, grouped by section, all read from the model.

    The top-level settings make the first section, under `title`; each sub-struct makes
    its own, under its `section(...)` metadata. A setting without label or help raises
    TypeError.
    """
    top = Section(title, description, [])
    sections = [top]
    for field in msgspec.structs.fields(cls):
        spec = _spec(field.type)
        key = field.encode_name
        if isinstance(spec.type, mi.StructType):
            _require_text(key, spec)
            fields = [_field(k, s) for k, s in _leaves(spec.type.cls, f"{key}.")]
            sections.append(Section(spec.label, spec.help, fields))
        else:
            top.fields.append(_field(key, spec))
    return [s for s in sections if s.fields]


# --- values -------------------------------------------------------------------------------


def _get(raw: object, key: str) -> object:
    for name in key.split("."):
        if not isinstance(raw, dict):
            return None
        raw = raw.get(name)
    return raw


def _put(raw: dict[str, Any], key: str, value: object) -> None:
    *path, last = key.split(".")
    for name in path:
        raw = raw[name]
    raw[last] = value


def restart_keys(cls: type[msgspec.Struct]) -> frozenset[str]:
    """The dotted keys whose change takes effect only after a restart."""
    return frozenset(key for key, spec in _leaves(cls) if spec.extra.get("restart"))


def secret_keys(cls: type[msgspec.Struct]) -> frozenset[str]:
    """The dotted keys whose values are shown masked."""
    return frozenset(key for key, spec in _leaves(cls) if spec.extra.get("secret"))


def flatten(settings: msgspec.Struct) -> dict[str, Any]:
    """{"sender.interval_s": 5.0, ...}: every setting under its dotted key, in model order."""
    raw = msgspec.to_builtins(settings)
    return {key: _get(raw, key) for key, _ in _leaves(type(settings))}


def masked(settings: msgspec.Struct) -> dict[str, Any]:
    """The settings as a JSON-ready dict, each secret that is set replaced by MASK."""
    raw: dict[str, Any] = msgspec.to_builtins(settings)
    for key in secret_keys(type(settings)):
        value = _get(raw, key)
        if isinstance(value, dict):
            _put(raw, key, dict.fromkeys(value, MASK))
        elif value:
            _put(raw, key, MASK)
    return raw


def _lay_over(cls: type[msgspec.Struct], raw: dict[str, Any], body: dict[Any, Any]) -> None:
    sections = {
        f.encode_name: spec.type.cls
        for f in msgspec.structs.fields(cls)
        if isinstance((spec := _spec(f.type)).type, mi.StructType)
    }
    for key, value in body.items():
        part = raw.get(key)
        if key in sections and isinstance(value, dict) and isinstance(part, dict):
            _lay_over(sections[key], part, value)
        else:
            raw[key] = value


def _unmask(raw: dict[str, Any], current: dict[str, Any], key: str) -> None:
    value, kept = _get(raw, key), _get(current, key)
    if value == MASK:
        _put(raw, key, kept)
    elif isinstance(value, dict) and isinstance(kept, dict):
        for name, entry in value.items():
            if entry == MASK and name in kept:
                value[name] = kept[name]


def merge_update(current: S, body: dict[str, Any]) -> dict[str, Any]:
    """A (partial) update laid over `current`, section by section; MASK keeps a secret."""
    raw: dict[str, Any] = msgspec.to_builtins(current)
    kept: dict[str, Any] = msgspec.to_builtins(current)
    _lay_over(type(current), raw, body)
    for key in secret_keys(type(current)):
        _unmask(raw, kept, key)
    return raw


def changed_keys(old: S, new: S) -> list[str]:
    """The dotted keys whose value differs, in model order."""
    before, after = flatten(old), flatten(new)
    return [key for key in after if before.get(key) != after[key]]


def needs_restart(old: S, new: S) -> list[str]:
    """The changed keys that take effect only after a restart, in model order."""
    later = restart_keys(type(new))
    return [key for key in changed_keys(old, new) if key in later]
