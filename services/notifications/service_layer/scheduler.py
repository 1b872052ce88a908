"""Fires due timers: reminders, deadline warnings and the monthly checks.

Every replica scans every ``interval_s``; due rows are claimed with ``for update skip
locked`` and each batch is fired in one transaction with the deliveries it makes, so a
timer fires exactly once and one that fell due while the service was down fires when it
is back. Each timer fires in a savepoint of its own: one that fails (a template, a stored
payload, a bug) is rolled back alone, retried with backoff, and after ``max_attempts`` set
aside as ``dead``; the others fire. A timer checks the current state before it speaks: a
meeting that was moved or called off, or a petition that was resolved or sent up, says
nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg

from services.notifications.adapters import delivery_log, directory, timers
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.domain.notices import (
    Backoff,
    Notice,
    Priority,
    Trigger,
    digest_trigger_id,
    is_stale,
    meeting_check_at,
    next_month,
    report_due_at,
    send_not_before,
    timer_trigger_id,
)
from services.notifications.service_layer.notifier import (
    DEADLINE,
    MEETING_MISSING,
    REMINDER,
    REPORT_LATE,
    _cell_holder,
    _petition_facts,
    meeting_audience,
    ward_and_above,
)
from services.notifications.service_layer.outbox import Outbox
from shared.clock import LOCAL_TZ, Clock
from shared.contract.events import MeetingScheduled
from shared.logs import get_logger
from shared.tasks import cancel

log = get_logger(__name__)


class TimerScheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        clock: Clock,
        metrics: NotificationsMetrics,
        after_commit: Callable[[], None],
        *,
        interval_s: float = 0.25,
        batch: int = 500,
        gauges_every_s: float = 2.0,
        max_attempts: int = 10,
        retry_base_s: float = 2.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._clock = clock
        self._metrics = metrics
        self._after_commit = after_commit
        self._interval_s = interval_s
        self._batch = batch
        self._gauges_every_s = gauges_every_s
        self._gauges_at = 0.0
        self._max_attempts = max_attempts
        self._backoff = Backoff(retry_base_s, retry_max_s)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="timer-scheduler")

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            await self.scan()
            # The scan period; a cancellation here ends the loop (stop() waits for it).
            await asyncio.sleep(self._interval_s)

    async def scan(self) -> None:
        """One scan: fire due timers, fold due digests, and (every ``gauges_every_s``)
        refresh the gauges. Each part has its own error handling, so the gauges keep
        showing a backlog while firing fails."""
        try:
            while await self.fire_due() >= self._batch:
                pass
        except Exception:
            log.exception("scheduler.round_failed")
        try:
            if self._outbox.config.digest_at is not None:
                await self.fold_digests()
        except Exception:
            log.exception("scheduler.digest_failed")
        if time.monotonic() >= self._gauges_at:  # the gauges, not every scan
            self._gauges_at = time.monotonic() + self._gauges_every_s
            try:
                if self._outbox.config.digest_at is None:
                    await self.release_digests()
                await self._refresh_gauges()
            except Exception:
                log.exception("scheduler.gauges_failed")

    async def _refresh_gauges(self) -> None:
        now = self._clock.now()
        n, oldest = await timers.pending_stats(self._pool, now)
        self._metrics.scheduled.set(n)
        self._metrics.oldest.labels("timers").set(oldest)
        pending, age = await delivery_log.backlog(self._pool, now)
        self._metrics.pending.set(pending)
        self._metrics.oldest.labels("deliveries").set(age)

    async def release_digests(self) -> int:
        """DIGEST_AT turned off: the low notices that were waiting for a digest are sent
        one by one, like normal ones (quiet hours still hold them)."""
        now = self._clock.now()
        not_before = send_not_before(Priority.LOW, now, self._outbox.config.quiet_hours)
        released = await delivery_log.release_digests(self._pool, not_before)
        if released:
            self._after_commit()
            log.info("digests.released", notices=released)
        return released

    async def fire_due(self) -> int:
        """Fire the due timers (up to ``batch``); returns how many were taken."""
        now = self._clock.now()
        fired: list[timers.Timer] = []
        failed: list[tuple[timers.Timer, bool]] = []  # (timer, dead)
        async with self._pool.acquire() as conn, conn.transaction():
            due = await timers.take_due(conn, now, self._batch)
            for timer in due:
                try:
                    async with conn.transaction():  # a savepoint: a failure is this timer's
                        await self._fire(conn, timer, now)
                except Exception as exc:
                    failed.append((timer, await self._failed(conn, timer, exc, now)))
                else:
                    fired.append(timer)
            if fired:
                await timers.mark_fired(conn, [t.timer_id for t in fired], now)
        for timer, dead in failed:
            self._metrics.timer_failures.labels(timer.kind).inc()
            if dead:
                self._metrics.timers_dead.labels(timer.kind).inc()
        if fired:
            self._after_commit()
            self._metrics.fire_lag.set(max((now - t.due_at).total_seconds() for t in fired))
            log.info("timers.fired", count=len(fired))
        return len(due)

    async def _failed(
        self, conn: asyncpg.Connection, timer: timers.Timer, exc: Exception, now: datetime
    ) -> bool:
        """Record a failed attempt; returns True when the timer is given up (dead)."""
        attempts = timer.attempts + 1
        error = f"{type(exc).__name__}: {exc}"
        if attempts >= self._max_attempts:
            await timers.mark_failed(conn, timer.timer_id, error, None)
            log.error(
                "scheduler.timer_dead",
                timer_id=timer.timer_id,
                kind=timer.kind,
                ref_id=timer.ref_id,
                attempts=attempts,
                error=error,
            )
            return True
        retry_in = self._backoff.after(attempts)
        await timers.mark_failed(conn, timer.timer_id, error, now + timedelta(seconds=retry_in))
        log.warning(
            "scheduler.timer_failed",
            timer_id=timer.timer_id,
            kind=timer.kind,
            ref_id=timer.ref_id,
            attempt=attempts,
            retry_in_s=retry_in,
            error=error,
            exc_info=exc,
        )
        return False

    async def fold_digests(self) -> int:
        """Fold the low notices whose digest time has come into one delivery per person
        and channel, in one transaction (so each is folded once)."""
        now = self._clock.now()
        async with self._pool.acquire() as conn, conn.transaction():
            items = await delivery_log.take_digest_items(conn, now)
            groups: dict[tuple[str, str, datetime], list[asyncpg.Record]] = {}
            for item in items:
                key = (item["recipient"], item["channel"], item["next_attempt_at"])
                groups.setdefault(key, []).append(item)
            for (recipient, channel, at), rows in groups.items():
                notice = Notice(
                    digest_trigger_id(recipient, channel, at),
                    Trigger.DIGEST,
                    (recipient,),
                    {
                        "day": at,
                        "items": [{"subject": r["subject"], "text": r["body_text"]} for r in rows],
                    },
                    f"digest:{at.astimezone(LOCAL_TZ):%Y-%m-%d}",
                )
                await self._outbox.record_for(conn, notice, [(recipient, channel)], now)
                await delivery_log.mark_digested(
                    conn, [r["delivery_id"] for r in rows], str(notice.trigger_id)
                )
        if groups:
            self._after_commit()
            log.info("digests.folded", digests=len(groups), notices=len(items))
        return len(groups)

    async def _fire(self, conn: asyncpg.Connection, t: timers.Timer, now: datetime) -> None:
        trigger_id = timer_trigger_id(t.kind, t.ref_id, t.due_at)
        if t.kind == REMINDER:
            row = await directory.meeting(conn, t.ref_id)
            if row is None or row["status"] != "scheduled":
                return
            if row["scheduled_start"] != datetime.fromisoformat(t.payload["scheduled_start"]):
                return  # moved since: the new time has its own reminder
            meeting = MeetingScheduled.model_validate_json(row["payload"])
            mailbox = self._outbox.config.cell_mailbox(row["cell_id"], row["ward_id"])
            notice = Notice(
                trigger_id,
                Trigger.MEETING_REMINDER,
                tuple(await meeting_audience(conn, row["cell_id"], mailbox)),
                {
                    "meeting": meeting,
                    "lead_hours": t.payload["lead_s"] / 3600,
                    "names": await directory.place_names(
                        conn, (row["cell_id"],), (row["ward_id"],)
                    ),
                },
                t.ref_id,
                about_at=row["scheduled_start"],
            )
            if is_stale(row["scheduled_start"], now):
                await self._outbox.suppress_stale(conn, notice)
                return
            await self._outbox.record(conn, notice, now)
        elif t.kind == DEADLINE:
            row = await directory.petition(conn, t.ref_id)
            if row is None or row["status"] != "open":
                return
            if row["deadline_at"] != datetime.fromisoformat(t.payload["deadline_at"]):
                return
            if row["deadline_at"] <= now:
                return  # the deadline itself has passed: escalation speaks now
            recipients = await directory.holder_officials(conn, row["level"], row["holder_id"])
            notice = Notice(
                trigger_id,
                Trigger.PETITION_DEADLINE,
                tuple(recipients),
                {
                    "petition": _petition_facts(row),
                    # Said "as of" now: a retry or a resend goes out later than it was written.
                    "remaining": row["deadline_at"] - now,
                    "as_of": now,
                    "names": await directory.place_names(
                        conn,
                        (row["cell_id"], _cell_holder(row["level"], row["holder_id"])),
                        (row["holder_id"],),
                    ),
                },
                t.ref_id,
                about_at=row["deadline_at"],  # checked again when it is sent
            )
            await self._outbox.record(conn, notice, now)
        elif t.kind == MEETING_MISSING:
            cell_id, ward_id, month = t.payload["cell_id"], t.payload["ward_id"], t.payload["month"]
            if not await directory.regular_held(conn, cell_id, month):
                notice = Notice(
                    trigger_id,
                    Trigger.MEETING_MISSING,
                    tuple(await directory.unit_officials(conn, ward_id)),
                    {
                        "cell_id": cell_id,
                        "ward_id": ward_id,
                        "month": month,
                        "checked_at": now,
                        "names": await directory.place_names(conn, (cell_id,), (ward_id,)),
                    },
                    cell_id,
                )
                await self._outbox.record(conn, notice, now)
            following = next_month(month)
            await timers.set_timer(
                conn,
                MEETING_MISSING,
                cell_id,
                meeting_check_at(following, int(t.payload["due_day"])),
                {**t.payload, "month": following},
            )
        elif t.kind == REPORT_LATE:
            ward_id, month = t.payload["ward_id"], t.payload["month"]
            if not await directory.report_submitted(conn, ward_id, month):
                notice = Notice(
                    trigger_id,
                    Trigger.REPORT_LATE,
                    tuple(await ward_and_above(conn, ward_id)),
                    {
                        "ward_id": ward_id,
                        "month": month,
                        "due_at": t.due_at,
                        "names": await directory.place_names(conn, (), (ward_id,)),
                    },
                    ward_id,
                )
                await self._outbox.record(conn, notice, now)
            following = next_month(month)
            await timers.set_timer(
                conn,
                REPORT_LATE,
                ward_id,
                report_due_at(following),
                {"ward_id": ward_id, "month": following},
            )
