"""The alert state machine: readings and receipt times in, alert changes and notices out.

Pure: no I/O and no clock of its own. For above/below rules a value beyond the threshold
starts a pending alert, which fires once the condition has held for `for_s` and resolves
only when a value reaches the clear side (hysteresis); a pending alert whose value comes
back before `for_s` is dropped without a word. A silent rule fires for a device whose last
receipt is `for_s` old and resolves on its next reading. Notices are suppressed while an
alert is silenced; an acknowledged alert gets no repeats; a resolve is announced only when
its firing was.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import msgspec

from collector.alerts.rules import Rule

State = Literal["pending", "firing", "resolved"]
# what the history records: the three states, and a pending alert dropped before firing
Change = Literal["pending", "firing", "resolved", "cancelled"]
NoticeState = Literal["firing", "resolved"]
Key = tuple[str, str]


class Alert(msgspec.Struct, kw_only=True):
    """The current alert of one rule on one device, as the database holds it."""

    rule: str
    device_id: str
    state: State
    since: dt.datetime
    value: float | None = None
    acknowledged: bool = False
    silenced_until: dt.datetime | None = None
    last_notified_at: dt.datetime | None = None

    @property
    def key(self) -> Key:
        """(rule, device_id): an alert's identity."""
        return (self.rule, self.device_id)

    def is_silenced(self, now: dt.datetime) -> bool:
        """Whether notifications about this alert are held back at `now`."""
        return self.silenced_until is not None and now < self.silenced_until


class Sample(NamedTuple):
    """One stored reading as the evaluation sees it."""

    device_id: str
    value: float
    received_at: dt.datetime


class Transition(NamedTuple):
    """One line of an alert's history."""

    rule: str
    device_id: str
    state: Change
    at: dt.datetime
    value: float | None


class Notice(NamedTuple):
    """Something to tell a rule's channels: an alert fired (again) or resolved."""

    rule: str
    device_id: str
    state: NoticeState
    at: dt.datetime
    value: float | None
    channels: tuple[str, ...]
    repeat: bool = False


@dataclass
class Outcome:
    """What one evaluation changed; `alerts` is the working set after it."""

    alerts: dict[Key, Alert]
    changed: set[Key] = field(default_factory=set)
    # alerts told about in this evaluation: no repeat of them in the same one
    told: set[Key] = field(default_factory=set)
    removed: set[Key] = field(default_factory=set)
    transitions: list[Transition] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)

    def put(self, alert: Alert) -> None:
        """Record `alert` as new or changed."""
        self.alerts[alert.key] = alert
        self.changed.add(alert.key)
        self.removed.discard(alert.key)

    def move(self, alert: Alert, state: State, at: dt.datetime) -> None:
        """Move `alert` to `state` at `at`, with a history line."""
        alert.state = state
        alert.since = at
        self.put(alert)
        self.transitions.append(Transition(alert.rule, alert.device_id, state, at, alert.value))

    def drop(self, alert: Alert, at: dt.datetime) -> None:
        """Forget a pending alert whose condition ended before it fired."""
        self.alerts.pop(alert.key, None)
        self.changed.discard(alert.key)
        self.removed.add(alert.key)
        self.transitions.append(
            Transition(alert.rule, alert.device_id, "cancelled", at, alert.value)
        )

    def tell(self, rule: Rule, alert: Alert, at: dt.datetime, *, repeat: bool = False) -> None:
        """Queue a notice about `alert` in its current state, unless it is silenced."""
        if alert.is_silenced(at) or alert.state == "pending":
            return
        state: NoticeState = alert.state
        notice = Notice(
            rule.name, alert.device_id, state, at, alert.value, tuple(rule.channels), repeat
        )
        self.notices.append(notice)
        self.told.add(alert.key)
        alert.last_notified_at = at
        self.put(alert)


def evaluate(
    rules: list[Rule],
    alerts: dict[Key, Alert],
    samples: list[Sample],
    last_receipts: dict[str, dt.datetime],
    now: dt.datetime,
) -> Outcome:
    """One evaluation at `now` over the readings received since the last one, in order."""
    out = Outcome({key: msgspec.structs.replace(a) for key, a in alerts.items()})
    value_rules = [r for r in rules if r.when != "silent"]
    for sample in samples:
        for rule in value_rules:
            if rule.watches(sample.device_id):
                _on_value(rule, out, sample)
    for rule in value_rules:
        _on_time(rule, out, now)
    for rule in rules:
        if rule.when == "silent":
            _on_silence(rule, out, last_receipts, now)
    for rule in rules:
        _on_reminders(rule, out, now)
    return out


def _fire(rule: Rule, out: Outcome, alert: Alert, at: dt.datetime) -> None:
    alert.acknowledged = False
    alert.last_notified_at = None
    out.move(alert, "firing", at)
    out.tell(rule, alert, at)


def _resolve(rule: Rule, out: Outcome, alert: Alert, at: dt.datetime) -> None:
    # an alert nobody heard fire resolves quietly: no "up" without a "down"
    was_told = alert.last_notified_at is not None
    alert.acknowledged = False
    out.move(alert, "resolved", at)
    if was_told:
        out.tell(rule, alert, at)


def _on_value(rule: Rule, out: Outcome, sample: Sample) -> None:
    key = (rule.name, sample.device_id)
    alert = out.alerts.get(key)
    value, at = sample.value, sample.received_at
    if alert is None or alert.state == "resolved":
        if not rule.is_beyond(value):
            return
        # a silence set on the device's earlier alert still holds for this one
        silenced = alert.silenced_until if alert is not None else None
        alert = Alert(
            rule=rule.name, device_id=sample.device_id, state="pending", since=at, value=value
        )
        alert.silenced_until = silenced
        out.move(alert, "pending", at)
    elif alert.state == "pending" and not rule.is_beyond(value):
        alert.value = value
        out.drop(alert, at)
        return
    elif alert.state == "firing" and rule.is_cleared(value):
        alert.value = value
        _resolve(rule, out, alert, at)
        return
    else:
        # still pending, or still firing (possibly hovering between clear and threshold)
        alert.value = value
        out.put(alert)
    if alert.state == "pending" and (at - alert.since).total_seconds() >= rule.for_s:
        _fire(rule, out, alert, at)


def _on_time(rule: Rule, out: Outcome, now: dt.datetime) -> None:
    """Fire the pending alerts whose condition has now held for `for_s`."""
    for alert in list(out.alerts.values()):
        if alert.rule != rule.name or alert.state != "pending":
            continue
        if (now - alert.since).total_seconds() >= rule.for_s:
            _fire(rule, out, alert, now)


def _on_silence(
    rule: Rule, out: Outcome, last_receipts: dict[str, dt.datetime], now: dt.datetime
) -> None:
    """Fire for each watched device quiet for `for_s`; resolve those heard from again."""
    for device_id, last in last_receipts.items():
        if not rule.watches(device_id):
            continue
        alert = out.alerts.get((rule.name, device_id))
        is_quiet = (now - last).total_seconds() >= rule.for_s
        if is_quiet and (alert is None or alert.state != "firing"):
            silenced = alert.silenced_until if alert is not None else None
            alert = Alert(rule=rule.name, device_id=device_id, state="firing", since=now)
            alert.silenced_until = silenced
            _fire(rule, out, alert, now)
        elif not is_quiet and alert is not None and alert.state == "firing":
            _resolve(rule, out, alert, last)


def _on_reminders(rule: Rule, out: Outcome, now: dt.datetime) -> None:
    """Tell about firing alerts not yet announced (a silence ended) or due a repeat."""
    for alert in list(out.alerts.values()):
        if alert.rule != rule.name or alert.state != "firing" or alert.is_silenced(now):
            continue
        if alert.key in out.told:
            continue
        if alert.last_notified_at is None:
            out.tell(rule, alert, now)
        elif (
            rule.repeat_s is not None
            and not alert.acknowledged
            and (now - alert.last_notified_at).total_seconds() >= rule.repeat_s
        ):
            out.tell(rule, alert, now, repeat=True)
