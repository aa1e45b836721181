"""The alert engine: one evaluation step, delivery of the outbox, and what a UI asks of it."""

from __future__ import annotations

import datetime as dt
import logging

from collector.alerts.evaluation import Alert, Outcome, State, evaluate
from collector.alerts.notify import Notifier
from collector.alerts.rules import Channel
from collector.alerts.store import AlertStore, HistoryEntry, Queued
from collector.store import Clock, utc_now

logger = logging.getLogger(__name__)

# a batch's receipt time is taken before its commit: readings are read this far behind the
# clock, so that one committed just after an evaluation still falls in the next one's window
READ_LAG_S = 2.0


class AlertEngine:
    """Evaluates the rules over new readings and receipts, and delivers the notices."""

    def __init__(
        self,
        store: AlertStore,
        notifier: Notifier,
        clock: Clock = utc_now,
        read_lag_s: float = READ_LAG_S,
    ):
        self.store = store
        self._notifier = notifier
        self._clock = clock
        self._lag = dt.timedelta(seconds=read_lag_s)
        # each device's newest receipt: read in full once, then kept up from each window
        self._last_receipts: dict[str, dt.datetime] | None = None

    async def step(self) -> Outcome:
        """One evaluation, then one delivery attempt of every undelivered notice."""
        outcome = await self.evaluate()
        await self.deliver()
        return outcome

    async def evaluate(self) -> Outcome:
        """Evaluate every rule over what was received since the last evaluation; store it."""
        now = self._clock()
        upto = now - self._lag
        # the first evaluation ever starts from now: the history before it is not replayed
        after = await self.store.cursor() or upto
        rules = await self.store.rules()
        if rules:
            if self._last_receipts is None:
                self._last_receipts = await self.store.last_receipts()
            samples = await self.store.samples(after, upto) if upto > after else []
            receipts = self._last_receipts
            for sample in samples:
                seen = receipts.get(sample.device_id)
                if seen is None or sample.received_at > seen:
                    receipts[sample.device_id] = sample.received_at
        else:
            # no rule reads them: the window's readings are not read back (a catch-up drain
            # would read every reading twice), and the receipts are read in full again once
            # a rule exists
            self._last_receipts = None
            samples, receipts = [], {}
        alerts = {a.key: a for a in await self.store.alerts()}
        outcome = evaluate(rules, alerts, samples, receipts, now)
        await self.store.apply(outcome, max(after, upto))
        return outcome

    async def deliver(self) -> int:
        """Send the outbox, one message per channel; undelivered notices stay for the next try."""
        queued = await self.store.outbox()
        if not queued:
            return 0
        channels = {c.name: c for c in await self.store.channels()}
        by_channel: dict[str, list[Queued]] = {}
        for item in queued:
            by_channel.setdefault(item.channel, []).append(item)
        done: list[int] = []
        sent = 0
        for name, items in by_channel.items():
            channel = channels.get(name)
            if channel is None:
                logger.warning("dropped %d notices for the deleted channel %s", len(items), name)
            elif await self._notifier.deliver(channel, [i.notice for i in items]):
                sent += 1
            else:
                continue
            done += [i.id for i in items]
        await self.store.delivered(done)
        return sent

    def now(self) -> dt.datetime:
        """The engine's clock: the time an acknowledgement or a silence is taken at."""
        return self._clock()

    async def alerts(self, state: State | None = None) -> list[Alert]:
        """Every current alert, or those in `state`."""
        return await self.store.alerts(state)

    async def alert(self, rule: str, device_id: str) -> Alert | None:
        """The current alert of `rule` on `device_id`, or None."""
        return await self.store.alert(rule, device_id)

    async def acknowledge(self, rule: str, device_id: str) -> bool:
        """Acknowledge an alert: no more repeats of it; False if there is no such alert."""
        return await self.store.acknowledge(rule, device_id, self._clock())

    async def silence(self, rule: str, device_id: str, until: dt.datetime | None) -> bool:
        """Hold back an alert's notifications until `until` (None: lift the silence)."""
        return await self.store.silence(rule, device_id, until, self._clock())

    async def silence_for(self, rule: str, device_id: str, seconds: float) -> bool:
        """Hold back an alert's notifications for `seconds` from now (0: lift the silence)."""
        until = self._clock() + dt.timedelta(seconds=seconds) if seconds > 0 else None
        return await self.silence(rule, device_id, until)

    async def history(
        self, rule: str | None = None, device_id: str | None = None, limit: int = 100
    ) -> list[HistoryEntry]:
        """The newest history lines, of one rule and/or device if given."""
        return await self.store.history(rule, device_id, limit)

    async def send_test(self, channel: Channel) -> str | None:
        """Send a test notification to `channel`: None if delivered, else why not."""
        return await self._notifier.send_test(channel)
