"""Records a notice as deliveries, one per (person, channel), in the caller's transaction:
the person's channels, quiet hours, and the duplicate and stale counts; and withdraws the
waiting notices a meeting's or a petition's change has made wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

import asyncpg

from services.notifications.adapters import delivery_log, directory
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.domain.notices import (
    CHANNELS,
    SUPERSEDED_BY_CHANGE,
    Notice,
    Priority,
    QuietHours,
    Trigger,
    choose_channels,
    next_local,
    parse_leads,
    send_not_before,
)
from shared.logs import get_logger

log = get_logger(__name__)
MAILBOX_PREFIX = "mailbox:"  # a recipient that is an office mailbox, not a person


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
    # A cell's shared mailbox, also told of its meetings ({cell_id}, {ward_id}); "": none.
    cell_mailbox_pattern: str = ""
    # Unit levels that are wards (đảng bộ phường / xã): they owe the monthly report.
    report_levels: frozenset[str] = frozenset({"ward", "commune"})

    def cell_mailbox(self, cell_id: str, ward_id: str) -> str | None:
        """The cell's shared mailbox as a recipient, or None when the deployment has none."""
        if not self.cell_mailbox_pattern:
            return None
        return MAILBOX_PREFIX + self.cell_mailbox_pattern.format(cell_id=cell_id, ward_id=ward_id)


class Outbox:
    def __init__(
        self, renderer: TemplateRenderer, metrics: NotificationsMetrics, config: NotifyConfig
    ) -> None:
        self._renderer = renderer
        self._metrics = metrics
        self.config = config

    async def pairs(self, conn: asyncpg.Connection, people: list[str]) -> list[tuple[str, str]]:
        """(person, channel) for everyone, by their preferences; each person once."""
        return (await self._route(conn, people))[0]

    async def _route(
        self, conn: asyncpg.Connection, people: list[str]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(the pairs to record, the (person, channel) of a preference naming a channel this
        deployment does not have)."""
        unique = list(dict.fromkeys(people))
        chosen = await directory.channels_of(conn, unique, self.config.default_channels)
        pairs: list[tuple[str, str]] = []
        unavailable: list[tuple[str, str]] = []
        for person in unique:
            if person.startswith(MAILBOX_PREFIX):  # an office mailbox: e-mail only
                wanted: tuple[str, ...] = ("email",)
                fallback: tuple[str, ...] = ()
            else:
                wanted, fallback = chosen[person], self.config.default_channels
            usable, missing = choose_channels(wanted, self.config.enabled_channels, fallback)
            pairs += [(person, channel) for channel in usable]
            unavailable += [(person, channel) for channel in missing]
        return pairs, unavailable

    async def suppress_stale(self, conn: asyncpg.Connection, notice: Notice) -> None:
        for _, channel in await self.pairs(conn, list(notice.recipients)):
            self._metrics.suppressed.labels(channel, notice.trigger.value, "stale").inc()

    async def record(self, conn: asyncpg.Connection, notice: Notice, now: datetime) -> int:
        """Record the notice's deliveries; returns how many are new."""
        pairs, unavailable = await self._route(conn, list(notice.recipients))
        trigger = notice.trigger.value
        for person, channel in unavailable:
            # Counted per notice (it piles up until the preference or the deployment is
            # fixed); the person still hears on their other or the default channels.
            self._metrics.suppressed.labels(channel, trigger, "channel_not_configured").inc()
            log.warning(
                "notice.channel_not_configured", person_id=person, channel=channel, trigger=trigger
            )
        if not pairs:
            if not notice.recipients:
                # An escalation nobody hears of is a petition that waits unseen: count it.
                self._metrics.unaddressed.labels(trigger).inc()
                log.warning("notice.unaddressed", trigger=trigger, ref=notice.ref)
            return 0
        message = self._renderer.render(notice.trigger.value, notice.context)
        not_before = send_not_before(notice.priority, now, self.config.quiet_hours)
        status = "pending"
        if notice.priority is Priority.LOW and self.config.digest_at is not None:
            # Held for the day's digest: folded into one message per person and channel.
            status, not_before = "digest", next_local(now, self.config.digest_at)
        existing = await delivery_log.record(conn, notice, message, pairs, not_before, status)
        for _, channel in existing:
            self._metrics.suppressed.labels(channel, trigger, "duplicate").inc()
        if not_before > now and status == "pending":
            held = set(pairs) - set(existing)
            for _, channel in held:
                self._metrics.suppressed.labels(channel, trigger, "quiet_hours").inc()
        return len(pairs) - len(existing)

    async def withdraw_superseded(
        self,
        conn: asyncpg.Connection,
        ref: str,
        triggers: tuple[Trigger, ...] = SUPERSEDED_BY_CHANGE,
        reason: str = "superseded",
    ) -> int:
        """The meeting was moved or called off, or the petition resolved, escalated or
        reopened: its notices of ``triggers`` still waiting (held by quiet hours, or for a
        retry) would tell the old time, holder or deadline after the change. They are
        settled as ``suppressed`` with ``reason``, kept in the log and counted."""
        withdrawn = await delivery_log.withdraw_waiting(
            conn, ref, tuple(t.value for t in triggers), reason
        )
        for channel, trigger in withdrawn:
            self._metrics.suppressed.labels(channel, trigger, reason).inc()
        if withdrawn:
            log.info("notices.withdrawn", ref=ref, reason=reason, count=len(withdrawn))
        return len(withdrawn)

    async def record_for(
        self, conn: asyncpg.Connection, notice: Notice, pairs: list[tuple[str, str]], now: datetime
    ) -> int:
        """Record the notice for exactly these (person, channel) pairs (the digest)."""
        message = self._renderer.render(notice.trigger.value, notice.context)
        not_before = send_not_before(notice.priority, now, self.config.quiet_hours)
        existing = await delivery_log.record(conn, notice, message, pairs, not_before)
        return len(pairs) - len(existing)
