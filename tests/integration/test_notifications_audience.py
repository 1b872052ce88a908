"""Who is told what about a meeting or a petition, and when a waiting notice no longer
holds: the real notifier, outbox, scheduler and dispatcher on a PostgreSQL database of
their own, with a frozen clock (the clock is set to quiet hours, days ahead and back,
which the shared stack's live service must not see)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from ops.stack import Stack
from services.notifications.adapters import delivery_log
from services.notifications.adapters.channels import (
    Outgoing,
    PermanentFailure,
    Recorded,
    TemporaryFailure,
)
from services.notifications.adapters.contacts import Contact, ContactsClient
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.bootstrap import MIGRATIONS
from services.notifications.domain.notices import QuietHours
from services.notifications.service_layer.dispatcher import Dispatcher
from services.notifications.service_layer.notifier import Notifier
from services.notifications.service_layer.outbox import NotifyConfig, Outbox
from services.notifications.service_layer.resend import resend_dead
from services.notifications.service_layer.scheduler import TimerScheduler
from shared.clock import LOCAL_TZ, FrozenClock
from shared.contract import DomainEvent
from shared.contract.events import (
    CellRegistered,
    EscalationReason,
    MeetingCancelled,
    MeetingKind,
    MeetingRescheduled,
    MeetingScheduled,
    MemberAdmitted,
    MemberStatus,
    OfficialAppointed,
    OfficialRole,
    PetitionCategory,
    PetitionEscalated,
    PetitionMarkedOverdue,
    PetitionRaised,
    PetitionResolved,
    UnitOfficialAppointed,
    UnitRegistered,
)
from shared.postgres import migrate
from tests.integration.helpers import close_pool

WARD = "nam-ngan"
CELL = "to-01"
MAILBOX = f"mailbox:chi-bo.{CELL}@chibo.local"


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LOCAL_TZ)


class SendingChannel:
    """An e-mail channel that records what it was asked to send; it can refuse the next
    sends (``refusals``, in order) and let something happen while a send is under way
    (``while_sending``, once)."""

    name = "email"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (trigger, address)
        self.refusals: list[Exception] = []
        self.while_sending: Callable[[], Awaitable[None]] | None = None

    async def send(self, message: Outgoing, recorded: Recorded | None = None) -> None:
        if self.while_sending is not None:
            during, self.while_sending = self.while_sending, None
            await during()
        if self.refusals:
            raise self.refusals.pop(0)
        self.sent.append((message.trigger, message.address))

    async def close(self) -> None:
        return None


class EveryoneHasMail(ContactsClient):
    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", token=lambda: "unused")

    async def lookup(self, person_ids: list[str]) -> dict[str, Contact]:
        return {p: Contact(email=f"{p}@thu.chibo.local", phone=None) for p in person_ids}


@dataclass
class Service:
    pool: asyncpg.Pool
    clock: FrozenClock
    metrics: NotificationsMetrics
    notifier: Notifier
    scheduler: TimerScheduler
    dispatcher: Dispatcher
    channel: SendingChannel

    async def apply(self, event: DomainEvent) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.notifier(conn, SimpleNamespace(event_id=uuid.uuid4()), event)  # type: ignore[arg-type]

    async def rows(self, ref: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in await self.pool.fetch(
                "select delivery_id, trigger, recipient, channel, status, reason"
                " from notifications.deliveries where trigger_ref = $1 order by delivery_id",
                ref,
            )
        ]

    def suppressed(self, trigger: str, reason: str) -> float:
        value = 0.0
        for metric in self.metrics.suppressed.collect():
            for s in metric.samples:
                if (
                    s.name.endswith("_total")
                    and s.labels["trigger"] == trigger
                    and s.labels["reason"] == reason
                ):
                    value += s.value
        return value

    def unaddressed(self, trigger: str) -> float:
        return sum(
            s.value
            for metric in self.metrics.unaddressed.collect()
            for s in metric.samples
            if s.name.endswith("_total") and s.labels["trigger"] == trigger
        )

    async def org(self, level: str = "ward") -> None:
        await self.apply(
            UnitRegistered(
                unit_id=WARD, ward_id=WARD, parent_id=None, level=level, name="Phường Nam Ngạn"
            )
        )
        await self.apply(
            CellRegistered(
                cell_id=CELL, ward_id=WARD, name="Chi bộ Tổ dân phố 1", meeting_day=3, roll_calls=1
            )
        )
        for member in ("m1", "m2"):
            await self.apply(
                MemberAdmitted(
                    cell_id=CELL,
                    ward_id=WARD,
                    member_id=member,
                    full_name="Nguyễn Văn An",
                    status=MemberStatus.FULL,
                )
            )
        await self.apply(
            OfficialAppointed(
                cell_id=CELL,
                ward_id=WARD,
                role=OfficialRole.SECRETARY,
                person_id="m1",
                full_name="Nguyễn Văn An",
            )
        )
        await self.apply(
            UnitOfficialAppointed(
                unit_id=WARD,
                ward_id=WARD,
                role=OfficialRole.SECRETARY,
                person_id="w1",
                full_name="Trần Văn Bình",
            )
        )

    async def schedule(self, meeting: str, start: datetime) -> None:
        await self.apply(
            MeetingScheduled(
                meeting_id=meeting,
                ward_id=WARD,
                cell_id=CELL,
                kind=MeetingKind.REGULAR,
                scheduled_start=start,
                location="Nhà văn hóa tổ 1",
            )
        )

    async def reschedule(self, meeting: str, start: datetime) -> None:
        await self.apply(
            MeetingRescheduled(
                meeting_id=meeting,
                ward_id=WARD,
                cell_id=CELL,
                scheduled_start=start,
                reason="Trùng lịch họp phường",
            )
        )

    async def send_due(self) -> None:
        while await self.dispatcher.dispatch_once():
            pass

    async def raise_petition(self, petition: str, deadline: datetime) -> None:
        """Raised at the cell (its secretary m1 holds it) now, due at ``deadline``."""
        await self.apply(
            PetitionRaised(
                petition_id=petition,
                ward_id=WARD,
                cell_id=CELL,
                category=PetitionCategory.ROADS,
                place="Ngõ 5",
                raised_by="cử tri",
                text="Đường hỏng",
                raised_at=self.clock.now(),
                level="cell",
                holder_id=CELL,
                deadline_at=deadline,
            )
        )

    async def resolve(self, petition: str) -> None:
        await self.apply(
            PetitionResolved(
                petition_id=petition,
                ward_id=WARD,
                level="cell",
                holder_id=CELL,
                response="Đã sửa đường",
                resolved_at=self.clock.now(),
            )
        )

    async def warnings(self, petition: str) -> list[dict[str, Any]]:
        """The petition's deadline warnings, with the deadline each warns of."""
        return [
            dict(r)
            for r in await self.pool.fetch(
                "select delivery_id, recipient, status, reason, attempts, about_at"
                " from notifications.deliveries"
                " where trigger_ref = $1 and trigger = 'petition_deadline' order by delivery_id",
                petition,
            )
        ]

    def sent_of(self, trigger: str) -> list[str]:
        return [address for t, address in self.channel.sent if t == trigger]


@pytest.fixture()
async def service(stack: Stack) -> AsyncIterator[Service]:
    # A database of its own: the clock here jumps through quiet hours and days ahead, and
    # the live service's rows must not be claimed here (nor these there).
    database = f"audience_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'create database "{database}"')
    pool = await asyncpg.create_pool(
        stack.database_url.rsplit("/", 1)[0] + f"/{database}", min_size=1, max_size=4
    )
    try:
        await migrate(pool, "notifications", MIGRATIONS)
        clock = FrozenClock(local(2026, 11, 30, 22, 30))  # in quiet hours
        metrics = NotificationsMetrics(CollectorRegistry())
        config = NotifyConfig(
            quiet_hours=QuietHours.parse("22:00-06:00"),
            enabled_channels=("email", "log"),
            cell_mailbox_pattern="chi-bo.{cell_id}@chibo.local",
        )
        outbox = Outbox(TemplateRenderer(), metrics, config)
        channel = SendingChannel()
        dispatcher = Dispatcher(
            pool,
            {"email": channel},
            EveryoneHasMail(),
            metrics,
            clock,
            asyncio.Event(),
            quick_retries=1,  # a refused send waits for its durable retry at once
        )
        scheduler = TimerScheduler(pool, outbox, clock, metrics, lambda: None)
        yield Service(pool, clock, metrics, Notifier(outbox, clock), scheduler, dispatcher, channel)
        await dispatcher.stop()
    finally:
        await close_pool(pool)
        await admin.execute(f'drop database "{database}"')
        await admin.close()


async def test_a_held_schedule_notice_is_withdrawn_when_the_meeting_is_called_off(
    service: Service,
) -> None:
    await service.org()
    await service.schedule("mt1", local(2026, 12, 3, 19, 30))
    held = await service.rows("mt1")
    assert {(r["recipient"], r["status"]) for r in held} == {
        ("m1", "pending"),
        ("m2", "pending"),
        (MAILBOX, "pending"),
    }
    await service.send_due()
    assert service.channel.sent == []  # quiet hours hold the normal notice

    service.clock.advance(timedelta(minutes=15))
    await service.apply(
        MeetingCancelled(meeting_id="mt1", ward_id=WARD, cell_id=CELL, reason="Bão")
    )
    by = {
        (r["trigger"], r["recipient"]): (r["status"], r["reason"])
        for r in await service.rows("mt1")
    }
    for person in ("m1", "m2", MAILBOX):
        assert by[("meeting_scheduled", person)] == ("suppressed", "superseded")
        assert by[("meeting_cancelled", person)] == ("pending", None)  # the mailbox too
    assert service.suppressed("meeting_scheduled", "superseded") == 3

    await service.send_due()  # the cancellation is urgent: at once
    cancelled = sorted(a for t, a in service.channel.sent if t == "meeting_cancelled")
    assert cancelled == [
        "chi-bo.to-01@chibo.local",
        "m1@thu.chibo.local",
        "m2@thu.chibo.local",
    ]
    service.clock.set(local(2026, 12, 1, 6, 0))  # the quiet hours are over
    await service.send_due()
    assert [t for t, _ in service.channel.sent if t == "meeting_scheduled"] == []


async def test_a_reschedule_withdraws_the_old_notices_and_tells_the_mailbox(
    service: Service,
) -> None:
    service.clock.set(local(2026, 11, 30, 10, 0))  # by day: the notice goes at once
    await service.org()
    await service.schedule("mt2", local(2026, 12, 1, 19, 30))
    # The first send fails: the row waits for its retry, the old time in it.
    [first] = [r for r in await service.rows("mt2") if r["recipient"] == "m1"]
    await service.pool.execute(
        "update notifications.deliveries set status = 'pending', attempts = 1,"
        " next_attempt_at = $2, last_error = 'smtp: 451' where delivery_id = $1",
        first["delivery_id"],
        service.clock.now() + timedelta(minutes=5),
    )
    await service.send_due()
    service.clock.advance(timedelta(hours=22))  # the 24 h reminder fell due at 19:30
    await service.scheduler.fire_due()
    reminders = [r for r in await service.rows("mt2") if r["trigger"] == "meeting_reminder"]
    assert {(r["recipient"], r["status"]) for r in reminders} == {
        ("m1", "pending"),
        ("m2", "pending"),
        (MAILBOX, "pending"),  # the reminder reaches the mailbox too
    }
    service.channel.sent.clear()

    # Moved while the first notice's retry and the reminders still wait.
    await service.reschedule("mt2", local(2026, 12, 4, 19, 30))
    by = {
        (r["trigger"], r["recipient"]): (r["status"], r["reason"])
        for r in await service.rows("mt2")
    }
    assert by[("meeting_scheduled", "m1")] == ("suppressed", "superseded")
    assert by[("meeting_scheduled", "m2")] == ("sent", None)
    for person in ("m1", "m2", MAILBOX):
        assert by[("meeting_reminder", person)] == ("suppressed", "superseded")
        assert by[("meeting_rescheduled", person)][0] == "pending"
    service.clock.advance(timedelta(hours=1))
    await service.send_due()
    assert sorted(t for t, _ in service.channel.sent) == ["meeting_rescheduled"] * 3
    assert ("meeting_rescheduled", "chi-bo.to-01@chibo.local") in service.channel.sent
    assert service.suppressed("meeting_reminder", "superseded") == 3


async def test_the_dispatcher_checks_a_meeting_notice_again_before_sending_it(
    service: Service,
) -> None:
    """A row that was being sent when the meeting moved, and came back for a retry, or one
    resent from the dead letters: withdrawn at send time, not sent with the old time."""
    service.clock.set(local(2026, 11, 30, 10, 0))
    await service.org()
    await service.schedule("mt3", local(2026, 12, 3, 19, 30))
    await service.schedule("mt4", local(2026, 11, 30, 19, 30))
    # Both taken by a dispatcher before the change, then back to pending (a retry).
    claimed = await delivery_log.claim(
        service.pool, service.clock.now(), 100, timedelta(seconds=60)
    )
    assert len(claimed) == 6
    await service.reschedule("mt3", local(2026, 12, 5, 19, 30))  # mt3 moves
    await service.pool.execute(
        "update notifications.deliveries set status = 'pending', claimed_until = null"
        " where status = 'sending'"
    )
    service.clock.set(local(2026, 11, 30, 20, 0))  # mt4 has begun
    await service.send_due()
    sent = [t for t, _ in service.channel.sent]
    assert sent.count("meeting_scheduled") == 0
    assert sent.count("meeting_rescheduled") == 3
    for ref, reason in (("mt3", "superseded"), ("mt4", "stale")):
        scheduled = [r for r in await service.rows(ref) if r["trigger"] == "meeting_scheduled"]
        assert [(r["status"], r["reason"]) for r in scheduled] == [("suppressed", reason)] * 3
    assert service.suppressed("meeting_scheduled", "superseded") == 3
    assert service.suppressed("meeting_scheduled", "stale") == 3


async def test_a_commune_gets_the_late_report_timer(service: Service) -> None:
    await service.org(level="commune")
    rows = await service.pool.fetch("select kind, ref_id from notifications.timers")
    assert ("report_late", WARD) in {(r["kind"], r["ref_id"]) for r in rows}


async def test_a_preference_for_a_channel_not_configured_falls_back_to_the_default(
    service: Service,
) -> None:
    service.clock.set(local(2026, 11, 30, 10, 0))
    await service.org()
    await service.pool.execute(
        "insert into notifications.preferences (person_id, channels, updated_by)"
        " values ('m1', '{webhook}', 'm1'), ('m2', '{webhook,log}', 'm2')"
    )
    await service.schedule("mt5", local(2026, 12, 3, 19, 30))
    got = {(r["recipient"], r["channel"]) for r in await service.rows("mt5")}
    assert got == {("m1", "email"), ("m2", "log"), (MAILBOX, "email")}
    assert service.suppressed("meeting_scheduled", "channel_not_configured") == 2


async def test_an_escalation_to_a_level_without_a_unit_no_longer_warns_the_previous_holder(
    service: Service,
) -> None:
    service.clock.set(local(2026, 11, 1, 9, 0))
    await service.org()
    now = service.clock.now()
    await service.apply(
        PetitionRaised(
            petition_id="p1",
            ward_id=WARD,
            cell_id=CELL,
            category=PetitionCategory.LAND,
            place="Ngõ 5",
            raised_by="cử tri",
            text="Đường hỏng",
            raised_at=now,
            level="cell",
            holder_id=CELL,
            deadline_at=now + timedelta(days=7),
        )
    )
    await service.apply(
        PetitionEscalated(
            petition_id="p1",
            ward_id=WARD,
            from_level="cell",
            to_level="ward",
            to_holder_id=WARD,
            reason=EscalationReason.BEYOND_AUTHORITY,
            deadline_at=now + timedelta(days=15),
            escalated_at=now,
        )
    )
    await service.apply(
        PetitionEscalated(
            petition_id="p1",
            ward_id=WARD,
            from_level="ward",
            to_level="district",
            to_holder_id=None,
            reason=EscalationReason.BEYOND_AUTHORITY,
            deadline_at=now + timedelta(days=30),
            escalated_at=now,
        )
    )
    row = await service.pool.fetchrow("select level, holder_id from notifications.petitions")
    assert dict(row) == {"level": "district", "holder_id": None}
    await service.pool.execute("delete from notifications.deliveries")
    service.clock.advance(timedelta(days=29))  # past the 48 h warning of the district deadline
    await service.scheduler.fire_due()
    warned = await service.pool.fetch(
        "select recipient from notifications.deliveries where trigger = 'petition_deadline'"
    )
    assert [r["recipient"] for r in warned] == []  # not the ward's official w1


async def test_an_escalation_to_a_unit_without_officials_is_counted_as_reaching_nobody(
    service: Service,
) -> None:
    service.clock.set(local(2026, 11, 1, 9, 0))
    await service.org()
    # The district is registered, but none of its officials is.
    await service.apply(
        UnitRegistered(
            unit_id="tp-thanh-hoa",
            ward_id=WARD,
            parent_id=None,
            level="district",
            name="Thành phố Thanh Hóa",
        )
    )
    now = service.clock.now()
    await service.apply(
        PetitionEscalated(
            petition_id="p2",
            ward_id=WARD,
            from_level="ward",
            to_level="district",
            to_holder_id="tp-thanh-hoa",
            reason=EscalationReason.BEYOND_AUTHORITY,
            deadline_at=now + timedelta(days=30),
            escalated_at=now,
        )
    )
    assert await service.rows("p2") == []
    assert service.unaddressed("petition_escalated") == 1
    assert service.unaddressed("meeting_scheduled") == 0
    # A notice that has someone to tell is not counted.
    await service.schedule("mt-1", local(2026, 11, 3, 19, 30))
    assert service.unaddressed("meeting_scheduled") == 0


# -- deadline warnings: checked against the petition when they come to be sent ----------

DEADLINE = local(2026, 12, 1, 17, 0)


async def _warned(service: Service, deadlines: dict[str, datetime]) -> dict[str, int]:
    """Raise the petitions now (their raised notices go out) and fire their catch-up
    warnings ("còn khoảng 4 giờ" for a 17:00 deadline at 13:00); each warning's delivery
    id, still pending."""
    for petition, deadline in deadlines.items():
        await service.raise_petition(petition, deadline)
    await service.send_due()
    await service.scheduler.fire_due()
    ids = {}
    for petition, deadline in deadlines.items():
        [warning] = await service.warnings(petition)
        assert (warning["recipient"], warning["status"]) == ("m1", "pending")
        assert warning["about_at"] == deadline  # the deadline it warns of
        ids[petition] = int(warning["delivery_id"])
    return ids


@pytest.fixture()
async def cell(service: Service) -> Service:
    service.clock.set(local(2026, 12, 1, 13, 0))  # by day: urgent or not, notices go at once
    await service.org()
    return service


async def test_a_deadline_warning_back_for_a_retry_after_the_resolution_is_not_sent(
    cell: Service,
) -> None:
    """The petition is resolved while its warning is on the wire; the relay refuses it and
    it waits for a retry. The retry is withdrawn (superseded), not sent."""
    await _warned(cell, {"p3": DEADLINE})
    cell.channel.refusals.append(TemporaryFailure("smtp: 451 try again later"))
    cell.channel.while_sending = lambda: cell.resolve("p3")
    await cell.send_due()
    [held] = await cell.warnings("p3")
    # Being sent at the resolution, so the resolution left it: back for its retry.
    assert (held["status"], held["reason"], held["attempts"]) == ("pending", None, 1)
    assert cell.sent_of("petition_resolved") == ["m1@thu.chibo.local"]

    cell.clock.advance(timedelta(minutes=1))  # the retry is due
    await cell.send_due()
    [withdrawn] = await cell.warnings("p3")
    assert (withdrawn["status"], withdrawn["reason"]) == ("suppressed", "superseded")
    assert cell.sent_of("petition_deadline") == []
    assert cell.suppressed("petition_deadline", "superseded") == 1


async def test_an_escalation_withdraws_a_waiting_warning_and_the_new_holder_is_warned(
    cell: Service,
) -> None:
    await _warned(cell, {"p4": DEADLINE})
    cell.channel.refusals.append(TemporaryFailure("smtp: 451 try again later"))
    await cell.send_due()
    assert [w["status"] for w in await cell.warnings("p4")] == ["pending"]  # for a retry

    ward_deadline = cell.clock.now() + timedelta(days=15)
    await cell.apply(
        PetitionEscalated(
            petition_id="p4",
            ward_id=WARD,
            from_level="cell",
            to_level="ward",
            to_holder_id=WARD,
            reason=EscalationReason.BEYOND_AUTHORITY,
            deadline_at=ward_deadline,
            escalated_at=cell.clock.now(),
        )
    )
    # In the escalation's own transaction: the cell no longer holds it by 17:00.
    [withdrawn] = await cell.warnings("p4")
    assert (withdrawn["status"], withdrawn["reason"]) == ("suppressed", "superseded")
    assert cell.suppressed("petition_deadline", "superseded") == 1
    cell.clock.advance(timedelta(minutes=1))
    await cell.send_due()
    assert cell.sent_of("petition_deadline") == []
    assert cell.sent_of("petition_escalated") == ["w1@thu.chibo.local"]

    cell.clock.set(ward_deadline - timedelta(hours=47))  # the ward's 48 h warning is due
    await cell.scheduler.fire_due()
    await cell.send_due()
    assert cell.sent_of("petition_deadline") == ["w1@thu.chibo.local"]
    ward_warning = [w for w in await cell.warnings("p4") if w["recipient"] == "w1"]
    assert [(w["status"], w["about_at"]) for w in ward_warning] == [("sent", ward_deadline)]


async def test_a_warning_retried_past_its_deadline_is_stale_and_one_still_valid_is_sent(
    cell: Service,
) -> None:
    """The relay is down from 13:00 to 17:30, within RETRY_GIVE_UP_S of the first attempt:
    the warning of the 17:00 deadline is not sent after it; the 19:00 one still is."""
    warned = await _warned(cell, {"p5": DEADLINE, "p6": local(2026, 12, 1, 19, 0)})
    late, valid = warned["p5"], warned["p6"]
    cell.channel.refusals += [TemporaryFailure("smtp: 421 closing"), TemporaryFailure("421")]
    await cell.send_due()
    rows = {w["delivery_id"]: w for p in ("p5", "p6") for w in await cell.warnings(p)}
    assert [(rows[i]["status"], rows[i]["attempts"]) for i in (late, valid)] == [
        ("pending", 1),
        ("pending", 1),
    ]

    cell.clock.set(local(2026, 12, 1, 17, 30))
    await cell.send_due()
    rows = {w["delivery_id"]: w for p in ("p5", "p6") for w in await cell.warnings(p)}
    assert (rows[late]["status"], rows[late]["reason"]) == ("suppressed", "stale")
    assert rows[valid]["status"] == "sent"
    assert cell.sent_of("petition_deadline") == ["m1@thu.chibo.local"]  # p6's, once
    assert cell.suppressed("petition_deadline", "stale") == 1


async def test_a_waiting_warning_is_stale_once_the_petition_is_marked_overdue(
    cell: Service,
) -> None:
    await _warned(cell, {"p9": DEADLINE})
    cell.channel.refusals.append(TemporaryFailure("smtp: 451 try again later"))
    await cell.send_due()
    cell.clock.set(DEADLINE)
    await cell.apply(
        PetitionMarkedOverdue(
            petition_id="p9",
            ward_id=WARD,
            level="cell",
            missed_deadline_at=DEADLINE,
            marked_at=DEADLINE,
        )
    )
    [withdrawn] = await cell.warnings("p9")
    assert (withdrawn["status"], withdrawn["reason"]) == ("suppressed", "stale")
    assert cell.suppressed("petition_deadline", "stale") == 1


async def test_resend_leaves_a_warning_of_a_resolved_petition_dead_and_resends_a_valid_one(
    cell: Service,
) -> None:
    warned = await _warned(cell, {"p7": DEADLINE, "p8": local(2026, 12, 1, 18, 0)})
    resolved, valid = warned["p7"], warned["p8"]
    cell.channel.refusals += [PermanentFailure("550 mailbox full"), PermanentFailure("550")]
    await cell.send_due()
    assert {w["status"] for p in ("p7", "p8") for w in await cell.warnings(p)} == {"dead"}
    await cell.resolve("p7")

    async with cell.pool.acquire() as conn:
        done = await resend_dead(conn, None, cell.clock.now(), QuietHours.parse("22:00-06:00"))
    assert done.outdated == {resolved: "superseded"}
    assert list(done.not_before) == [valid]  # urgent: at once
    await cell.send_due()
    assert cell.sent_of("petition_deadline") == ["m1@thu.chibo.local"]
    [p7] = await cell.warnings("p7")
    [p8] = await cell.warnings("p8")
    assert (p7["status"], p8["status"]) == ("dead", "sent")
