"""Which row writes each event makes in the report projections. Pure.

A batch's writes are run grouped by statement, in the fixed order of ``STATEMENTS``,
which is each row's life order (a meeting is inserted before it is opened, a stay on
the roll before it ends). That makes a batch of any size give the same rows as the same
events one by one, so a rebuild with large batches equals the live projection. Where a
key can come back (a member re-admitted to a cell), the write names the stream version
it applies to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple

from shared.contract.envelope import Envelope
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


class Write(NamedTuple):
    statement: str
    args: tuple[Any, ...]


def writes_for(event: DomainEvent, occurred_at: datetime, stream_version: int) -> list[Write]:
    """The row writes of one event; [] for events the reports do not use."""
    # By exact type: a class pattern per event would be an ABC isinstance check each.
    make = _WRITES.get(type(event))
    return make(event, occurred_at, stream_version) if make is not None else []


def batch_writes_for(items: Iterable[tuple[Envelope, DomainEvent]]) -> list[Write]:
    """The row writes of a batch's events, in order: ``writes_for`` of each, in one loop."""
    writes: list[Write] = []
    get = _WRITES.get
    for envelope, event in items:
        make = get(type(event))
        if make is not None:
            writes += make(event, envelope.occurred_at, envelope.stream_version)
    return writes


def _unit(event: UnitRegistered, occurred_at: datetime, stream_version: int) -> list[Write]:
    return [Write("unit", (event.unit_id, event.level, event.name, event.parent_id))]


def _cell(event: CellRegistered, occurred_at: datetime, stream_version: int) -> list[Write]:
    return [
        Write(
            "cell",
            (event.cell_id, event.ward_id, event.name, event.meeting_day, event.roll_calls),
        )
    ]


def _member_admitted(
    event: MemberAdmitted, occurred_at: datetime, stream_version: int
) -> list[Write]:
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


def _member_left(
    event: MemberTransferredOut, occurred_at: datetime, stream_version: int
) -> list[Write]:
    return [Write("member_left", (event.cell_id, event.member_id, stream_version, occurred_at))]


def _exemption(event: MemberExempted, occurred_at: datetime, stream_version: int) -> list[Write]:
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


def _meeting_scheduled(
    event: MeetingScheduled, occurred_at: datetime, stream_version: int
) -> list[Write]:
    return [
        Write(
            "meeting_scheduled",
            (
                event.meeting_id,
                event.ward_id,
                event.cell_id,
                event.kind.value,
                event.agenda,
                event.scheduled_start,
            ),
        )
    ]


def _meeting_rescheduled(
    event: MeetingRescheduled, occurred_at: datetime, stream_version: int
) -> list[Write]:
    return [Write("meeting_rescheduled", (event.meeting_id, event.scheduled_start))]


def _meeting_cancelled(
    event: MeetingCancelled, occurred_at: datetime, stream_version: int
) -> list[Write]:
    return [Write("meeting_cancelled", (event.meeting_id, event.reason))]


def _meeting_opened(
    event: MeetingOpened, occurred_at: datetime, stream_version: int
) -> list[Write]:
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


def _meeting_closed(
    event: MeetingClosed, occurred_at: datetime, stream_version: int
) -> list[Write]:
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


def _resolution(
    event: ResolutionAdopted, occurred_at: datetime, stream_version: int
) -> list[Write]:
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


def _task_completed(
    event: TaskCompleted, occurred_at: datetime, stream_version: int
) -> list[Write]:
    return [Write("task_completed", (event.resolution_id, event.task_id, event.completed_on))]


def _petition(event: PetitionRaised, occurred_at: datetime, stream_version: int) -> list[Write]:
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


def _acknowledged(
    event: PetitionAcknowledged, occurred_at: datetime, stream_version: int
) -> list[Write]:
    return [_step(event, stream_version, occurred_at, "acknowledged", event.level)]


def _resolved(event: PetitionResolved, occurred_at: datetime, stream_version: int) -> list[Write]:
    return [_step(event, stream_version, occurred_at, "resolved", event.level)]


def _reopened(event: PetitionReopened, occurred_at: datetime, stream_version: int) -> list[Write]:
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


def _escalated(event: PetitionEscalated, occurred_at: datetime, stream_version: int) -> list[Write]:
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


def _marked_overdue(
    event: PetitionMarkedOverdue, occurred_at: datetime, stream_version: int
) -> list[Write]:
    return [_step(event, stream_version, occurred_at, "marked_overdue", event.level)]


def _submission(
    event: WardReportSubmitted, occurred_at: datetime, stream_version: int
) -> list[Write]:
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


def _orientation(
    event: OrientationIssued, occurred_at: datetime, stream_version: int
) -> list[Write]:
    return [
        Write(
            "orientation",
            (
                event.orientation_id,
                event.ward_id,
                event.month,
                event.topics,
                event.issued_at,
                event.on_time,
            ),
        )
    ]


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


_WRITES: dict[type[DomainEvent], Callable[[Any, datetime, int], list[Write]]] = {
    UnitRegistered: _unit,
    CellRegistered: _cell,
    MemberAdmitted: _member_admitted,
    MemberTransferredOut: _member_left,
    MemberExempted: _exemption,
    MeetingScheduled: _meeting_scheduled,
    MeetingRescheduled: _meeting_rescheduled,
    MeetingCancelled: _meeting_cancelled,
    MeetingOpened: _meeting_opened,
    MeetingClosed: _meeting_closed,
    ResolutionAdopted: _resolution,
    TaskCompleted: _task_completed,
    PetitionRaised: _petition,
    PetitionAcknowledged: _acknowledged,
    PetitionResolved: _resolved,
    PetitionReopened: _reopened,
    PetitionEscalated: _escalated,
    PetitionMarkedOverdue: _marked_overdue,
    WardReportSubmitted: _submission,
    OrientationIssued: _orientation,
}
