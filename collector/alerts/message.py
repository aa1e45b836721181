"""The text of a notification: one message for every notice of one evaluation to a channel."""

from __future__ import annotations

from collections.abc import Iterable

from collector.alerts.evaluation import Notice

# a fleet going silent at once is one message: its count and this many device ids
FIRST_DEVICES = 20


def _group(notices: Iterable[Notice]) -> dict[tuple[str, str], list[Notice]]:
    groups: dict[tuple[str, str], list[Notice]] = {}
    for notice in notices:
        groups.setdefault((notice.rule, notice.state), []).append(notice)
    return groups


def _devices(notices: list[Notice], first: int) -> str:
    ids = [n.device_id for n in notices]
    shown = ", ".join(ids[:first])
    return shown if len(ids) <= first else f"{shown} and {len(ids) - first} more"


def _line(rule: str, state: str, notices: list[Notice], first: int) -> str:
    if len(notices) == 1:
        n = notices[0]
        value = "" if n.value is None else f", value {n.value:g}"
        again = " (still)" if n.repeat else ""
        return f"{rule}: {state}{again} on {n.device_id}{value} at {n.at:%Y-%m-%d %H:%M:%S} UTC"
    return f"{rule}: {state} on {len(notices)} devices: {_devices(notices, first)}"


def compose(notices: list[Notice], first: int = FIRST_DEVICES) -> tuple[str, str]:
    """(title, body) naming each rule, its devices and "firing" or "resolved"."""
    groups = _group(notices)
    body = "\n".join(_line(rule, state, ns, first) for (rule, state), ns in groups.items())
    if len(groups) == 1:
        ((rule, state), ns), *_ = groups.items()
        subject = ns[0].device_id if len(ns) == 1 else f"{len(ns)} devices"
        return f"[{state}] {rule} on {subject}", body
    counts: dict[str, int] = {}
    for notice in notices:
        counts[notice.state] = counts.get(notice.state, 0) + 1
    summary = ", ".join(f"{count} {state}" for state, count in counts.items())
    return f"[Pulse alerts] {summary}", body
