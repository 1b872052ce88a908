"""Delivery through outages, on a database of its own with an injected clock (never
sleeping): the real dispatcher, the real meetings service's contact look-up, the real SMTP
sink, and the real timer scheduler.

- A look-up that fails for a minute (a refused token, then meetings unreachable) delays
  the notice; it is delivered when the look-up works again. Rows that need no look-up
  (the log channel, an office mailbox) go out during the outage.
- Temporary failures are retried, doubling up to the cap, until RETRY_GIVE_UP_S after the
  first attempt; a permanent SMTP refusal of the address is dead-lettered at once.
- A dispatcher whose lease ran out cannot revive a row another one has sent since, and
  no send starts after a wait for a connection that ran past ``send_by``.
- One failing timer is retried and set aside on its own; the other timers fire, and the
  gauges keep being refreshed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from ops.stack import Stack, free_port
from services.notifications.adapters.channels import (
    EmailChannel,
    LogChannel,
    Outgoing,
    Recorded,
    TemporaryFailure,
)
from services.notifications.adapters.contacts import ContactsClient
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.bootstrap import MIGRATIONS
from services.notifications.domain.notices import QuietHours
from services.notifications.service_layer.dispatcher import Dispatcher
from services.notifications.service_layer.outbox import NotifyConfig, Outbox
from services.notifications.service_layer.scheduler import TimerScheduler
from shared.auth import Role, TokenService
from shared.clock import LOCAL_TZ, FrozenClock
from shared.postgres import migrate
from tests.integration.helpers import UnitLadder, close_pool, mails_to

SECOND = timedelta(seconds=1)


@pytest.fixture()
async def pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own: with the clock moved, the live notifications service's rows
    would otherwise be claimed here (and this test's rows there)."""
    database = f"retry_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'create database "{database}"')
    await admin.close()
    p = await asyncpg.create_pool(
        stack.database_url.rsplit("/", 1)[0] + f"/{database}", min_size=1, max_size=4
    )
    try:
        await migrate(p, "notifications", MIGRATIONS)
        yield p
    finally:
        await close_pool(p)
        admin = await asyncpg.connect(stack.database_url)
        try:
            await admin.execute(f'drop database "{database}" with (force)')
        finally:
            await admin.close()


async def add_deliveries(
    pool: asyncpg.Pool, at: datetime, rows: list[tuple[str, str]], trigger: str = "meeting_reminder"
) -> list[int]:
    """Due deliveries (recipient, channel), as the outbox records them; their ids."""
    ids = []
    for recipient, channel in rows:
        ids.append(
            await pool.fetchval(
                """
                insert into notifications.deliveries
                    (trigger_event_id, trigger, recipient, channel, subject, body_text,
                     body_html, priority, next_attempt_at, trigger_ref)
                values (gen_random_uuid(), $4, $1, $2, 'Nhắc lịch sinh hoạt',
                        'Nội dung nhắc lịch', '<p>Nội dung nhắc lịch</p>', 'urgent', $3, 'm1')
                returning delivery_id
                """,
                recipient,
                channel,
                at,
                trigger,
            )
        )
    return ids


async def states(pool: asyncpg.Pool, ids: list[int]) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "select delivery_id, status, attempts, reason, last_error, next_attempt_at"
        " from notifications.deliveries where delivery_id = any($1) order by delivery_id",
        ids,
    )
    return [dict(r) for r in rows]


def value(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


# -- the contact look-up fails for a minute, then recovers ------------------------------


async def test_a_minute_long_look_up_outage_delays_the_notice_and_it_is_still_delivered(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # A person with an address in the real meetings service.
    ladder = UnitLadder(stack)
    await ladder.register()
    person = f"{ladder.ward}.dv1"
    address = f"{person}@thu.chibo.local"
    office = f"chi-bo.{ladder.ward}.to-01@chibo.local"
    await ladder.send(
        "SetContactDetails", {"person_id": person, "ward_id": ladder.ward, "email": address}
    )

    clock = FrozenClock(datetime.now(UTC) + timedelta(days=3650))
    t0 = clock.now()
    tokens = TokenService(SecretStr(stack.auth_secret))
    outage = {"token": True, "unreachable": False}

    def token() -> str:
        if outage["token"]:
            return "an-expired-token"  # what a run-out CONTACTS_TOKEN did: HTTP 401
        return tokens.issue("notifications", Role.SYSTEM_PUBLISHER, "system", None)

    contacts = ContactsClient(stack.service_url("meetings"), token)
    metrics = NotificationsMetrics(CollectorRegistry())
    email = EmailChannel(
        stack.settings.host, stack.settings.smtp_port, "Chibo <thong-bao@chibo.local>", clock=clock
    )
    dispatcher = Dispatcher(
        pool,
        {"email": email, "log": LogChannel()},
        contacts,
        metrics,
        clock,
        asyncio.Event(),
        lease_s=10,
    )
    [for_person, for_log, for_office] = await add_deliveries(
        pool, t0, [(person, "email"), (person, "log"), (f"mailbox:{office}", "email")]
    )

    # The first round, during the outage: only the row that needs an address waits.
    assert await dispatcher.dispatch_once() == 3
    first = {r["delivery_id"]: r for r in await states(pool, [for_person, for_log, for_office])}
    assert first[for_log]["status"] == "sent"
    assert first[for_office]["status"] == "sent"
    assert len(mails_to(stack.maildir, office)) == 1
    assert first[for_person]["status"] == "pending"
    assert first[for_person]["last_error"] == "contacts: HTTP 401"

    # A minute of outage: 30 s of refused tokens, then 30 s of meetings unreachable. The
    # clock moves a second per round (DISPATCH_POLL_S); the old code had this row dead
    # after 30 s (5 attempts).
    while clock.now() < t0 + 60 * SECOND:
        clock.advance(SECOND)
        if clock.now() >= t0 + 30 * SECOND and not outage["unreachable"]:
            outage.update(token=False, unreachable=True)
            contacts._client.base_url = f"http://127.0.0.1:{free_port()}"  # nobody listens
        await dispatcher.dispatch_once()
        [row] = await states(pool, [for_person])
        assert row["status"] == "pending", row
    assert row["last_error"] == "contacts: ConnectError"
    assert mails_to(stack.maildir, address) == []

    # Meetings answers again: the next attempt (its backoff is 32 s after the fifth
    # failure, at 30 s) delivers the notice to the sink, once.
    contacts._client.base_url = stack.service_url("meetings")
    while row["status"] != "sent":
        assert clock.now() < t0 + 120 * SECOND, row
        clock.advance(SECOND)
        await dispatcher.dispatch_once()
        [row] = await states(pool, [for_person])
    assert row["attempts"] == 6 and clock.now() == t0 + 62 * SECOND
    [mail] = mails_to(stack.maildir, address)
    assert str(mail["Subject"]) == "Nhắc lịch sinh hoạt"
    assert value(metrics.lookup_failed, "unauthorized") == 4  # at 0, 2, 6, 14 s
    assert value(metrics.lookup_failed, "unavailable") == 1  # at 30 s
    assert value(metrics.retried, "email", "meeting_reminder") == 5
    assert value(metrics.dead, "email", "meeting_reminder", "attempts_exhausted") == 0
    assert value(metrics.sent, "email", "meeting_reminder") == 2  # the person, the office
    await dispatcher.stop()


# -- the give-up horizon, the backoff cap, and a permanent failure -----------------------


async def test_temporary_failures_back_off_to_the_cap_until_the_give_up_horizon(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    clock = FrozenClock(datetime.now(UTC) + timedelta(days=3650))
    t0 = clock.now()
    # Meetings unreachable for good.
    contacts = ContactsClient(f"http://127.0.0.1:{free_port()}", token=lambda: "unused")
    metrics = NotificationsMetrics(CollectorRegistry())
    dispatcher = Dispatcher(
        pool,
        {"email": LogChannel()},
        contacts,
        metrics,
        clock,
        asyncio.Event(),
        give_up_after_s=3600,
    )
    [delivery] = await add_deliveries(pool, t0, [("p1", "email")])
    waits = []
    while True:
        [row] = await states(pool, [delivery])
        if row["status"] != "pending":
            break
        clock.set(max(clock.now(), row["next_attempt_at"]))  # straight to the next attempt
        before = clock.now()
        assert await dispatcher.dispatch_once() == 1
        [row] = await states(pool, [delivery])
        if row["status"] == "pending":
            waits.append((row["next_attempt_at"] - before).total_seconds())
    assert waits[:9] == [2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert set(waits[8:]) == {300}  # the cap
    assert (row["status"], row["reason"]) == ("dead", "attempts_exhausted")
    # Given up at the first attempt an hour or more after the first one, not before.
    assert t0 + timedelta(hours=1) <= clock.now() < t0 + timedelta(hours=1, seconds=301)
    assert value(metrics.dead, "email", "meeting_reminder", "attempts_exhausted") == 1
    await dispatcher.stop()


@dataclass
class RefusingRecipients:
    """An SMTP server that refuses every recipient for good (550), or answers 250."""

    refuse: bool = True
    received: int = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 OK"


async def test_a_permanent_refusal_of_the_address_is_still_dead_lettered_at_once(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    handler = RefusingRecipients()
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    try:
        clock = FrozenClock(datetime.now(UTC) + timedelta(days=3650))
        metrics = NotificationsMetrics(CollectorRegistry())
        dispatcher = Dispatcher(
            pool,
            {"email": EmailChannel("127.0.0.1", port, "thong-bao@chibo.local", clock=clock)},
            ContactsClient("http://127.0.0.1:9", token=lambda: "unused"),  # mailbox: no look-up
            metrics,
            clock,
            asyncio.Event(),
        )
        [delivery] = await add_deliveries(pool, clock.now(), [("mailbox:x@chibo.local", "email")])
        assert await dispatcher.dispatch_once() == 1
        [row] = await states(pool, [delivery])
        assert (row["status"], row["reason"], row["attempts"]) == ("dead", "permanent", 1)
        assert "550" in row["last_error"]
        assert value(metrics.dead, "email", "meeting_reminder", "permanent") == 1
        await dispatcher.stop()
    finally:
        server.stop()


# -- lost leases: no revival of a sent row, no send after a long wait --------------------


class HeldChannel:
    """A log-like channel whose first send waits until told, then fails temporarily."""

    name = "log"

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def send(self, message: Outgoing, recorded: Recorded | None = None) -> None:
        self.entered.set()
        await self.go.wait()
        raise TemporaryFailure("relay: timed out")

    async def close(self) -> None:
        return None


async def test_a_late_failure_cannot_revive_a_row_another_dispatcher_has_sent(
    pool: asyncpg.Pool,
) -> None:
    clock = FrozenClock(datetime.now(UTC) + timedelta(days=3650))
    unused = ContactsClient("http://127.0.0.1:9", token=lambda: "unused")
    held = HeldChannel()
    slow = Dispatcher(
        pool,
        {"log": held},
        unused,
        (slow_metrics := NotificationsMetrics(CollectorRegistry())),
        clock,
        asyncio.Event(),
        lease_s=10,
        quick_retries=1,
    )
    other = Dispatcher(
        pool,
        {"log": LogChannel()},
        ContactsClient("http://127.0.0.1:9", token=lambda: "unused"),
        NotificationsMetrics(CollectorRegistry()),
        clock,
        asyncio.Event(),
        lease_s=10,
    )
    [delivery] = await add_deliveries(pool, clock.now(), [("p1", "log")])
    sending = asyncio.create_task(slow.dispatch_once())
    await asyncio.wait_for(held.entered.wait(), 10)
    # The slow send outlives its lease; the other replica claims the row and sends it.
    clock.advance(11 * SECOND)
    assert await other.dispatch_once() == 1
    [row] = await states(pool, [delivery])
    assert (row["status"], row["attempts"]) == ("sent", 2)
    # Now the slow one's failure comes back: it must not put the sent row back to pending.
    held.go.set()
    assert await asyncio.wait_for(sending, 10) == 1
    [row] = await states(pool, [delivery])
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 2, None)
    assert value(slow_metrics.lease_lost, "retry") == 1
    assert value(slow_metrics.retried, "log", "meeting_reminder") == 0
    await slow.stop()
    await other.stop()


class ClockMovingSink:
    """An SMTP sink whose DATA takes 20 s of the test's clock (a slow relay)."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.content)
        self.clock.advance(20 * SECOND)
        return "250 OK"


async def test_no_send_starts_after_a_wait_for_a_connection_ran_past_send_by(
    pool: asyncpg.Pool,
) -> None:
    clock = FrozenClock(datetime.now(UTC) + timedelta(days=3650))
    handler = ClockMovingSink(clock)
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    try:
        # Two sends in flight, one connection: the second waits for it while the first
        # takes 20 s; by then more than half of the 30 s lease is gone.
        dispatcher = Dispatcher(
            pool,
            {"email": EmailChannel("127.0.0.1", port, "a@chibo.local", connections=1, clock=clock)},
            ContactsClient("http://127.0.0.1:9", token=lambda: "unused"),
            NotificationsMetrics(CollectorRegistry()),
            clock,
            asyncio.Event(),
            concurrency=2,
            lease_s=30,
        )
        ids = await add_deliveries(
            pool,
            clock.now(),
            [("mailbox:a@chibo.local", "email"), ("mailbox:b@chibo.local", "email")],
        )
        assert await dispatcher.dispatch_once() == 2
        assert len(handler.received) == 1
        rows = await states(pool, ids)
        assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 1), ("pending", 0)]
        assert await dispatcher.dispatch_once() == 1  # the next round sends it
        assert len(handler.received) == 2
        assert [r["status"] for r in await states(pool, ids)] == ["sent", "sent"]
        await dispatcher.stop()
    finally:
        server.stop()


async def test_a_row_for_a_channel_not_configured_here_is_counted_as_no_channel(
    pool: asyncpg.Pool,
) -> None:
    clock = FrozenClock(datetime.now(UTC) + timedelta(days=3650))
    metrics = NotificationsMetrics(CollectorRegistry())
    dispatcher = Dispatcher(
        pool,
        {"log": LogChannel()},
        ContactsClient("http://127.0.0.1:9", token=lambda: "unused"),
        metrics,
        clock,
        asyncio.Event(),
    )
    [delivery] = await add_deliveries(pool, clock.now(), [("mailbox:a@chibo.local", "email")])
    assert await dispatcher.dispatch_once() == 1
    [row] = await states(pool, [delivery])
    assert (row["status"], row["reason"]) == ("suppressed", "no_channel")
    assert value(metrics.suppressed, "email", "meeting_reminder", "no_channel") == 1
    assert value(metrics.suppressed, "email", "meeting_reminder", "no_contact") == 0
    await dispatcher.stop()


# -- timers: one failure is its own -------------------------------------------------------


def L(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=LOCAL_TZ)  # type: ignore[arg-type, misc]


async def test_a_failing_timer_is_retried_and_set_aside_alone_and_the_others_fire(
    pool: asyncpg.Pool,
) -> None:
    clock = FrozenClock(L(2027, 2, 2, 10, 0))
    metrics = NotificationsMetrics(CollectorRegistry())
    outbox = Outbox(TemplateRenderer(), metrics, NotifyConfig(quiet_hours=None))
    scheduler = TimerScheduler(pool, outbox, clock, metrics, lambda: None, max_attempts=3)
    # A ward with an official; a reminder whose stored meeting no longer validates (the
    # oldest timer), and the ward's two monthly checks, all due.
    await pool.execute("insert into notifications.units values ('w1', null, 'ward')")
    await pool.execute(
        "insert into notifications.unit_officials values ('w1', 'secretary', 'w1.bt')"
    )
    start = L(2027, 2, 3, 19, 30)
    await pool.execute(
        "insert into notifications.meetings (meeting_id, ward_id, cell_id, kind,"
        " scheduled_start, payload) values ('mt1', 'w1', 'w1.c1', 'regular', $1, '{}')",
        start,
    )
    timers = [
        ("meeting_reminder", "mt1", L(2027, 1, 1), {"scheduled_start": start.isoformat()}),
        (
            "meeting_missing",
            "w1.c1",
            L(2027, 1, 11),
            # Set before MEETING_MISSING_DAY was limited: the February re-arm used to raise.
            {"cell_id": "w1.c1", "ward_id": "w1", "month": "2027-01", "due_day": 30},
        ),
        ("report_late", "w1", L(2027, 1, 10), {"ward_id": "w1", "month": "2026-12"}),
    ]
    for kind, ref, due, payload in timers:
        await pool.execute(
            "insert into notifications.timers (kind, ref_id, due_at, payload)"
            " values ($1, $2, $3, $4::jsonb)",
            kind,
            ref,
            due,
            json.dumps(payload),
        )

    async def timer_rows() -> dict[tuple[str, str], dict[str, Any]]:
        rows = await pool.fetch(
            "select kind, ref_id, status, attempts, retry_at, last_error,"
            " payload->>'month' as month from notifications.timers order by timer_id"
        )
        return {(r["kind"], r["month"] or r["ref_id"]): dict(r) for r in rows}

    await scheduler.scan()
    rows = await timer_rows()
    bad = rows[("meeting_reminder", "mt1")]
    assert (bad["status"], bad["attempts"]) == ("pending", 1)
    assert bad["retry_at"] == clock.now() + 2 * SECOND
    assert bad["last_error"].startswith("ValidationError")
    assert rows[("meeting_missing", "2027-01")]["status"] == "fired"
    assert rows[("meeting_missing", "2027-02")]["status"] == "pending"  # re-armed
    assert rows[("report_late", "2026-12")]["status"] == "fired"
    notices = await pool.fetch(
        "select trigger, recipient from notifications.deliveries order by delivery_id"
    )
    assert [(r["trigger"], r["recipient"]) for r in notices] == [
        ("report_late", "w1.bt"),  # due first
        ("meeting_missing", "w1.bt"),
    ]
    # The gauges show the failing timer waiting (it was due a month ago).
    assert metrics.oldest.labels("timers")._value.get() >= 31 * 86_400
    assert value(metrics.timer_failures, "meeting_reminder") == 1

    # Not retried before its time; then twice more, and set aside as dead.
    await scheduler.fire_due()
    assert (await timer_rows())[("meeting_reminder", "mt1")]["attempts"] == 1
    for _ in range(2):
        clock.advance(300 * SECOND)
        await scheduler.fire_due()
    bad = (await timer_rows())[("meeting_reminder", "mt1")]
    assert (bad["status"], bad["attempts"]) == ("dead", 3)
    assert value(metrics.timers_dead, "meeting_reminder") == 1
    scheduler._gauges_at = 0.0
    await scheduler.scan()
    assert metrics.oldest.labels("timers")._value.get() == 0.0  # a dead timer waits no more


class BrokenScheduler(TimerScheduler):
    async def fire_due(self) -> int:
        raise RuntimeError("the timers table is unreadable")


async def test_the_gauges_are_refreshed_while_firing_fails(pool: asyncpg.Pool) -> None:
    clock = FrozenClock(L(2027, 2, 2, 10, 0))
    metrics = NotificationsMetrics(CollectorRegistry())
    outbox = Outbox(TemplateRenderer(), metrics, NotifyConfig())
    await pool.execute(
        "insert into notifications.timers (kind, ref_id, due_at, payload)"
        " values ('report_late', 'w1', $1, '{}')",
        clock.now() - timedelta(days=1),
    )
    await add_deliveries(pool, clock.now() - timedelta(hours=2), [("p1", "email")])
    scheduler = BrokenScheduler(pool, outbox, clock, metrics, lambda: None)
    await scheduler.scan()
    assert metrics.oldest.labels("timers")._value.get() == 86_400
    assert metrics.scheduled._value.get() == 1
    assert metrics.pending._value.get() == 1
    assert metrics.oldest.labels("deliveries")._value.get() == 7_200


async def test_with_the_digest_turned_off_waiting_digest_rows_are_sent_as_normal(
    pool: asyncpg.Pool,
) -> None:
    clock = FrozenClock(L(2027, 2, 2, 23, 0))  # in quiet hours
    metrics = NotificationsMetrics(CollectorRegistry())
    quiet = QuietHours.parse("22:00-06:00")
    woken = []
    outbox = Outbox(TemplateRenderer(), metrics, NotifyConfig(quiet_hours=quiet, digest_at=None))
    scheduler = TimerScheduler(pool, outbox, clock, metrics, lambda: woken.append(1))
    [held] = await add_deliveries(pool, L(2027, 2, 3, 7, 0), [("p1", "email")], "attendance_low")
    await pool.execute(
        "update notifications.deliveries set status = 'digest' where delivery_id = $1", held
    )
    await scheduler.scan()
    [row] = await states(pool, [held])
    # Pending again, held by quiet hours only (06:00, before the digest's 07:00).
    assert (row["status"], row["next_attempt_at"]) == ("pending", L(2027, 2, 3, 6, 0))
    assert woken
