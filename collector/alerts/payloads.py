"""What the alerts API reads: request bodies and query strings, checked like the config.

Every problem is named by its key (`threshold`, `channels[0]`, `urls[1]`), in the words the
config's errors use, and all of a body's problems come at once. A problem that only the
current rules and channels make (a rule naming a channel that does not exist) is told
apart from bad input: creating the channel makes the same request good.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from collector.alerts.evaluation import State
from collector.alerts.notify import AlertsUnavailable
from collector.alerts.rules import Channel, ChannelName, Rule, RuleName, rule_problems
from collector.alerts.validation import url_problems
from pulse_common.settings import ROOT, Problem, problems
from pulse_wire import DeviceId

# a silence longer than a year is a forgotten one
MAX_SILENCE_S = 366 * 86_400
MAX_URLS = 20
MAX_URL_LENGTH = 2000
MAX_HISTORY = 1000


@dataclass
class Refusal:
    """Why a request cannot be done: its status (400 bad input, 409 a missing channel)."""

    status: int
    error: str
    problems: list[Problem] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The JSON answer: the error text and each problem by key."""
        return {
            "error": self.error,
            "problems": [{"key": p.key, "problem": p.problem} for p in self.problems],
        }


class AlertKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of POST /api/v1/alerts/ack: which alert."""

    rule: RuleName
    device_id: DeviceId


class SilenceRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of POST /api/v1/alerts/silence: which alert, and for how long (0 lifts it)."""

    rule: RuleName
    device_id: DeviceId
    for_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_SILENCE_S)]


# not `X | None`: the lax conversion of a query string would read `device_id=null` as None,
# and "null" is a valid device id
class AlertsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The query string of GET /api/v1/alerts."""

    state: State | UnsetType = UNSET
    device_id: DeviceId | UnsetType = UNSET


class HistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    """The query string of GET /api/v1/alerts/history."""

    rule: RuleName | UnsetType = UNSET
    device_id: DeviceId | UnsetType = UNSET
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_HISTORY)] = 100


class _Name(msgspec.Struct, forbid_unknown_fields=True):
    name: RuleName


class _ChannelName(msgspec.Struct, forbid_unknown_fields=True):
    name: ChannelName


class _Channels(msgspec.Struct, forbid_unknown_fields=True):
    # each URL is checked on its own, under its index
    urls: Annotated[list[Any], msgspec.Meta(max_length=MAX_URLS)]


S = TypeVar("S", bound=msgspec.Struct)


def _bad(problems_found: list[Problem]) -> Refusal:
    shown = "; ".join(str(p) for p in problems_found)
    return Refusal(400, f"invalid request: {shown}", problems_found)


def _decode(body: bytes) -> tuple[object, list[Problem]]:
    try:
        return msgspec.json.decode(body), []
    except msgspec.DecodeError as err:
        return None, [Problem(ROOT, f"not valid JSON ({err})")]


def parse_body(body: bytes, kind: type[S]) -> S | Refusal:
    """A JSON body as a `kind`, or a 400 that names every bad key."""
    raw, found = _decode(body)
    found = found or problems(kind, raw)
    if found:
        return _bad(found)
    return msgspec.convert(raw, kind, strict=True)


def _named(raw: object, name: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """`raw` with the path's `name` in it, or None if it is no object; a problem if it
    names another."""
    if not isinstance(raw, dict):
        return None, []
    given = raw.get("name", name)
    if given == name:
        return {**raw, "name": name}, []
    expected = msgspec.json.encode(name).decode()
    return {**raw, "name": name}, [Problem("name", f"must be the name in the path, {expected}")]


def _item_problems(raw: dict[str, Any], key: str, checker: type[msgspec.Struct]) -> list[Problem]:
    """The problems of each item of the array `raw[key]`, under `key[i]`; the array emptied
    in `raw` after, so that the field-by-field walk checks only its being an array."""
    items = raw.get(key)
    if not isinstance(items, list):
        return []
    raw[key] = []
    found: list[Problem] = []
    for i, item in enumerate(items):
        for p in problems(checker, {"name": item}):
            found.append(Problem(f"{key}[{i}]", p.problem))
    return found


def parse_rule(body: bytes, name: str, channels: set[str]) -> Rule | Refusal:
    """The body of PUT /api/v1/rules/{name} as a Rule named `name`, or why not."""
    raw, found = _decode(body)
    if found:
        return _bad(found)
    named, found = _named(raw, name)
    if named is None:
        return _bad(problems(Rule, raw))
    items = named.get("channels")
    found += _item_problems(named, "channels", _ChannelName)
    found += problems(Rule, named)
    if found:
        return _bad(found)
    rule = msgspec.convert({**named, "channels": items or []}, Rule, strict=True)
    found = rule_problems(rule, set(rule.channels))
    if found:
        return _bad(found)
    missing = rule_problems(rule, channels)
    if missing:
        shown = "; ".join(str(p) for p in missing)
        return Refusal(409, f"create the channels first: {shown}", missing)
    return rule


def parse_channel(body: bytes, name: str) -> Channel | Refusal:
    """The body of PUT /api/v1/channels/{name} as a Channel named `name`, or why not."""
    raw, found = _decode(body)
    if found:
        return _bad(found)
    named, found = _named(raw, name)
    if named is None:
        return _bad(problems(_Channels, raw))
    found += problems(_ChannelName, {"name": name})
    found += problems(_Channels, {k: v for k, v in named.items() if k != "name"})
    if not found:
        found = _url_problems(named["urls"])
    if found:
        return _bad(found)
    return msgspec.convert(named, Channel, strict=True)


def _url_problems(urls: list[Any]) -> list[Problem]:
    too_long = [
        Problem(f"urls[{i}]", f"expected a URL of at most {MAX_URL_LENGTH} characters")
        for i, url in enumerate(urls)
        if isinstance(url, str) and len(url) > MAX_URL_LENGTH
    ]
    if too_long:
        return too_long
    try:
        return url_problems(urls, "urls")
    except AlertsUnavailable:
        return []  # the server runs without Apprise, and said so at start: unchecked
