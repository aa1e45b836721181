"""The checks of the config's `alerts` section that a field-by-field walk cannot make.

The shared settings walk names keys in objects but not inside arrays, and knows nothing
across fields; this one walks the rules and channel URLs item by item and adds the checks
across them (threshold per kind, the clear side, known channels, unique names, URLs that
Apprise can use), every problem under its full key like `alerts.rules[1].clear`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec

from collector.alerts.notify import AlertsUnavailable, url_problem
from collector.alerts.rules import Rule, rule_problems
from pulse_common.settings import ROOT, Problem, problems

SECTION = "alerts"


def _under(prefix: str, problem: Problem) -> Problem:
    key = prefix if problem.key == ROOT else f"{prefix}.{problem.key}"
    return Problem(key, problem.problem)


def _section(raw: object) -> dict[str, Any] | None:
    section = raw.get(SECTION) if isinstance(raw, dict) else None
    return section if isinstance(section, dict) else None


def without_items(raw: object) -> object:
    """A copy of `raw` with the rule and URL arrays emptied, for the field-by-field walk."""
    section = _section(raw)
    if section is None:
        return raw
    raw = copy.copy(raw)
    assert isinstance(raw, dict)  # _section found a dict
    section = dict(section)
    if isinstance(section.get("rules"), list):
        section["rules"] = []
    channels = section.get("channels")
    if isinstance(channels, dict):
        section["channels"] = {k: [] if isinstance(v, list) else v for k, v in channels.items()}
    raw[SECTION] = section
    return raw


def url_problems(urls: list[Any], key: str) -> list[Problem]:
    """Every problem of a channel's URL list, each under `key[i]`; AlertsUnavailable without
    Apprise, which alone can tell a usable URL."""
    found: list[Problem] = []
    if not urls:
        found.append(Problem(key, "expected at least one URL"))
    for i, url in enumerate(urls):
        if not isinstance(url, str) or not url:
            found.append(Problem(f"{key}[{i}]", f"expected an Apprise URL, got {json.dumps(url)}"))
            continue
        problem = url_problem(url)
        if problem is not None:
            found.append(Problem(f"{key}[{i}]", problem))
    return found


def _url_problems(channels: dict[Any, Any]) -> list[Problem]:
    found: list[Problem] = []
    for name, urls in channels.items():
        if isinstance(urls, list):
            found += url_problems(urls, f'{SECTION}.channels["{name}"]')
    return found


def _rules_problems(rules: list[Any], channels: set[str]) -> list[Problem]:
    found: list[Problem] = []
    seen: set[str] = set()
    for i, item in enumerate(rules):
        prefix = f"{SECTION}.rules[{i}]"
        item_problems = problems(Rule, item)
        if item_problems:
            found += [_under(prefix, p) for p in item_problems]
            continue
        rule = msgspec.convert(item, Rule, strict=True)
        found += [_under(prefix, p) for p in rule_problems(rule, channels)]
        if rule.name in seen:
            found.append(Problem(f"{prefix}.name", f'duplicate rule name "{rule.name}"'))
        seen.add(rule.name)
    return found


def alerts_problems(raw: object) -> list[Problem]:
    """Every problem of the `alerts` section's rules and URLs, under full keys."""
    section = _section(raw)
    if section is None:
        return []
    channels = section.get("channels")
    channels = channels if isinstance(channels, dict) else {}
    rules = section.get("rules")
    rules = rules if isinstance(rules, list) else []
    try:
        found = _url_problems(channels)
    except AlertsUnavailable:
        # the server runs without Apprise, and says so at start: its URLs go unchecked
        found = []
    return found + _rules_problems(rules, {str(name) for name in channels})
