"""The notifications service's Prometheus metrics (registry passed in). Labels are bounded:
channel, trigger, reason and queue; never a person or an address."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.notifications.domain.notices import CHANNELS, Trigger

SUPPRESS_REASONS = (
    "duplicate",
    "quiet_hours",
    "stale",
    "superseded",
    "no_contact",
    "no_channel",
    "channel_not_configured",
)
DEAD_REASONS = ("permanent", "attempts_exhausted")
TIMER_KINDS = ("meeting_reminder", "petition_deadline", "meeting_missing", "report_late")
LOOKUP_FAILURES = ("unauthorized", "unavailable")
LEASE_LOST_MARKS = ("retry", "dead", "suppressed", "release")


class NotificationsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "chibo_notifications_sent_total",
            "Notices delivered to the channel.",
            ["channel", "trigger"],
            registry=registry,
        )
        self.failed = Counter(
            "chibo_notifications_failed_total",
            "Delivery attempts that failed (temporary ones are retried with backoff).",
            ["channel", "trigger"],
            registry=registry,
        )
        self.retried = Counter(
            "chibo_notifications_retried_total",
            "Delivery attempts made again after a temporary failure.",
            ["channel", "trigger"],
            registry=registry,
        )
        self.dead = Counter(
            "chibo_notifications_dead_lettered_total",
            "Deliveries given up (a permanent failure, or temporary failures for"
            " RETRY_GIVE_UP_S): the DLQ state.",
            ["channel", "trigger", "reason"],
            registry=registry,
        )
        self.suppressed = Counter(
            "chibo_notifications_suppressed_total",
            "Notices not sent, or held back: duplicate (already recorded), quiet_hours"
            " (held until the quiet hours end), stale (a meeting already begun, or a"
            " deadline warning whose deadline has passed), superseded (a waiting meeting"
            " notice made wrong by the meeting's move or cancellation, or a deadline"
            " warning whose petition was resolved, escalated or given another deadline),"
            " no_contact (no address for that channel), no_channel (a row"
            " for a channel the dispatcher does not have), channel_not_configured (a"
            " preference naming a channel this deployment lacks).",
            ["channel", "trigger", "reason"],
            registry=registry,
        )
        self.unaddressed = Counter(
            "chibo_notifications_unaddressed_total",
            "Notices that reached nobody: no member, official or mailbox was found to tell"
            " (a unit no official is registered for, a cell with no members): nothing is"
            " recorded or sent for them.",
            ["trigger"],
            registry=registry,
        )
        self.pending = Gauge(
            "chibo_notifications_pending",
            "Deliveries recorded but not yet sent (pending or being sent).",
            registry=registry,
        )
        self.scheduled = Gauge(
            "chibo_notifications_scheduled_pending",
            "Timers (reminders, deadline warnings, monthly checks) waiting to fire.",
            registry=registry,
        )
        self.oldest = Gauge(
            "chibo_notifications_oldest_pending_seconds",
            "How long the oldest due item has waited: queue=deliveries (due and unsent) or"
            " timers (due and not fired); 0 when nothing is due.",
            ["queue"],
            registry=registry,
        )
        self.fire_lag = Gauge(
            "chibo_notifications_timer_fire_lag_seconds",
            "Lag of the last fired timer: fired at minus due at.",
            registry=registry,
        )
        self.lookup_failed = Counter(
            "chibo_notifications_contact_lookups_failed_total",
            "Contact look-ups in the meetings service that failed: unauthorized (HTTP"
            " 401/403: the token is refused) or unavailable (unreachable, other answers).",
            ["reason"],
            registry=registry,
        )
        self.lease_lost = Counter(
            "chibo_notifications_lease_lost_total",
            "Outcomes not recorded because the claim's lease had run out and the row was"
            " claimed (or sent) by another dispatcher since: mark = retry, dead, suppressed"
            " or release.",
            ["mark"],
            registry=registry,
        )
        self.timer_failures = Counter(
            "chibo_notifications_timer_failures_total",
            "Timers whose firing failed (rolled back alone, retried with backoff).",
            ["kind"],
            registry=registry,
        )
        self.timers_dead = Counter(
            "chibo_notifications_timers_dead_total",
            "Timers given up after TIMER_MAX_ATTEMPTS failed attempts (status dead).",
            ["kind"],
            registry=registry,
        )
        # Known label combinations exist at 0 from the start, so the first failure after a
        # restart is a rise that increase() sees (docs/operations.md, "Known gaps").
        for channel in CHANNELS:
            for trigger in Trigger:
                self.sent.labels(channel, trigger.value)
                self.failed.labels(channel, trigger.value)
                self.retried.labels(channel, trigger.value)
                for reason in SUPPRESS_REASONS:
                    self.suppressed.labels(channel, trigger.value, reason)
                for reason in DEAD_REASONS:
                    self.dead.labels(channel, trigger.value, reason)
        for trigger in Trigger:
            self.unaddressed.labels(trigger.value)
        for queue in ("deliveries", "timers"):
            self.oldest.labels(queue)
        for reason in LOOKUP_FAILURES:
            self.lookup_failed.labels(reason)
        for mark in LEASE_LOST_MARKS:
            self.lease_lost.labels(mark)
        for kind in TIMER_KINDS:
            self.timer_failures.labels(kind)
            self.timers_dead.labels(kind)
