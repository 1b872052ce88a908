"""Sends due deliveries and records the outcome.

A dispatcher claims a batch (status ``sending``, with a lease), looks the recipients'
contacts up once for the batch, and sends concurrently within each channel's rate limit;
each message is marked ``sent`` as soon as its channel accepted it. The SMTP boundary is
at-least-once: a process that dies after the server accepted a message and before the
mark leaves that row ``sending``; when the lease ends it is sent again, with the same
Message-ID. A connection carries one message at a time, so the duplicate window is at
most one message per open connection (docs/notifications.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from services.notifications.adapters import delivery_log
from services.notifications.adapters.channels import (
    Channel,
    Outgoing,
    PermanentFailure,
    TemporaryFailure,
)
from services.notifications.adapters.contacts import Contact, ContactsClient
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.rate_limit import TokenBucket
from shared.clock import Clock
from shared.logs import get_logger
from shared.tasks import cancel

log = get_logger(__name__)


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: dict[str, Channel],
        contacts: ContactsClient,
        metrics: NotificationsMetrics,
        clock: Clock,
        work_available: asyncio.Event,
        *,
        rate_limits: dict[str, TokenBucket] | None = None,
        max_attempts: int = 5,
        quick_retries: int = 3,
        quick_retry_wait_s: float = 0.2,
        retry_base_s: float = 2.0,
        batch: int = 500,
        concurrency: int = 16,
        lease_s: float = 60.0,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._channels = channels
        self._contacts = contacts
        self._metrics = metrics
        self._clock = clock
        self._work_available = work_available
        self._limits = rate_limits or {}
        self._max_attempts = max_attempts
        self._quick_retries = quick_retries
        self._quick_retry_wait_s = quick_retry_wait_s
        self._retry_base_s = retry_base_s
        self._batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._lease = timedelta(seconds=lease_s)
        self._poll_interval_s = poll_interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        await cancel(self._task)
        for channel in self._channels.values():
            await channel.close()
        await self._contacts.close()

    async def _run(self) -> None:
        while True:
            try:
                while await self.dispatch_once():
                    pass
            except Exception:
                log.exception("dispatcher.round_failed")
            # Woken at once by new work; the timeout picks up retries, quiet-hours releases
            # and other replicas' expired leases.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work_available.wait(), self._poll_interval_s)
            self._work_available.clear()

    async def dispatch_once(self) -> int:
        """Claim and send one batch; returns how many were claimed (0: nothing due)."""
        claimed = await delivery_log.claim(self._pool, self._clock.now(), self._batch, self._lease)
        if not claimed:
            return 0
        try:
            contacts = await self._contacts.lookup(
                [d.recipient for d in claimed if d.channel != "log" and ":" not in d.recipient]
            )
        except TemporaryFailure as exc:
            # No addresses, no sending: the whole batch waits for its next attempt.
            for d in claimed:
                await self._failed(d, exc)
            return len(claimed)
        await asyncio.gather(*(self._deliver(d, contacts) for d in claimed))
        return len(claimed)

    async def _deliver(self, d: delivery_log.Delivery, contacts: dict[str, Contact]) -> None:
        contact = contacts.get(d.recipient)
        address = "-" if d.channel == "log" else (contact.address(d.channel) if contact else None)
        if d.recipient.startswith("mailbox:"):
            address = d.recipient.removeprefix("mailbox:")
        channel = self._channels.get(d.channel)
        if address is None or channel is None:
            reason = "no_contact" if channel is not None else "no_channel"
            await delivery_log.mark_final(self._pool, d.delivery_id, "suppressed", reason, None)
            self._metrics.suppressed.labels(d.channel, d.trigger, "no_contact").inc()
            return
        message = Outgoing(
            delivery_id=d.delivery_id,
            message_key=f"delivery-{d.delivery_id}",
            trigger=d.trigger,
            person_id=d.recipient,
            address=address,
            subject=d.subject,
            text=d.body_text,
            html=d.body_html,
        )

        def count_retry(_: RetryCallState) -> None:
            self._metrics.failed.labels(d.channel, d.trigger).inc()
            self._metrics.retried.labels(d.channel, d.trigger).inc()

        try:
            async with self._slots:
                # Quick retries in-process for blips; longer outages wait in the database.
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self._quick_retries),
                    wait=wait_exponential(multiplier=self._quick_retry_wait_s, max=5),
                    retry=retry_if_exception_type(TemporaryFailure),
                    before_sleep=count_retry,
                    reraise=True,
                ):
                    with attempt:
                        limit = self._limits.get(d.channel)
                        if limit is not None:
                            await limit.acquire()
                        await channel.send(message)
        except PermanentFailure as exc:
            self._metrics.failed.labels(d.channel, d.trigger).inc()
            await self._dead(d, "permanent", str(exc))
            return
        except TemporaryFailure as exc:
            await self._failed(d, exc)
            return
        await delivery_log.mark_sent(self._pool, [d.delivery_id], self._clock.now())
        self._metrics.sent.labels(d.channel, d.trigger).inc()
        # The trigger caused this notice; its log line carries the causation id (no address).
        log.info(
            "notice.sent",
            delivery_id=d.delivery_id,
            trigger=d.trigger,
            channel=d.channel,
            causation_id=str(d.trigger_event_id),
        )

    async def _failed(self, d: delivery_log.Delivery, exc: Exception) -> None:
        self._metrics.failed.labels(d.channel, d.trigger).inc()
        if d.attempts >= self._max_attempts:
            await self._dead(d, "attempts_exhausted", str(exc))
            return
        self._metrics.retried.labels(d.channel, d.trigger).inc()
        retry_in = min(self._retry_base_s * 2 ** (d.attempts - 1), 300.0)  # durable backoff
        at = self._clock.now() + timedelta(seconds=retry_in)
        await delivery_log.mark_retry(self._pool, d.delivery_id, str(exc), at)
        log.warning(
            "dispatcher.send_failed",
            delivery_id=d.delivery_id,
            channel=d.channel,
            attempt=d.attempts,
            retry_in_s=retry_in,
            error=str(exc),
        )

    async def _dead(self, d: delivery_log.Delivery, reason: str, error: str) -> None:
        await delivery_log.mark_final(self._pool, d.delivery_id, "dead", reason, error)
        self._metrics.dead.labels(d.channel, d.trigger, reason).inc()
        log.warning(
            "dispatcher.dead_lettered",
            delivery_id=d.delivery_id,
            channel=d.channel,
            reason=reason,
            error=error,
        )
