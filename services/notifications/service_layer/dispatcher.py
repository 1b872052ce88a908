"""Sends pending deliveries and records the outcome.

The SMTP boundary is at-least-once: if the process dies after the server accepted a
message but before the row is marked sent, that one message is sent again on restart.
Each delivery is sent and marked in its own step, so the window is one message.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from services.notifications.adapters import delivery_log
from services.notifications.adapters.email import SmtpSender
from services.notifications.adapters.metrics import NotificationsMetrics
from shared.logs import get_logger
from shared.tasks import cancel

log = get_logger(__name__)


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        email: SmtpSender,
        metrics: NotificationsMetrics,
        work_available: asyncio.Event,
        *,
        max_attempts: int = 5,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._email = email
        self._metrics = metrics
        self._work_available = work_available
        self._max_attempts = max_attempts
        self._poll_interval_s = poll_interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            try:
                while await self.dispatch_once():
                    pass
                self._metrics.pending.set(await delivery_log.pending_count(self._pool))
            except Exception:
                log.exception("dispatcher.round_failed")
            # Woken at once by new work; the timeout picks up retries and other replicas' rows.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work_available.wait(), self._poll_interval_s)
            self._work_available.clear()

    async def dispatch_once(self) -> int:
        """Send one pending delivery and commit its outcome; returns 0 when none is left.

        One delivery per transaction keeps the resend window after a crash to one message.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            pending = await delivery_log.take_pending(conn, 1)
            for delivery in pending:
                await self._deliver(conn, delivery)
        return len(pending)

    async def _deliver(self, conn: asyncpg.Connection, d: delivery_log.PendingDelivery) -> None:
        try:
            await self._email.send(
                d.recipient, d.subject, d.body_text, d.body_html, f"delivery-{d.delivery_id}"
            )
        except Exception as exc:
            give_up = d.attempts + 1 >= self._max_attempts
            retry_in_s = min(2.0 ** (d.attempts + 1), 300.0)  # exponential backoff, durable
            await delivery_log.mark_attempt_failed(
                conn, d.delivery_id, str(exc), give_up, retry_in_s
            )
            self._metrics.failed.labels(d.channel, d.trigger).inc()
            log.warning(
                "dispatcher.send_failed",
                delivery_id=d.delivery_id,
                attempt=d.attempts + 1,
                gave_up=give_up,
                error=str(exc),
            )
            return
        await delivery_log.mark_sent(conn, d.delivery_id)
        self._metrics.sent.labels(d.channel, d.trigger).inc()
        # The trigger event caused this notice; its log line carries the correlation id.
        log.info(
            "notice.sent",
            delivery_id=d.delivery_id,
            trigger=d.trigger,
            channel=d.channel,
            causation_id=str(d.trigger_event_id),
        )
