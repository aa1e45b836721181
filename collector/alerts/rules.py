"""Alert rules and notification channels: their types and the checks across their fields."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import msgspec

from pulse_common.settings import Problem, expecting, setting
from pulse_wire import DEVICE_ID_MAX
from pulse_wire.types import NO_SPACE

When = Literal["above", "below", "silent"]
EVERY_DEVICE = "*"

RuleName = Annotated[
    str,
    # `(?!\n)`: Python's `$` also matches before a final newline, JSON Schema's does not
    msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$(?!\n)"),
    expecting("a name of 1 to 100 printable characters"),
]
ChannelName = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=64, pattern=NO_SPACE),
    expecting("a channel name without spaces"),
    # how an error names this half of a channels entry
    msgspec.Meta(title="channel name"),
]
DeviceOrAll = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=DEVICE_ID_MAX, pattern=NO_SPACE),
    expecting('a device id, or "*" for every device'),
]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=366 * 86_400)]
RepeatSeconds = Annotated[float, msgspec.Meta(gt=0, le=366 * 86_400)]


class Rule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One alert rule, as the config file and the database hold it."""

    name: Annotated[RuleName, setting("Name", "Names the rule in alerts and notifications.")]
    device: Annotated[
        DeviceOrAll, setting("Device", 'The device id the rule watches, or "*" for every device.')
    ] = EVERY_DEVICE
    when: Annotated[
        When,
        setting(
            "When",
            "above or below: a value beyond `threshold`; silent: no reading received.",
        ),
    ]
    threshold: Annotated[
        float | None,
        setting("Threshold", "The value that starts an alert; for above and below only."),
    ] = None
    clear: Annotated[
        float | None,
        setting("Clear at", "The value that resolves a firing alert; defaults to `threshold`."),
    ] = None
    for_s: Annotated[
        Seconds,
        setting("For (s)", "How long the condition must hold before the alert fires."),
    ] = 0.0
    channels: Annotated[
        list[ChannelName], setting("Channels", "The channels notified when the alert changes.")
    ] = msgspec.field(default_factory=list)
    repeat_s: Annotated[
        RepeatSeconds | None,
        setting("Repeat (s)", "Notify again this often while firing; none: no repeat."),
    ] = None

    @property
    def clear_at(self) -> float:
        """The value at which a firing alert resolves (hysteresis); `threshold` by default."""
        if self.clear is not None:
            return self.clear
        return self.threshold if self.threshold is not None else 0.0

    def watches(self, device_id: str) -> bool:
        """Whether this rule applies to `device_id`."""
        return self.device in (EVERY_DEVICE, device_id)

    def is_beyond(self, value: float) -> bool:
        """Whether `value` is past the threshold, the condition that starts an alert."""
        threshold = self.threshold if self.threshold is not None else 0.0
        return value > threshold if self.when == "above" else value < threshold

    def is_cleared(self, value: float) -> bool:
        """Whether `value` is back on the clear side, the condition that resolves an alert."""
        return value <= self.clear_at if self.when == "above" else value >= self.clear_at


class Channel(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A named set of Apprise URLs that notifications go to."""

    name: ChannelName
    urls: list[str]


def rule_problems(rule: Rule, channels: set[str]) -> list[Problem]:
    """What is wrong across a rule's fields, keys relative to the rule; [] if it is usable."""
    found: list[Problem] = []
    for key in ("threshold", "clear"):
        number = getattr(rule, key)
        if number is not None and not math.isfinite(number):
            found.append(Problem(key, f"expected a finite number, got {number}"))
    if found:
        return found
    if rule.when == "silent":
        for key in ("threshold", "clear"):
            if getattr(rule, key) is not None:
                found.append(Problem(key, 'not allowed when `when` is "silent"'))
    elif rule.threshold is None:
        found.append(Problem("threshold", f'required when `when` is "{rule.when}"'))
    elif rule.clear is not None:
        if rule.when == "above" and rule.clear > rule.threshold:
            found.append(Problem("clear", f"must be <= threshold {rule.threshold:g} for above"))
        if rule.when == "below" and rule.clear < rule.threshold:
            found.append(Problem("clear", f"must be >= threshold {rule.threshold:g} for below"))
    for i, name in enumerate(rule.channels):
        if name not in channels:
            known = ", ".join(sorted(channels)) or "none"
            found.append(Problem(f"channels[{i}]", f'unknown channel "{name}" (known: {known})'))
    return found
