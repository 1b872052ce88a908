"""Which row writes each event makes in the report projections. Pure.

A batch's writes are run grouped by statement, in the fixed order of ``STATEMENTS``,
which is each row's life order (a meeting is inserted before it is opened, a stay on
the roll before it ends). That makes a batch of any size give the same rows as the same
events one by one, so a rebuild with large batches equals the live projection. Where a
key can come back (a member re-admitted to a cell), the write names the stream version
it applies to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.contract.events import (
    Attendance,
    CellRegistered,
    DomainEvent,
    MeetingCancelled,
    MeetingClosed,
    MeetingOpened,
    MeetingRescheduled,
    MeetingScheduled,
    MemberAdmitted,
    MemberExempted,
    MemberStatus,
    MemberTransferredOut,
    OrientationIssued,
    PetitionAcknowledged,
    PetitionEscalated,
    PetitionMarkedOverdue,
    PetitionRaised,
    PetitionReopened,
    PetitionResolved,
    ResolutionAdopted,
    TaskCompleted,
    UnitRegistered,
    WardReportSubmitted,
)

# In this order within a batch (see the module's docstring).
STATEMENTS = (
    "unit",
    "cell",
    "member_admitted",
    "member_left",
    "exemption",
    "meeting_scheduled",
    "meeting_rescheduled",
    "meeting_cancelled",
    "meeting_opened",
    "meeting_closed",
    "resolution",
    "task",
    "task_completed",
    "petition",
    "petition_step",
    "submission",
    "orientation",
)


@dataclass(frozen=True)
class Write:
    statement: str
    args: tuple[Any, ...]


def writes_for(event: DomainEvent, occurred_at: datetime, stream_version: int) -> list[Write]:
    """The row writes of one event; [] for events the reports do not use."""
    match event:
        case UnitRegistered():
            return [Write("unit", (event.unit_id, event.level, event.name, event.parent_id))]
        case CellRegistered():
            return [
                Write(
                    "cell",
                    (event.cell_id, event.ward_id, event.name, event.meeting_day, event.roll_calls),
                )
            ]
        case MemberAdmitted():
            probationary = event.status == MemberStatus.PROBATIONARY
            return [
                Write(
                    "member_admitted",
                    (
                        event.cell_id,
                        event.member_id,
                        stream_version,
                        event.ward_id,
                        probationary,
                        occurred_at,
                    ),
                )
            ]
        case MemberTransferredOut():
            return [
                Write("member_left", (event.cell_id, event.member_id, stream_version, occurred_at))
            ]
        case MemberExempted():
            return [
                Write(
                    "exemption",
                    (
                        event.cell_id,
                        event.member_id,
                        event.exempt_from,
                        event.ward_id,
                        event.exempt_until,
                    ),
                )
            ]
        case MeetingScheduled():
            return [
                Write(
                    "meeting_scheduled",
                    (
                        event.meeting_id,
                        event.ward_id,
                        event.cell_id,
                        event.kind.value,
                        json.dumps(event.agenda, ensure_ascii=False),
                        event.scheduled_start,
                    ),
                )
            ]
        case MeetingRescheduled():
            return [Write("meeting_rescheduled", (event.meeting_id, event.scheduled_start))]
        case MeetingCancelled():
            return [Write("meeting_cancelled", (event.meeting_id, event.reason))]
        case MeetingOpened():
            present = [e.member_id for e in event.roll_call if e.status == Attendance.PRESENT]
            statuses = [e.status for e in event.roll_call]
            return [
                Write(
                    "meeting_opened",
                    (
                        event.meeting_id,
                        event.opened_at,
                        event.supervisor_present,
                        present,
                        len(present),
                        statuses.count(Attendance.ABSENT_EXCUSED),
                        statuses.count(Attendance.ABSENT_UNEXCUSED),
                    ),
                )
            ]
        case MeetingClosed():
            second = event.second_roll_call
            present_second = (
                [e.member_id for e in second if e.status == Attendance.PRESENT]
                if second is not None
                else None
            )
            return [
                Write(
                    "meeting_closed",
                    (
                        event.meeting_id,
                        event.closed_at,
                        present_second,
                        len(event.speakers),
                        event.minutes_recorded,
                        event.previous_resolution_carried_out,
                    ),
                )
            ]
        case ResolutionAdopted():
            return [
                Write(
                    "resolution",
                    (
                        event.resolution_id,
                        event.meeting_id,
                        event.ward_id,
                        event.cell_id,
                        event.title,
                        occurred_at,
                    ),
                ),
                *(
                    Write("task", (event.resolution_id, t.task_id, event.ward_id, t.due_on))
                    for t in event.tasks
                ),
            ]
        case TaskCompleted():
            return [
                Write("task_completed", (event.resolution_id, event.task_id, event.completed_on))
            ]
        case PetitionRaised():
            return [
                Write(
                    "petition",
                    (
                        event.petition_id,
                        event.ward_id,
                        event.cell_id,
                        event.category.value,
                        event.place,
                        occurred_at,
                        event.level,
                        event.holder_id,
                        event.deadline_at,
                        event.recurring,
                    ),
                )
            ]
        case PetitionAcknowledged():
            return [_step(event, stream_version, occurred_at, "acknowledged", event.level)]
        case PetitionResolved():
            return [_step(event, stream_version, occurred_at, "resolved", event.level)]
        case PetitionReopened():
            return [
                _step(
                    event,
                    stream_version,
                    occurred_at,
                    "reopened",
                    event.level,
                    deadline_at=event.deadline_at,
                )
            ]
        case PetitionEscalated():
            return [
                _step(
                    event,
                    stream_version,
                    occurred_at,
                    "escalated",
                    event.from_level,
                    to_level=event.to_level,
                    to_holder_id=event.to_holder_id,
                    reason=event.reason.value,
                    deadline_at=event.deadline_at,
                )
            ]
        case PetitionMarkedOverdue():
            return [_step(event, stream_version, occurred_at, "marked_overdue", event.level)]
        case WardReportSubmitted():
            return [
                Write(
                    "submission",
                    (
                        event.ward_id,
                        event.month,
                        event.submitted_at,
                        event.due_at,
                        event.on_time,
                        event.submitted_by,
                    ),
                )
            ]
        case OrientationIssued():
            return [
                Write(
                    "orientation",
                    (
                        event.orientation_id,
                        event.ward_id,
                        event.month,
                        json.dumps(event.topics, ensure_ascii=False),
                        event.issued_at,
                        event.on_time,
                    ),
                )
            ]
    return []


def _step(
    event: PetitionAcknowledged
    | PetitionResolved
    | PetitionReopened
    | PetitionEscalated
    | PetitionMarkedOverdue,
    version: int,
    at: datetime,
    kind: str,
    level: str | None,
    to_level: str | None = None,
    to_holder_id: str | None = None,
    reason: str | None = None,
    deadline_at: datetime | None = None,
) -> Write:
    return Write(
        "petition_step",
        (
            event.petition_id,
            version,
            event.ward_id,
            at,
            kind,
            level,
            to_level,
            to_holder_id,
            reason,
            deadline_at,
        ),
    )
