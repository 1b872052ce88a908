"""Turns each event into directory updates, timers and recorded deliveries, all inside the
consumer's transaction (shared/consumer.py), so an event's effect happens exactly once
however often it is redelivered. Sending happens after commit (dispatcher.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.notifications.adapters import directory, timers
from services.notifications.domain.names import PlaceNames
from services.notifications.domain.notices import (
    SUPERSEDED_BY_PETITION_CHANGE,
    Notice,
    Trigger,
    attendance_rate,
    is_stale,
    local_month,
    meeting_check_at,
    next_month,
    report_due_at,
)
from services.notifications.service_layer.outbox import Outbox
from shared.clock import Clock
from shared.contract import DomainEvent
from shared.contract.envelope import ConsumedEnvelope
from shared.contract.events import (
    CellRegistered,
    MeetingCancelled,
    MeetingKind,
    MeetingOpened,
    MeetingRescheduled,
    MeetingScheduled,
    OfficialRole,
    PetitionEscalated,
    PetitionMarkedOverdue,
    PetitionRaised,
    PetitionReopened,
    PetitionResolved,
    UnitRegistered,
    WardReportSubmitted,
)

REMINDER = "meeting_reminder"
DEADLINE = "petition_deadline"
MEETING_MISSING = "meeting_missing"
REPORT_LATE = "report_late"


async def meeting_audience(
    conn: asyncpg.Connection, cell_id: str, mailbox: str | None = None
) -> list[str]:
    """The cell's members and the ward committee member in charge of it, and the cell's
    shared mailbox when the deployment has one (NotifyConfig.cell_mailbox): every notice
    about a meeting goes to the same people."""
    members = await directory.cell_members(conn, cell_id)
    supervisor = await directory.cell_officials(
        conn, cell_id, (OfficialRole.WARD_MEMBER_IN_CHARGE,)
    )
    office = [mailbox] if mailbox else []
    return list(dict.fromkeys([*members, *supervisor, *office]))


async def ward_and_above(conn: asyncpg.Connection, ward_id: str) -> list[str]:
    """The ward's officials and those of the level above it."""
    parent = await directory.unit_parent(conn, ward_id)
    return [
        *await directory.unit_officials(conn, ward_id),
        *await directory.unit_officials(conn, parent),
    ]


def meeting_timer_id(meeting_id: str) -> str:
    return meeting_id


class Notifier:
    def __init__(self, outbox: Outbox, clock: Clock) -> None:
        self._outbox = outbox
        self._clock = clock

    @property
    def config(self):  # type: ignore[no-untyped-def]
        return self._outbox.config

    async def __call__(
        self, conn: asyncpg.Connection, envelope: ConsumedEnvelope, event: DomainEvent
    ) -> None:
        now = self._clock.now()
        await directory.apply_org_event(conn, event)
        eid = envelope.event_id
        if isinstance(event, MeetingScheduled):
            await self._scheduled(conn, eid, event, now)
        elif isinstance(event, MeetingRescheduled):
            await self._rescheduled(conn, eid, event, now)
        elif isinstance(event, MeetingCancelled):
            await self._cancelled(conn, eid, event, now)
        elif isinstance(event, MeetingOpened):
            await self._opened(conn, eid, event, now)
        elif isinstance(event, PetitionRaised):
            await self._petition_raised(conn, eid, event, now)
        elif isinstance(event, PetitionEscalated):
            await self._petition_escalated(conn, eid, event, now)
        elif isinstance(event, PetitionResolved | PetitionReopened):
            await self._petition_closed_or_reopened(conn, eid, event, now)
        elif isinstance(event, PetitionMarkedOverdue):
            await directory.update_petition(
                conn,
                event.petition_id,
                status="overdue",
                history_entry={"what": "overdue", "at": event.marked_at, "level": event.level},
            )
            await timers.cancel_timers(conn, DEADLINE, event.petition_id)
            # Its deadline has passed: a warning still waiting would come too late.
            await self._outbox.withdraw_superseded(
                conn, event.petition_id, SUPERSEDED_BY_PETITION_CHANGE, "stale"
            )
        elif isinstance(event, CellRegistered):
            month = local_month(now)
            due_day = max(self.config.meeting_missing_day, event.meeting_day)
            if meeting_check_at(month, due_day) <= now:
                month = next_month(month)
            await timers.set_timer(
                conn,
                MEETING_MISSING,
                event.cell_id,
                meeting_check_at(month, due_day),
                {
                    "cell_id": event.cell_id,
                    "ward_id": event.ward_id,
                    "month": month,
                    "due_day": due_day,
                },
            )
        elif isinstance(event, UnitRegistered) and event.level in self.config.report_levels:
            month = local_month(now)
            await timers.set_timer(
                conn,
                REPORT_LATE,
                event.unit_id,
                report_due_at(month),
                {"ward_id": event.unit_id, "month": month},
            )
        elif isinstance(event, WardReportSubmitted):
            await self._report_submitted(conn, eid, event, now)

    # -- meetings ----------------------------------------------------------------------

    async def _set_reminders(
        self, conn: asyncpg.Connection, meeting_id: str, start: datetime, now: datetime
    ) -> None:
        for lead in self.config.reminder_leads:
            due = start - lead
            if due > now:  # a reminder whose time has passed adds nothing to the notice
                await timers.set_timer(
                    conn,
                    REMINDER,
                    meeting_id,
                    due,
                    {"scheduled_start": start.isoformat(), "lead_s": lead.total_seconds()},
                )

    async def _announce(
        self, conn: asyncpg.Connection, notice: Notice, starts_at: datetime | None, now: datetime
    ) -> bool:
        """Record a meeting's notice, unless the meeting has begun (a backfilled month):
        then it is suppressed as stale. True when recorded."""
        if starts_at is not None and is_stale(starts_at, now):
            await self._outbox.suppress_stale(conn, notice)
            return False
        await self._outbox.record(conn, notice, now)
        return True

    async def _scheduled(
        self, conn: asyncpg.Connection, eid: Any, event: MeetingScheduled, now: datetime
    ) -> None:
        await directory.save_meeting(
            conn,
            event.meeting_id,
            event.ward_id,
            event.cell_id,
            event.kind.value,
            event.scheduled_start,
            event.model_dump(mode="json"),
        )
        mailbox = self.config.cell_mailbox(event.cell_id, event.ward_id)
        notice = Notice(
            eid,
            Trigger.MEETING_SCHEDULED,
            tuple(await meeting_audience(conn, event.cell_id, mailbox)),
            {"meeting": event, "names": await _meeting_names(conn, event)},
            event.meeting_id,
            about_at=event.scheduled_start,
        )
        if await self._announce(conn, notice, event.scheduled_start, now):
            await self._set_reminders(conn, event.meeting_id, event.scheduled_start, now)

    async def _rescheduled(
        self, conn: asyncpg.Connection, eid: Any, event: MeetingRescheduled, now: datetime
    ) -> None:
        before = await directory.meeting(conn, event.meeting_id)
        await directory.move_meeting(conn, event.meeting_id, event.scheduled_start)
        await timers.cancel_timers(conn, REMINDER, event.meeting_id)
        # Before the new notice is recorded: what still waits about the old time is wrong now.
        await self._outbox.withdraw_superseded(conn, event.meeting_id)
        previous = before["scheduled_start"] if before else None
        mailbox = self.config.cell_mailbox(event.cell_id, event.ward_id)
        notice = Notice(
            eid,
            Trigger.MEETING_RESCHEDULED,
            tuple(await meeting_audience(conn, event.cell_id, mailbox)),
            {
                "meeting": event,
                "previous_start": previous,
                "kind": _kind(before),
                "names": await _meeting_names(conn, event),
            },
            event.meeting_id,
            about_at=event.scheduled_start,
        )
        if await self._announce(conn, notice, event.scheduled_start, now):
            await self._set_reminders(conn, event.meeting_id, event.scheduled_start, now)

    async def _cancelled(
        self, conn: asyncpg.Connection, eid: Any, event: MeetingCancelled, now: datetime
    ) -> None:
        before = await directory.meeting(conn, event.meeting_id)
        await directory.set_meeting_status(conn, event.meeting_id, "cancelled")
        await timers.cancel_timers(conn, REMINDER, event.meeting_id)
        await self._outbox.withdraw_superseded(conn, event.meeting_id)
        start = before["scheduled_start"] if before else None
        mailbox = self.config.cell_mailbox(event.cell_id, event.ward_id)
        notice = Notice(
            eid,
            Trigger.MEETING_CANCELLED,
            tuple(await meeting_audience(conn, event.cell_id, mailbox)),
            {
                "meeting": event,
                "scheduled_start": start,
                "kind": _kind(before),
                "names": await _meeting_names(conn, event),
            },
            event.meeting_id,
            about_at=start,
        )
        await self._announce(conn, notice, start, now)

    async def _opened(
        self, conn: asyncpg.Connection, eid: Any, event: MeetingOpened, now: datetime
    ) -> None:
        await timers.cancel_timers(conn, REMINDER, event.meeting_id)  # it has begun
        await directory.set_meeting_status(conn, event.meeting_id, "opened")
        known = await directory.meeting(conn, event.meeting_id)
        if known is None or known["kind"] != MeetingKind.REGULAR.value:
            return
        await directory.mark_regular_held(conn, event.cell_id, local_month(event.opened_at))
        rate = attendance_rate(event.roll_call)
        if rate is None or rate >= self.config.attendance_threshold:
            return
        present = sum(1 for e in event.roll_call if e.status.value == "present")
        counted = sum(1 for e in event.roll_call if e.status.value != "exempt")
        notice = Notice(
            eid,
            Trigger.ATTENDANCE_LOW,
            tuple(await directory.unit_officials(conn, event.ward_id)),
            {
                "meeting": event,
                "rate": rate,
                "present": present,
                "counted": counted,
                "threshold": self.config.attendance_threshold,
                "names": await _meeting_names(conn, event),
            },
            event.meeting_id,
        )
        await self._outbox.record(conn, notice, now)

    # -- petitions ---------------------------------------------------------------------

    async def _set_deadline_warnings(
        self, conn: asyncpg.Connection, petition_id: str, deadline: datetime, now: datetime
    ) -> None:
        """A warning at each lead time still ahead; if some lead times have passed already
        (a short deadline, a late event), one catch-up warning now."""
        if deadline <= now:
            return
        payload = {"deadline_at": deadline.isoformat()}
        passed = [lead for lead in self.config.deadline_leads if deadline - lead <= now]
        for lead in self.config.deadline_leads:
            if lead not in passed:
                await timers.set_timer(
                    conn,
                    DEADLINE,
                    petition_id,
                    deadline - lead,
                    {**payload, "lead_s": lead.total_seconds()},
                )
        if passed:
            lead_s = min(passed).total_seconds()
            await timers.set_timer(conn, DEADLINE, petition_id, now, {**payload, "lead_s": lead_s})

    async def _petition_raised(
        self, conn: asyncpg.Connection, eid: Any, event: PetitionRaised, now: datetime
    ) -> None:
        entry = {
            "what": "raised",
            "at": event.raised_at,
            "level": event.level,
            "category": event.category.value,
            "place": event.place,
            "text": event.text,
        }
        await directory.save_petition(
            conn,
            event.petition_id,
            event.ward_id,
            event.cell_id,
            event.level,
            event.holder_id,
            event.deadline_at,
            entry,
        )
        recipients = await directory.holder_officials(conn, event.level, event.holder_id)
        names = await directory.place_names(
            conn, (event.cell_id, _cell_holder(event.level, event.holder_id)), (event.holder_id,)
        )
        notice = Notice(
            eid,
            Trigger.PETITION_RAISED,
            tuple(recipients),
            {"petition": event, "names": names},
            event.petition_id,
        )
        await self._outbox.record(conn, notice, now)
        await self._set_deadline_warnings(conn, event.petition_id, event.deadline_at, now)

    async def _petition_escalated(
        self, conn: asyncpg.Connection, eid: Any, event: PetitionEscalated, now: datetime
    ) -> None:
        entry = {
            "what": "escalated",
            "at": event.escalated_at,
            "level": event.to_level,
            "from_level": event.from_level,
            "reason": event.reason.value,
        }
        row = await directory.update_petition(
            conn,
            event.petition_id,
            status="open",
            history_entry=entry,
            level=event.to_level,
            holder_id=event.to_holder_id,
            deadline_at=event.deadline_at,
            new_holder=True,
        )
        await timers.cancel_timers(conn, DEADLINE, event.petition_id)
        # Warnings still waiting name the previous holder's deadline.
        await self._outbox.withdraw_superseded(
            conn, event.petition_id, SUPERSEDED_BY_PETITION_CHANGE
        )
        history = _history(row)
        notice = Notice(
            eid,
            Trigger.PETITION_ESCALATED,
            tuple(await directory.unit_officials(conn, event.to_holder_id)),
            {
                "escalation": event,
                "history": history,
                "petition": _petition_facts(row),
                "names": await directory.place_names(
                    conn, (row["cell_id"] if row else None,), (event.to_holder_id,)
                ),
            },
            event.petition_id,
        )
        await self._outbox.record(conn, notice, now)
        await self._set_deadline_warnings(conn, event.petition_id, event.deadline_at, now)

    async def _petition_closed_or_reopened(
        self,
        conn: asyncpg.Connection,
        eid: Any,
        event: PetitionResolved | PetitionReopened,
        now: datetime,
    ) -> None:
        await timers.cancel_timers(conn, DEADLINE, event.petition_id)
        await self._outbox.withdraw_superseded(
            conn, event.petition_id, SUPERSEDED_BY_PETITION_CHANGE
        )
        if isinstance(event, PetitionResolved):
            entry = {"what": "resolved", "at": event.resolved_at, "level": event.level}
            row = await directory.update_petition(
                conn, event.petition_id, status="resolved", history_entry=entry
            )
            trigger = Trigger.PETITION_RESOLVED
        else:
            entry = {"what": "reopened", "at": event.reopened_at, "level": event.level}
            row = await directory.update_petition(
                conn,
                event.petition_id,
                status="open",
                history_entry=entry,
                deadline_at=event.deadline_at,
            )
            trigger = Trigger.PETITION_REOPENED
            await self._set_deadline_warnings(conn, event.petition_id, event.deadline_at, now)
        if row is None:  # raised before this service knew it: no cell to tell
            return
        notice = Notice(
            eid,
            trigger,
            tuple(await directory.cell_officials(conn, row["cell_id"])),
            {
                "event": event,
                "petition": _petition_facts(row),
                "names": await directory.place_names(conn, (row["cell_id"],)),
            },
            event.petition_id,
        )
        await self._outbox.record(conn, notice, now)

    # -- the ward's monthly report -----------------------------------------------------

    async def _report_submitted(
        self, conn: asyncpg.Connection, eid: Any, event: WardReportSubmitted, now: datetime
    ) -> None:
        await directory.record_report(conn, event.ward_id, event.month, event.submitted_at)
        notice = Notice(
            eid,
            Trigger.REPORT_SUBMITTED,
            tuple(await ward_and_above(conn, event.ward_id)),
            {"report": event, "names": await directory.place_names(conn, (), (event.ward_id,))},
            event.ward_id,
        )
        await self._outbox.record(conn, notice, now)


async def _meeting_names(
    conn: asyncpg.Connection,
    event: MeetingScheduled | MeetingRescheduled | MeetingCancelled | MeetingOpened,
) -> PlaceNames:
    return await directory.place_names(conn, (event.cell_id,), (event.ward_id,))


def _cell_holder(level: str, holder_id: str | None) -> str | None:
    """The holder's id when it is a cell (level "cell"), else None."""
    return holder_id if level == "cell" else None


def _kind(row: Any) -> str:
    return str(row["kind"]) if row is not None else MeetingKind.REGULAR.value


def _history(row: Any) -> list[dict[str, Any]]:
    import json

    if row is None:
        return []
    raw = row["history"]
    entries: list[dict[str, Any]] = json.loads(raw) if isinstance(raw, str) else list(raw)
    for e in entries:
        if isinstance(e.get("at"), str):
            e["at"] = datetime.fromisoformat(e["at"])
    return entries


def _petition_facts(row: Any) -> dict[str, Any]:
    if row is None:
        return {}
    return {
        "petition_id": row["petition_id"],
        "ward_id": row["ward_id"],
        "cell_id": row["cell_id"],
        "level": row["level"],
        "holder_id": row["holder_id"],
        "deadline_at": row["deadline_at"],
        "history": _history(row),
    }
