"""The alert state machine alone: an injected clock, readings in, states and notices out."""

from __future__ import annotations

import datetime as dt

from collector.alerts.evaluation import Alert, Key, Notice, Sample, evaluate
from collector.alerts.rules import Rule

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
HIGH = Rule(name="High", when="above", threshold=120, clear=110, for_s=30, channels=["ops"])
SILENT = Rule(name="Silent", when="silent", for_s=300, channels=["ops"])


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


class Machine:
    """The evaluation run like the worker runs it: state carried from one step to the next."""

    def __init__(self, *rules: Rule):
        self.rules = list(rules)
        self.alerts: dict[Key, Alert] = {}
        self.receipts: dict[str, dt.datetime] = {}
        self.notices: list[Notice] = []
        self.history: list[str] = []

    def step(self, now: float, *values: tuple[str, float, float]) -> list[Notice]:
        """Evaluate at `now` with readings (device, value, received at)."""
        samples = [Sample(d, v, at(t)) for d, v, t in values]
        for s in samples:
            self.receipts[s.device_id] = max(s.received_at, self.receipts.get(s.device_id, T0))
        out = evaluate(self.rules, self.alerts, samples, self.receipts, at(now))
        self.alerts = out.alerts
        self.notices += out.notices
        self.history += [f"{t.device_id}:{t.state}" for t in out.transitions]
        return out.notices

    def state(self, rule: str = "High", device: str = "d") -> str | None:
        alert = self.alerts.get((rule, device))
        return None if alert is None else alert.state

    def told(self) -> list[str]:
        return [f"{n.device_id}:{n.state}" for n in self.notices]


def test_a_value_must_hold_for_for_s_before_it_fires() -> None:
    m = Machine(HIGH)
    m.step(1, ("d", 130, 0))
    assert m.state() == "pending"
    m.step(29, ("d", 125, 20))
    assert (m.state(), m.told()) == ("pending", [])
    m.step(30)
    assert m.state() == "firing"
    assert m.told() == ["d:firing"]
    assert m.alerts[("High", "d")].value == 125


def test_a_pending_alert_whose_value_drops_back_is_dropped_without_a_notice() -> None:
    m = Machine(HIGH)
    m.step(1, ("d", 130, 0))
    m.step(10, ("d", 115, 9))
    assert m.state() is None
    m.step(100)
    assert m.told() == []
    assert m.history == ["d:pending", "d:cancelled"]


def test_hysteresis_a_value_hovering_between_clear_and_threshold_never_flaps() -> None:
    m = Machine(HIGH)
    m.step(0, ("d", 130, 0))
    m.step(30)
    assert m.told() == ["d:firing"]
    # hovering between clear (110) and threshold (120) for an hour: one state, no notices
    for t in range(35, 3600, 5):
        m.step(t, ("d", 112 + (t % 3) * 3, t - 1))
    assert (m.state(), m.told()) == ("firing", ["d:firing"])
    m.step(3601, ("d", 110, 3600))
    assert (m.state(), m.told()) == ("resolved", ["d:firing", "d:resolved"])
    # and hovering below the threshold after the resolve does not start a new one
    for t in range(3605, 4000, 5):
        m.step(t, ("d", 111 + (t % 2) * 8, t - 1))
    assert (m.state(), m.told()) == ("resolved", ["d:firing", "d:resolved"])


def test_a_spike_between_two_evaluations_is_not_missed() -> None:
    instant = Rule(name="High", when="above", threshold=120, channels=["ops"])
    m = Machine(instant)
    m.step(5, ("d", 70, 1), ("d", 150, 2), ("d", 70, 3))
    assert m.told() == ["d:firing", "d:resolved"]
    assert m.state() == "resolved"


def test_below_rules_mirror_above() -> None:
    low = Rule(name="Low", when="below", threshold=40, clear=50, for_s=0, channels=["ops"])
    m = Machine(low)
    m.step(1, ("d", 45, 0))
    assert m.state("Low") is None
    m.step(2, ("d", 39, 1))
    assert m.state("Low") == "firing"
    m.step(3, ("d", 45, 2))
    assert m.state("Low") == "firing"
    m.step(4, ("d", 50, 3))
    assert m.state("Low") == "resolved"
    assert m.told() == ["d:firing", "d:resolved"]


def test_silent_is_per_device_from_its_last_receipt() -> None:
    m = Machine(SILENT)
    m.step(0, ("a", 70, 0), ("b", 70, 0))
    m.step(200, ("b", 70, 200))
    m.step(300)
    assert (m.state("Silent", "a"), m.state("Silent", "b")) == ("firing", None)
    m.step(499)
    assert m.state("Silent", "b") is None
    m.step(500)
    assert m.state("Silent", "b") == "firing"
    assert m.told() == ["a:firing", "b:firing"]
    m.step(600, ("a", 70, 599))
    assert (m.state("Silent", "a"), m.state("Silent", "b")) == ("resolved", "firing")
    assert m.told()[-1] == "a:resolved"
    # a device that keeps sending is never silent
    m.step(800, ("a", 70, 700), ("a", 70, 799))
    assert m.state("Silent", "a") == "resolved"


def test_a_rule_for_one_device_ignores_the_others() -> None:
    one = Rule(name="High", device="d", when="above", threshold=120, channels=["ops"])
    m = Machine(one)
    m.step(1, ("other", 200, 0), ("d", 100, 0))
    assert m.alerts == {}


def test_repeat_s_notifies_again_while_firing() -> None:
    rule = Rule(name="Silent", when="silent", for_s=10, channels=["ops"], repeat_s=60)
    m = Machine(rule)
    m.step(0, ("d", 70, 0))
    m.step(10)
    m.step(69)
    m.step(70)
    m.step(129)
    m.step(130)
    assert [(n.state, n.repeat, n.at) for n in m.notices] == [
        ("firing", False, at(10)),
        ("firing", True, at(70)),
        ("firing", True, at(130)),
    ]


def test_an_alert_that_fires_is_not_repeated_in_the_same_evaluation() -> None:
    """The firing notice carries the reading's receipt time, which the evaluation reads a
    little behind its clock: a repeat_s shorter than that lag must not double the notice."""
    rule = Rule(name="Fast", when="above", threshold=120, for_s=0, channels=["ops"], repeat_s=1)
    m = Machine(rule)
    m.step(3, ("d", 130, 0))
    assert [(n.state, n.repeat) for n in m.notices] == [("firing", False)]
    m.step(4)
    assert [(n.state, n.repeat) for n in m.notices] == [("firing", False), ("firing", True)]


def test_without_repeat_s_there_is_no_repeat() -> None:
    m = Machine(SILENT)
    m.step(0, ("d", 70, 0))
    for t in range(300, 100_000, 1000):
        m.step(t)
    assert m.told() == ["d:firing"]


def test_acknowledged_stops_the_repeats_but_not_the_state_or_the_resolve() -> None:
    rule = Rule(name="Silent", when="silent", for_s=10, channels=["ops"], repeat_s=60)
    m = Machine(rule)
    m.step(0, ("d", 70, 0))
    m.step(10)
    m.alerts[("Silent", "d")].acknowledged = True
    for t in range(20, 1000, 10):
        m.step(t)
    assert (m.state("Silent"), m.told()) == ("firing", ["d:firing"])
    m.step(1001, ("d", 70, 1000))
    assert (m.state("Silent"), m.told()) == ("resolved", ["d:firing", "d:resolved"])
    assert m.alerts[("Silent", "d")].acknowledged is False


def test_silenced_holds_back_notices_but_not_state() -> None:
    m = Machine(HIGH)
    m.step(0, ("d", 130, 0))
    m.alerts[("High", "d")].silenced_until = at(1000)
    m.step(30)
    assert (m.state(), m.told()) == ("firing", [])
    m.step(40, ("d", 100, 39))
    # it resolved unheard: no "resolved" for a "firing" nobody was told of
    assert (m.state(), m.told()) == ("resolved", [])
    m.step(50, ("d", 130, 49))
    m.step(80)
    assert (m.state(), m.told()) == ("firing", [])
    # the silence ends while it still fires: now it is told
    m.step(1000)
    assert m.told() == ["d:firing"]


def test_notices_name_the_rule_channels_and_value() -> None:
    m = Machine(HIGH)
    m.step(0, ("d", 130, 0))
    (notice,) = m.step(30)
    assert notice.rule == "High"
    assert notice.channels == ("ops",)
    assert notice.value == 130
