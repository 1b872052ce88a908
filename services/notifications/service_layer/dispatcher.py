"""Sends due deliveries and records the outcome.

A dispatcher claims a batch (status ``sending``, with a lease), looks the recipients'
contacts up once for the batch (a failed look-up holds back only the rows that need an
address), and sends concurrently within each channel's rate limit;
the next batch is claimed and looked up while the current one's last messages go out. Each
message is marked ``sent`` as soon as its channel accepted it; marks that come due together
share one statement. The SMTP boundary is at-least-once: a process that dies after the
server accepted a message and before the mark leaves that row ``sending``; when the lease
ends it is sent again, with the same Message-ID. A connection commits its next message only
once the previous one is marked, so the duplicate window is at most one message per open
connection (docs/notifications.md).

A temporary failure is retried with a durable backoff (``retry_base_s`` doubling up to
``retry_max_s``) for ``give_up_after_s`` from the row's first attempt, so an outage of
the relay or of the contact look-up that lasts minutes or hours delays notices instead
of losing them; a permanent one is dead-lettered at once. Every outcome but ``sent`` is
recorded only while the row is still this claim's (delivery_log.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

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
    LeaseRunningOut,
    Outgoing,
    PermanentFailure,
    Recorded,
    TemporaryFailure,
    check_send_by,
)
from services.notifications.adapters.contacts import Contact, ContactsClient, LookupFailed
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.rate_limit import TokenBucket
from services.notifications.domain.notices import Backoff
from shared.clock import Clock
from shared.logs import get_logger
from shared.tasks import cancel

log = get_logger(__name__)


def needs_lookup(d: delivery_log.Delivery) -> bool:
    """Only a person's e-mail or phone is looked up: the log channel needs no address, and
    an office mailbox (``mailbox:…``) carries its own."""
    return d.channel != "log" and ":" not in d.recipient


@dataclass
class _Batch:
    claimed: list[delivery_log.Delivery]
    contacts: dict[str, Contact] | None  # None: the look-up failed
    error: TemporaryFailure | None = None
    # No send starts after this (half the lease): one that did could outlive the lease,
    # and another dispatcher that claims the expired row would send it a second time.
    send_by: datetime | None = None


class SentMarks:
    """The ``sent`` marks, group-committed: marks that come due while one is being written
    go together in the next statement."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def mark(self, delivery_id: int) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((delivery_id, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="dispatcher.sent_marks")
        await done

    async def flush(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer

    async def _write(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await delivery_log.mark_sent(
                    self._pool, [delivery_id for delivery_id, _ in group], self._clock.now()
                )
            except BaseException as exc:
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
                if not isinstance(exc, Exception):
                    raise
            else:
                for _, done in group:
                    if not done.done():
                        done.set_result(None)


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
        give_up_after_s: float = 6 * 3600.0,
        quick_retries: int = 3,
        quick_retry_wait_s: float = 0.2,
        retry_base_s: float = 2.0,
        retry_max_s: float = 300.0,
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
        self._give_up_after = timedelta(seconds=give_up_after_s)
        self._quick_retries = quick_retries
        self._quick_retry_wait_s = quick_retry_wait_s
        self._backoff = Backoff(retry_base_s, retry_max_s)
        self._batch = batch
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._lease = timedelta(seconds=lease_s)
        self._poll_interval_s = poll_interval_s
        self._marks = SentMarks(pool, clock)
        self._task: asyncio.Task[None] | None = None
        self._ahead: asyncio.Task[_Batch] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        await cancel(self._task)
        await self._marks.flush()  # what was accepted is recorded, not resent after the lease
        await self._release_ahead()
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
        """Send one batch (claimed now, or ahead during the last one); returns how many
        were claimed (0: nothing due)."""
        ahead, self._ahead = self._ahead, None
        batch = await ahead if ahead is not None else await self._claim()
        claimed = batch.claimed
        if not claimed:
            return 0
        contacts = batch.contacts
        if contacts is None:
            # No addresses: the rows that need one wait for their next attempt; the log
            # channel and office mailboxes go out as usual.
            assert batch.error is not None
            waiting = [d for d in claimed if needs_lookup(d)]
            for d in waiting:
                await self._failed(d, batch.error)
            claimed, contacts = [d for d in claimed if not needs_lookup(d)], {}
            if not claimed:
                return len(batch.claimed)
        # Claim the next batch when this one's tail starts: its lease starts then, not
        # earlier, and the connections do not wait for the claim and the look-up.
        unstarted = [len(claimed)]
        low_water = min(max(self._batch // 5, self._concurrency), len(claimed) - 1)

        def started() -> None:
            unstarted[0] -= 1
            if unstarted[0] == low_water and len(batch.claimed) >= self._batch:
                self._ahead = asyncio.create_task(self._claim(), name="dispatcher.claim_ahead")

        await asyncio.gather(*(self._deliver(d, contacts, started, batch.send_by) for d in claimed))
        return len(batch.claimed)

    async def _claim(self) -> _Batch:
        while True:
            now = self._clock.now()
            claimed = await delivery_log.claim(self._pool, now, self._batch, self._lease)
            if not claimed:
                return _Batch([], {})
            current = await self._withdraw_outdated(claimed, now)
            if current or len(claimed) < self._batch:
                claimed = current
                break  # a full batch all withdrawn: claim again rather than wait a poll
        if not claimed:
            return _Batch([], {})
        send_by = now + self._lease / 2
        try:
            people = [d.recipient for d in claimed if needs_lookup(d)]
            contacts = await self._contacts.lookup(people)
        except LookupFailed as exc:
            self._metrics.lookup_failed.labels(exc.reason).inc()
            log.warning("dispatcher.contacts_failed", reason=exc.reason, error=str(exc))
            return _Batch(claimed, None, exc, send_by)
        except TemporaryFailure as exc:
            return _Batch(claimed, None, exc, send_by)
        return _Batch(claimed, contacts, None, send_by)

    async def _withdraw_outdated(
        self, claimed: list[delivery_log.Delivery], now: datetime
    ) -> list[delivery_log.Delivery]:
        """A meeting notice is checked against the meeting, and a deadline warning against
        the petition, once more before it is sent: one that waited (quiet hours, a retry, a
        resend) past the meeting's change or start, or past the petition's resolution,
        escalation or deadline, is settled as ``suppressed`` (``superseded`` or ``stale``)
        instead. Returns the rest."""
        reasons = await delivery_log.outdated_notices(
            self._pool, {d.delivery_id: d.trigger for d in claimed}, now
        )
        if not reasons:
            return claimed
        withdrawn = set(await delivery_log.withdraw_claimed(self._pool, reasons))
        for d in claimed:
            if d.delivery_id in withdrawn:
                self._metrics.suppressed.labels(d.channel, d.trigger, reasons[d.delivery_id]).inc()
        log.info("dispatcher.withdrawn", count=len(withdrawn))
        return [d for d in claimed if d.delivery_id not in reasons]

    async def _release_ahead(self) -> None:
        """A batch claimed ahead and never started goes back to ``pending`` (not sent)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        try:
            batch = await ahead
        except Exception:
            return
        if batch.claimed:
            released = await delivery_log.release(self._pool, batch.claimed)
            self._lost("release", len(batch.claimed) - released)

    async def _deliver(
        self,
        d: delivery_log.Delivery,
        contacts: dict[str, Contact],
        started: Callable[[], None] = lambda: None,
        send_by: datetime | None = None,
    ) -> None:
        contact = contacts.get(d.recipient)
        address = "-" if d.channel == "log" else (contact.address(d.channel) if contact else None)
        if d.recipient.startswith("mailbox:"):
            address = d.recipient.removeprefix("mailbox:")
        channel = self._channels.get(d.channel)
        if address is None or channel is None:
            started()
            reason = "no_contact" if channel is not None else "no_channel"
            if await delivery_log.mark_final(self._pool, d, "suppressed", reason, None):
                self._metrics.suppressed.labels(d.channel, d.trigger, reason).inc()
            else:
                self._lost("suppressed")
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
            send_by=send_by,
        )
        # Resolved once the outcome is recorded: the channel holds its connection's next
        # message back until then (the duplicate window).
        recorded: Recorded = asyncio.get_running_loop().create_future()
        try:
            try:
                async with self._slots:
                    started()
                    await self._send(d.channel, channel, message, recorded)
            except LeaseRunningOut:
                # Checked after every wait (a slot, the rate limit, a connection), so no
                # send starts once half the lease is gone; the row is given back.
                if not await delivery_log.release(self._pool, [d]):
                    self._lost("release")
                log.info("dispatcher.lease_running_out", delivery_id=d.delivery_id)
                return
            except PermanentFailure as exc:
                self._metrics.failed.labels(d.channel, d.trigger).inc()
                await self._dead(d, "permanent", str(exc))
                return
            except TemporaryFailure as exc:
                await self._failed(d, exc)
                return
            try:
                await self._marks.mark(d.delivery_id)
            except BaseException:
                recorded.set_result(False)
                raise
            recorded.set_result(True)
        finally:
            if not recorded.done():
                recorded.set_result(True)  # not accepted: nothing to hold back
        self._metrics.sent.labels(d.channel, d.trigger).inc()
        # The trigger caused this notice; its log line carries the causation id (no address).
        log.info(
            "notice.sent",
            delivery_id=d.delivery_id,
            trigger=d.trigger,
            channel=d.channel,
            causation_id=str(d.trigger_event_id),
        )

    async def _send(
        self, name: str, channel: Channel, message: Outgoing, recorded: Recorded
    ) -> None:
        """Quick retries in-process for blips; longer outages wait in the database."""
        limit = self._limits.get(name)

        def count_retry(_: RetryCallState) -> None:
            self._metrics.failed.labels(name, message.trigger).inc()
            self._metrics.retried.labels(name, message.trigger).inc()

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._quick_retries),
            wait=wait_exponential(multiplier=self._quick_retry_wait_s, max=5),
            retry=retry_if_exception_type(TemporaryFailure),
            before_sleep=count_retry,
            reraise=True,
        ):
            with attempt:
                check_send_by(message, self._clock.now())
                if limit is not None:
                    await limit.acquire()
                    check_send_by(message, self._clock.now())
                await channel.send(message, recorded)

    def _lost(self, mark: str, n: int = 1) -> None:
        """Outcomes not written: the lease ran out and another dispatcher has the row."""
        if n > 0:
            self._metrics.lease_lost.labels(mark).inc(n)
            log.warning("dispatcher.lease_lost", mark=mark, rows=n)

    def retry_in(self, attempts: int) -> float:
        """The durable backoff after the ``attempts``-th attempt failed."""
        return self._backoff.after(attempts)

    async def _failed(self, d: delivery_log.Delivery, exc: Exception) -> None:
        self._metrics.failed.labels(d.channel, d.trigger).inc()
        now = self._clock.now()
        if now - d.first_attempt_at >= self._give_up_after:
            await self._dead(d, "attempts_exhausted", str(exc))
            return
        retry_in = self.retry_in(d.attempts)
        if not await delivery_log.mark_retry(
            self._pool, d, str(exc), now + timedelta(seconds=retry_in)
        ):
            self._lost("retry")
            return
        self._metrics.retried.labels(d.channel, d.trigger).inc()
        log.warning(
            "dispatcher.send_failed",
            delivery_id=d.delivery_id,
            channel=d.channel,
            attempt=d.attempts,
            retry_in_s=retry_in,
            error=str(exc),
        )

    async def _dead(self, d: delivery_log.Delivery, reason: str, error: str) -> None:
        if not await delivery_log.mark_final(self._pool, d, "dead", reason, error):
            self._lost("dead")
            return
        self._metrics.dead.labels(d.channel, d.trigger, reason).inc()
        log.warning(
            "dispatcher.dead_lettered",
            delivery_id=d.delivery_id,
            channel=d.channel,
            reason=reason,
            error=error,
        )
