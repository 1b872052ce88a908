"""The notifications service's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


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
            "Delivery attempts that failed (retried until the attempt limit).",
            ["channel", "trigger"],
            registry=registry,
        )
        self.suppressed = Counter(
            "chibo_notifications_suppressed_total",
            "Notices not sent again because the same one was recorded already.",
            ["channel", "trigger", "reason"],
            registry=registry,
        )
        self.pending = Gauge(
            "chibo_notifications_pending",
            "Deliveries recorded but not yet sent.",
            registry=registry,
        )
        for channel, trigger in (("email", "meeting_scheduled"),):  # visible from the start
            self.sent.labels(channel, trigger)
            self.failed.labels(channel, trigger)
            self.suppressed.labels(channel, trigger, "duplicate")
