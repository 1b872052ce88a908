"""Records a notice as deliveries, one per (person, channel), in the caller's transaction:
the person's channels, quiet hours, and the duplicate and stale counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

import asyncpg

from services.notifications.adapters import delivery_log, directory
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.domain.notices import (
    CHANNELS,
    Notice,
    Priority,
    QuietHours,
    next_local,
    parse_leads,
    send_not_before,
)


@dataclass(frozen=True)
class NotifyConfig:
    """The rules a deployment sets (NotificationsSettings, see docs/notifications.md)."""

    default_channels: tuple[str, ...] = ("email",)
    enabled_channels: tuple[str, ...] = CHANNELS
    quiet_hours: QuietHours | None = None
    reminder_leads: list[timedelta] = field(default_factory=lambda: parse_leads("24h"))
    deadline_leads: list[timedelta] = field(default_factory=lambda: parse_leads("48h,4h"))
    attendance_threshold: float = 0.9
    meeting_missing_day: int = 10
    digest_at: time | None = None  # local time of the daily digest of low notices; None: off


class Outbox:
    def __init__(
        self, renderer: TemplateRenderer, metrics: NotificationsMetrics, config: NotifyConfig
    ) -> None:
        self._renderer = renderer
        self._metrics = metrics
        self.config = config

    async def pairs(self, conn: asyncpg.Connection, people: list[str]) -> list[tuple[str, str]]:
        """(person, channel) for everyone, by their preferences; each person once."""
        unique = list(dict.fromkeys(people))
        chosen = await directory.channels_of(conn, unique, self.config.default_channels)
        for person in unique:
            if person.startswith("mailbox:"):  # an office mailbox: e-mail only
                chosen[person] = ("email",)
        return [
            (person, channel)
            for person in unique
            for channel in chosen[person]
            if channel in self.config.enabled_channels
        ]

    async def suppress_stale(self, conn: asyncpg.Connection, notice: Notice) -> None:
        for _, channel in await self.pairs(conn, list(notice.recipients)):
            self._metrics.suppressed.labels(channel, notice.trigger.value, "stale").inc()

    async def record(self, conn: asyncpg.Connection, notice: Notice, now: datetime) -> int:
        """Record the notice's deliveries; returns how many are new."""
        pairs = await self.pairs(conn, list(notice.recipients))
        if not pairs:
            return 0
        message = self._renderer.render(notice.trigger.value, notice.context)
        not_before = send_not_before(notice.priority, now, self.config.quiet_hours)
        status = "pending"
        if notice.priority is Priority.LOW and self.config.digest_at is not None:
            # Held for the day's digest: folded into one message per person and channel.
            status, not_before = "digest", next_local(now, self.config.digest_at)
        existing = await delivery_log.record(conn, notice, message, pairs, not_before, status)
        trigger = notice.trigger.value
        for _, channel in existing:
            self._metrics.suppressed.labels(channel, trigger, "duplicate").inc()
        if not_before > now and status == "pending":
            held = set(pairs) - set(existing)
            for _, channel in held:
                self._metrics.suppressed.labels(channel, trigger, "quiet_hours").inc()
        return len(pairs) - len(existing)

    async def record_for(
        self, conn: asyncpg.Connection, notice: Notice, pairs: list[tuple[str, str]], now: datetime
    ) -> int:
        """Record the notice for exactly these (person, channel) pairs (the digest)."""
        message = self._renderer.render(notice.trigger.value, notice.context)
        not_before = send_not_before(notice.priority, now, self.config.quiet_hours)
        existing = await delivery_log.record(conn, notice, message, pairs, not_before)
        return len(pairs) - len(existing)
