"""Domain events: what has happened. Each type carries its own schema version."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contract.types import Identifier, ShortText
from shared.contract.upcasting import upcast


class DomainEvent(BaseModel):
    """Base of every event payload. Frozen: an event is a fact and never changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class MeetingKind(StrEnum):
    REGULAR = "regular"  # sinh hoạt thường kỳ
    THEMATIC = "thematic"  # sinh hoạt chuyên đề
    COMMITTEE = "committee"  # họp chi ủy


class ResolutionTask(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: Identifier
    description: ShortText
    assignee: ShortText
    due_on: date


class MeetingScheduled(DomainEvent):
    event_type: ClassVar[str] = "MeetingScheduled"
    schema_version: ClassVar[int] = 2  # v2 added ``location``

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    kind: MeetingKind
    scheduled_start: AwareDatetime
    agenda: list[ShortText] = Field(default_factory=list, max_length=50)
    location: ShortText | None = None
    orientation_id: Identifier | None = None  # the ward's orientation for the month


class MemberStatus(StrEnum):
    FULL = "full"  # đảng viên chính thức
    PROBATIONARY = "probationary"  # đảng viên dự bị


class Attendance(StrEnum):
    PRESENT = "present"  # có mặt
    ABSENT_EXCUSED = "absent_excused"  # vắng có lý do
    ABSENT_UNEXCUSED = "absent_unexcused"  # vắng không lý do
    EXEMPT = "exempt"  # miễn sinh hoạt: listed, not counted


class AttendanceEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    member_id: Identifier
    status: Attendance
    reason: ShortText | None = None


# -- cells and their members ------------------------------------------------------------


class CellRegistered(DomainEvent):
    event_type: ClassVar[str] = "CellRegistered"

    cell_id: Identifier
    ward_id: Identifier
    name: ShortText
    meeting_day: int = Field(ge=1, le=28)  # day of the month of the regular meeting
    roll_calls: int = Field(ge=1, le=2)  # innovating cells call the roll at the end too


class MemberAdmitted(DomainEvent):
    event_type: ClassVar[str] = "MemberAdmitted"

    cell_id: Identifier
    ward_id: Identifier
    member_id: Identifier
    full_name: ShortText
    status: MemberStatus
    transferred_from_cell_id: Identifier | None = None


class MemberExempted(DomainEvent):
    event_type: ClassVar[str] = "MemberExempted"

    cell_id: Identifier
    ward_id: Identifier
    member_id: Identifier
    exempt_from: date
    exempt_until: date | None = None  # open-ended (old age) when absent
    reason: ShortText


class MemberTransferredOut(DomainEvent):
    event_type: ClassVar[str] = "MemberTransferredOut"

    cell_id: Identifier
    ward_id: Identifier
    member_id: Identifier
    to_cell_id: Identifier


# -- meetings ---------------------------------------------------------------------------


class MeetingRescheduled(DomainEvent):
    event_type: ClassVar[str] = "MeetingRescheduled"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    scheduled_start: AwareDatetime
    reason: ShortText


class MeetingCancelled(DomainEvent):
    event_type: ClassVar[str] = "MeetingCancelled"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    reason: ShortText


class MeetingOpened(DomainEvent):
    """The meeting began, with the first roll call."""

    event_type: ClassVar[str] = "MeetingOpened"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    opened_at: AwareDatetime
    roll_call: list[AttendanceEntry]
    supervisor_present: bool  # the ward committee member in charge attended


class ResolutionAdopted(DomainEvent):
    event_type: ClassVar[str] = "ResolutionAdopted"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    resolution_id: Identifier
    title: ShortText
    votes_for: int = Field(ge=0)
    votes_against: int = Field(ge=0)
    votes_abstain: int = Field(ge=0)
    tasks: list[ResolutionTask] = Field(default_factory=list, max_length=50)


class TaskCompleted(DomainEvent):
    event_type: ClassVar[str] = "TaskCompleted"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    resolution_id: Identifier
    task_id: Identifier
    completed_on: date


class MeetingClosed(DomainEvent):
    """The meeting ended; cells that call the roll twice record the second roll call."""

    event_type: ClassVar[str] = "MeetingClosed"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    closed_at: AwareDatetime
    second_roll_call: list[AttendanceEntry] | None = None
    speakers: list[Identifier] = Field(default_factory=list)
    minutes_recorded: bool
    previous_resolution_carried_out: bool | None = None  # None: no previous resolution


class OfficialRole(StrEnum):
    SECRETARY = "secretary"  # bí thư chi bộ
    DEPUTY_SECRETARY = "deputy_secretary"  # phó bí thư chi bộ
    WARD_MEMBER_IN_CHARGE = "ward_member_in_charge"  # đảng ủy viên phụ trách chi bộ


class OfficialAppointed(DomainEvent):
    """Someone takes an office of the cell; the previous holder, if any, leaves it."""

    event_type: ClassVar[str] = "OfficialAppointed"

    cell_id: Identifier
    ward_id: Identifier
    role: OfficialRole
    person_id: Identifier  # a member of the cell, or for the one in charge a ward official
    full_name: ShortText
    replaces_person_id: Identifier | None = None


class UnitOfficialAppointed(DomainEvent):
    """An office of a unit above the cell (the ward's or the district's secretary, say)."""

    event_type: ClassVar[str] = "UnitOfficialAppointed"

    unit_id: Identifier
    ward_id: Identifier  # the unit itself: the Kafka key of its events
    role: OfficialRole
    person_id: Identifier
    full_name: ShortText
    replaces_person_id: Identifier | None = None


class ContactDetailsChanged(DomainEvent):
    """A person's phone or e-mail changed. The values are personal data: they live in the
    erasable contact store, never in this log; the event says only what changed."""

    event_type: ClassVar[str] = "ContactDetailsChanged"

    person_id: Identifier
    ward_id: Identifier
    changed: list[str]  # "phone", "email"


class ContactDetailsErased(DomainEvent):
    event_type: ClassVar[str] = "ContactDetailsErased"

    person_id: Identifier
    ward_id: Identifier


class OrientationIssued(DomainEvent):
    """The ward's brief and topics for a month's cell meetings (định hướng sinh hoạt)."""

    event_type: ClassVar[str] = "OrientationIssued"

    orientation_id: Identifier
    ward_id: Identifier
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    topics: list[ShortText] = Field(min_length=1, max_length=30)
    issued_at: AwareDatetime
    on_time: bool  # issued before the 1st of the month, Asia/Ho_Chi_Minh


class WardReportSubmitted(DomainEvent):
    """The ward's monthly report was signed and sent up."""

    event_type: ClassVar[str] = "WardReportSubmitted"

    ward_id: Identifier
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    submitted_at: AwareDatetime
    due_at: AwareDatetime  # the 10th of the next month, 00:00 Asia/Ho_Chi_Minh
    on_time: bool
    submitted_by: ShortText


# -- the organisation tree ---------------------------------------------------------------


class UnitRegistered(DomainEvent):
    """A unit of the deployment's ladder above the cell: ward or commune, district,
    province. ``ward_id`` is the unit itself (the Kafka key)."""

    event_type: ClassVar[str] = "UnitRegistered"

    unit_id: Identifier
    ward_id: Identifier
    parent_id: Identifier | None = None
    level: Identifier
    name: ShortText


# -- petitions (kiến nghị) ----------------------------------------------------------------


class PetitionCategory(StrEnum):
    LAND = "land"  # đất đai
    ROADS = "roads_infrastructure"  # giao thông, hạ tầng
    SECURITY = "security_order"  # an ninh, trật tự
    ENVIRONMENT = "environment"  # môi trường
    SOCIAL_POLICY = "social_policy"  # chính sách xã hội
    OTHER = "other"


class EscalationReason(StrEnum):
    DEADLINE = "deadline"  # not resolved in time
    BEYOND_AUTHORITY = "beyond_authority"  # vượt thẩm quyền


class PetitionRaised(DomainEvent):
    event_type: ClassVar[str] = "PetitionRaised"

    petition_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    meeting_id: Identifier | None = None
    category: PetitionCategory
    place: ShortText
    raised_by: ShortText
    text: str = Field(min_length=1, max_length=4000)
    raised_at: AwareDatetime
    level: Identifier  # the ladder level that holds it: the first, the cell
    holder_id: Identifier  # the unit at that level
    deadline_at: AwareDatetime
    recurring: bool = False
    similar_petition_ids: list[Identifier] = Field(default_factory=list)


class PetitionAcknowledged(DomainEvent):
    event_type: ClassVar[str] = "PetitionAcknowledged"

    petition_id: Identifier
    ward_id: Identifier
    level: Identifier
    acknowledged_at: AwareDatetime


class PetitionResolved(DomainEvent):
    event_type: ClassVar[str] = "PetitionResolved"

    petition_id: Identifier
    ward_id: Identifier
    level: Identifier
    holder_id: Identifier
    response: str = Field(min_length=1, max_length=4000)
    resolved_at: AwareDatetime


class PetitionEscalated(DomainEvent):
    event_type: ClassVar[str] = "PetitionEscalated"

    petition_id: Identifier
    ward_id: Identifier
    from_level: Identifier
    to_level: Identifier
    to_holder_id: Identifier | None  # the unit of that level; None only in older events
    reason: EscalationReason
    note: ShortText | None = None
    missed_deadline_at: AwareDatetime | None = None
    deadline_at: AwareDatetime
    escalated_at: AwareDatetime


class PetitionMarkedOverdue(DomainEvent):
    """The deadline passed at the top of the ladder: nowhere left to go."""

    event_type: ClassVar[str] = "PetitionMarkedOverdue"

    petition_id: Identifier
    ward_id: Identifier
    level: Identifier
    missed_deadline_at: AwareDatetime
    marked_at: AwareDatetime


class PetitionReopened(DomainEvent):
    event_type: ClassVar[str] = "PetitionReopened"

    petition_id: Identifier
    ward_id: Identifier
    level: Identifier
    reason: ShortText
    deadline_at: AwareDatetime
    reopened_at: AwareDatetime


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.event_type: cls
    for cls in (
        CellRegistered,
        MemberAdmitted,
        MemberExempted,
        MemberTransferredOut,
        MeetingScheduled,
        MeetingRescheduled,
        MeetingCancelled,
        MeetingOpened,
        ResolutionAdopted,
        TaskCompleted,
        MeetingClosed,
        UnitRegistered,
        OfficialAppointed,
        UnitOfficialAppointed,
        ContactDetailsChanged,
        ContactDetailsErased,
        OrientationIssued,
        WardReportSubmitted,
        PetitionRaised,
        PetitionAcknowledged,
        PetitionResolved,
        PetitionEscalated,
        PetitionMarkedOverdue,
        PetitionReopened,
    )
}


def load_event(event_type: str, schema_version: int, payload: dict[str, Any]) -> DomainEvent:
    """A stored or received payload as the current model, upcast from older versions."""
    cls = EVENT_TYPES[event_type]
    return cls.model_validate(upcast(event_type, schema_version, payload, cls.schema_version))
