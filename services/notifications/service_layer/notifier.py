"""Turns each event into recorded deliveries, inside the consumer's transaction.

Sending happens after commit (service_layer/dispatcher.py), so a notice is recorded
exactly once however often the event is redelivered, and is never lost if the process
dies before sending.
"""

from __future__ import annotations

import asyncpg

from services.notifications.adapters import delivery_log
from services.notifications.adapters.directory import MailboxPatternDirectory
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.domain.notices import notices_for
from shared.contract import DomainEvent, EventEnvelope


class Notifier:
    def __init__(
        self,
        directory: MailboxPatternDirectory,
        renderer: TemplateRenderer,
        metrics: NotificationsMetrics,
    ) -> None:
        self._directory = directory
        self._renderer = renderer
        self._metrics = metrics

    async def __call__(
        self, conn: asyncpg.Connection, envelope: EventEnvelope, event: DomainEvent
    ) -> None:
        for notice in notices_for(envelope.event_id, event, self._directory.recipients(event)):
            message = self._renderer.render(notice.template, notice.context)
            if not await delivery_log.record(conn, notice, message):
                self._metrics.suppressed.labels(notice.channel, notice.trigger, "duplicate").inc()
