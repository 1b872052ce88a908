"""Commands: what a caller asks the write side to do. They may be rejected."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.contract.events import (
    AttendanceEntry,
    MeetingKind,
    MemberStatus,
    OfficialRole,
    PetitionCategory,
    ResolutionTask,
)
from shared.contract.types import (
    EARLIEST_DAY,
    LATEST_DAY,
    ContractDate,
    ContractDatetime,
    EmailLike,
    Identifier,
    Month,
    ShortText,
)


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    command_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        # PostgreSQL's text and jsonb cannot hold U+0000: a command carrying one would
        # fail at the write, so it is refused here, at either door, with the reason.
        if _has_nul(self.__dict__.values()):
            raise ValueError("text must not contain the NUL character (U+0000)")
        return self

    def scope(self) -> tuple[str, str | None]:
        """The (ward id, cell id) the command acts on, for authorisation."""
        fields = self.__dict__  # each command type names its own ward (and maybe cell)
        return fields["ward_id"], fields.get("cell_id")


def _has_nul(values: Any) -> bool:
    for value in values:
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, BaseModel):
            if _has_nul(value.__dict__.values()):
                return True
        elif isinstance(value, list | tuple) and _has_nul(value):
            return True
    return False


class ScheduleMeeting(Command):
    """Schedule a cell's meeting. ``meeting_id`` is chosen by the caller, so a retry is safe."""

    command_type: ClassVar[str] = "ScheduleMeeting"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    kind: MeetingKind = MeetingKind.REGULAR
    scheduled_start: ContractDatetime
    agenda: list[ShortText] = Field(default_factory=list, max_length=50)
    location: ShortText | None = None
    orientation_id: Identifier | None = None


class RegisterCell(Command):
    command_type: ClassVar[str] = "RegisterCell"

    cell_id: Identifier
    ward_id: Identifier
    name: ShortText
    meeting_day: int = Field(3, ge=1, le=28)
    roll_calls: int = Field(1, ge=1, le=2)


class AdmitMember(Command):
    command_type: ClassVar[str] = "AdmitMember"

    cell_id: Identifier
    ward_id: Identifier
    member_id: Identifier
    full_name: ShortText
    status: MemberStatus = MemberStatus.FULL
    transferred_from_cell_id: Identifier | None = None


class ExemptMember(Command):
    command_type: ClassVar[str] = "ExemptMember"

    cell_id: Identifier
    ward_id: Identifier
    member_id: Identifier
    exempt_from: ContractDate
    exempt_until: ContractDate | None = None
    reason: ShortText


class TransferMember(Command):
    """Take a member off this cell's roll; the receiving cell admits them with AdmitMember."""

    command_type: ClassVar[str] = "TransferMember"

    cell_id: Identifier
    ward_id: Identifier
    member_id: Identifier
    to_cell_id: Identifier


class RescheduleMeeting(Command):
    command_type: ClassVar[str] = "RescheduleMeeting"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    scheduled_start: ContractDatetime
    reason: ShortText


class CancelMeeting(Command):
    command_type: ClassVar[str] = "CancelMeeting"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    reason: ShortText


class OpenMeeting(Command):
    """Open the meeting with the first roll call. Exempt members may be left out: they are
    listed as exempt automatically."""

    command_type: ClassVar[str] = "OpenMeeting"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    opened_at: ContractDatetime
    roll_call: list[AttendanceEntry] = Field(max_length=500)
    supervisor_present: bool = False


class AdoptResolution(Command):
    command_type: ClassVar[str] = "AdoptResolution"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    resolution_id: Identifier
    title: ShortText
    votes_for: int = Field(ge=0)
    votes_against: int = Field(0, ge=0)
    votes_abstain: int = Field(0, ge=0)
    tasks: list[ResolutionTask] = Field(default_factory=list, max_length=50)

    @field_validator("tasks")
    @classmethod
    def _due_in_the_contract_years(cls, tasks: list[ResolutionTask]) -> list[ResolutionTask]:
        # The bound of every other date of the contract; ResolutionTask is the event's
        # model too, and events already stored are not validated again against it.
        for task in tasks:
            if not EARLIEST_DAY <= task.due_on <= LATEST_DAY:
                raise ValueError(f"due_on must be between {EARLIEST_DAY} and {LATEST_DAY}")
        return tasks


class CompleteTask(Command):
    command_type: ClassVar[str] = "CompleteTask"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    resolution_id: Identifier
    task_id: Identifier
    completed_on: ContractDate


class CloseMeeting(Command):
    command_type: ClassVar[str] = "CloseMeeting"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    closed_at: ContractDatetime
    second_roll_call: list[AttendanceEntry] | None = Field(default=None, max_length=500)
    speakers: list[Identifier] = Field(default_factory=list, max_length=500)
    minutes_recorded: bool = True
    previous_resolution_carried_out: bool | None = None


class RegisterUnit(Command):
    """Register a unit above the cell (ward/commune, district, province) in the tree."""

    command_type: ClassVar[str] = "RegisterUnit"

    unit_id: Identifier
    parent_id: Identifier | None = None
    level: Identifier
    name: ShortText

    def scope(self) -> tuple[str, str | None]:
        # Registering a unit is an act of the unit above it (or of the root itself).
        return self.parent_id or self.unit_id, None


class AppointOfficial(Command):
    command_type: ClassVar[str] = "AppointOfficial"

    cell_id: Identifier
    ward_id: Identifier
    role: OfficialRole
    person_id: Identifier
    full_name: ShortText


class AppointUnitOfficial(Command):
    """Appoint the secretary or deputy of a unit above the cell."""

    command_type: ClassVar[str] = "AppointUnitOfficial"

    unit_id: Identifier
    role: OfficialRole
    person_id: Identifier
    full_name: ShortText

    def scope(self) -> tuple[str, str | None]:
        return self.unit_id, None


class SetContactDetails(Command):
    """Record or correct a person's phone and e-mail (kept in the erasable store)."""

    command_type: ClassVar[str] = "SetContactDetails"

    person_id: Identifier
    ward_id: Identifier
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9 .-]{8,20}$")
    email: EmailLike | None = None


class EraseContactDetails(Command):
    """Erase a person's contact details, as personal data law requires."""

    command_type: ClassVar[str] = "EraseContactDetails"

    person_id: Identifier
    ward_id: Identifier


class IssueOrientation(Command):
    command_type: ClassVar[str] = "IssueOrientation"

    orientation_id: Identifier
    ward_id: Identifier
    month: Month
    topics: list[ShortText] = Field(min_length=1, max_length=30)


class SubmitWardReport(Command):
    """The ward signs and sends its monthly report (báo cáo kết quả sinh hoạt chi bộ tháng).

    Due before the 10th of the next month, Asia/Ho_Chi_Minh; a late one is still taken.
    """

    command_type: ClassVar[str] = "SubmitWardReport"

    ward_id: Identifier
    month: Month
    submitted_by: ShortText  # the official who signs it


class RaisePetition(Command):
    command_type: ClassVar[str] = "RaisePetition"

    petition_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    meeting_id: Identifier | None = None
    category: PetitionCategory
    place: ShortText
    raised_by: ShortText
    text: str = Field(min_length=1, max_length=4000)


class AcknowledgePetition(Command):
    command_type: ClassVar[str] = "AcknowledgePetition"

    petition_id: Identifier
    ward_id: Identifier


class ResolvePetition(Command):
    command_type: ClassVar[str] = "ResolvePetition"

    petition_id: Identifier
    ward_id: Identifier
    response: str = Field(min_length=1, max_length=4000)


class EscalatePetition(Command):
    """Send a petition up one level by hand: it is beyond this level's authority."""

    command_type: ClassVar[str] = "EscalatePetition"

    petition_id: Identifier
    ward_id: Identifier
    note: ShortText


class EscalateOverduePetition(Command):
    """Issued by the deadline scheduler. Does nothing if the petition no longer has this
    deadline (resolved, escalated, reopened meanwhile): the first to commit wins."""

    command_type: ClassVar[str] = "EscalateOverduePetition"

    petition_id: Identifier
    ward_id: Identifier
    deadline_at: ContractDatetime


class ReopenPetition(Command):
    """Residents are not satisfied with the response: the petition is open again."""

    command_type: ClassVar[str] = "ReopenPetition"

    petition_id: Identifier
    ward_id: Identifier
    reason: ShortText


COMMAND_TYPES: dict[str, type[Command]] = {
    cls.command_type: cls
    for cls in (
        RegisterCell,
        AdmitMember,
        ExemptMember,
        TransferMember,
        ScheduleMeeting,
        RescheduleMeeting,
        CancelMeeting,
        OpenMeeting,
        AdoptResolution,
        CompleteTask,
        CloseMeeting,
        RegisterUnit,
        AppointOfficial,
        AppointUnitOfficial,
        SetContactDetails,
        EraseContactDetails,
        IssueOrientation,
        SubmitWardReport,
        RaisePetition,
        AcknowledgePetition,
        ResolvePetition,
        EscalatePetition,
        EscalateOverduePetition,
        ReopenPetition,
    )
}
