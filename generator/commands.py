"""The generated district and month as the ordered list of contract commands.

Order: the organisation first (units top-down, then per ward its cells, their members
and officials, transfers between cells and exemptions), then the month's commands in time order
(schedules before the 1st, then openings, petitions, resolutions, closings, completed
tasks, petition follow-ups and the month's changes to the rolls, as they happened). Each
command is the upstream system's message: it carries the time it happened
(``occurred_at``), a ``message_id`` derived from the id prefix (from the seed), the month
and the command's position, and its record key (``command.scope()[0]``: the ward id; for
RegisterUnit the parent unit, or the unit itself at the root).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from generator.model import Cell, District, Member, Ward
from generator.month import LOCAL_TZ, Meeting, Month, RollChange, RollEntry, at
from shared.contract.commands import (
    AcknowledgePetition,
    AdmitMember,
    AdoptResolution,
    AppointOfficial,
    AppointUnitOfficial,
    CancelMeeting,
    CloseMeeting,
    Command,
    CompleteTask,
    EscalatePetition,
    ExemptMember,
    OpenMeeting,
    RaisePetition,
    RegisterCell,
    RegisterUnit,
    ReopenPetition,
    RescheduleMeeting,
    ResolvePetition,
    ScheduleMeeting,
    SetContactDetails,
    TransferMember,
)
from shared.contract.events import (
    Attendance,
    AttendanceEntry,
    MeetingKind,
    MemberStatus,
    OfficialRole,
    PetitionCategory,
    ResolutionTask,
)
from shared.contract.inbound import InboundCommand

SOURCE = "chibo-demo"
_NAMESPACE = uuid.UUID("5d1c0a52-4b8e-4f1e-9c39-6a0f0c2e7d11")

# The one event each accepted command of the generator appends.
EVENT_OF = {
    "RegisterUnit": "UnitRegistered",
    "RegisterCell": "CellRegistered",
    "AdmitMember": "MemberAdmitted",
    "ExemptMember": "MemberExempted",
    "AppointOfficial": "OfficialAppointed",
    "AppointUnitOfficial": "UnitOfficialAppointed",
    "TransferMember": "MemberTransferredOut",
    "ScheduleMeeting": "MeetingScheduled",
    "RescheduleMeeting": "MeetingRescheduled",
    "CancelMeeting": "MeetingCancelled",
    "OpenMeeting": "MeetingOpened",
    "AdoptResolution": "ResolutionAdopted",
    "CompleteTask": "TaskCompleted",
    "CloseMeeting": "MeetingClosed",
    "RaisePetition": "PetitionRaised",
    "AcknowledgePetition": "PetitionAcknowledged",
    "ResolvePetition": "PetitionResolved",
    "EscalatePetition": "PetitionEscalated",
    "ReopenPetition": "PetitionReopened",
    "SetContactDetails": "ContactDetailsChanged",
}

# Demo addresses: deterministic, on a domain of the local SMTP sink.
CONTACT_DOMAIN = "thu.chibo.local"


def contact_email(person_id: str) -> str:
    return f"{person_id}@{CONTACT_DOMAIN}"


@dataclass(frozen=True)
class PlannedCommand:
    position: int
    message_id: str
    key: str
    occurred_at: datetime
    stage: int  # 0..k-1: the units, level by level from the top; k: everything else
    command: Command
    correlation_id: uuid.UUID

    def envelope(self) -> InboundCommand:
        return InboundCommand(
            message_id=self.message_id,
            type=self.command.command_type,
            version=self.command.schema_version,
            occurred_at=self.occurred_at,
            source=SOURCE,
            correlation_id=self.correlation_id,
            payload=self.command.model_dump(mode="json"),
        )

    def envelope_json(self) -> dict[str, Any]:
        return self.envelope().model_dump(mode="json")


def build_commands(district: District, month: Month) -> list[PlannedCommand]:
    items: list[tuple[datetime, int, Command, str]] = []  # (time, stage, command, correlation)
    org_time = at(month.first_day - timedelta(days=10), 8)
    for depth, unit in enumerate(district.units):
        register = RegisterUnit(
            unit_id=unit.unit_id, parent_id=unit.parent_id, level=unit.level, name=unit.name
        )
        items.append((org_time, depth, register, unit.unit_id))
    ward_stage = len(district.units)
    rest = ward_stage + 1
    for ward in district.wards:
        # An Đảng bộ xã is a commune: its own level, reported like a ward (REPORT_WARD_LEVELS).
        level = "commune" if ward.kind == "xã" else "ward"
        register = RegisterUnit(
            unit_id=ward.unit_id, parent_id=ward.parent_id, level=level, name=ward.name
        )
        items.append((org_time, ward_stage, register, ward.unit_id))
    with_contact: set[str] = set()
    for ward in district.wards:
        ward_cells = {c.cell_id: c for c in ward.cells}
        # The ward committee's standing members hear of what reaches the ward (escalated
        # petitions, low attendance, its report): each is also in charge of cells, so
        # each gets an e-mail address below.
        for role, (person_id, name) in ward_officials(ward):
            appoint_unit = AppointUnitOfficial(
                unit_id=ward.unit_id, role=role, person_id=person_id, full_name=name
            )
            items.append((org_time, rest, appoint_unit, ward.unit_id))
        for cell in ward.cells:
            items.append((org_time, rest, _register_cell(cell), cell.cell_id))
            original = [m for m in cell.members if m.transferred_from is None]
            original += [t.member for t in district.transfers if t.from_cell == cell.cell_id]
            for member in sorted(original, key=lambda m: m.member_id):
                items.append((org_time, rest, _admit(cell, member), cell.cell_id))
            for role, person_id, name in _officials(cell):
                appoint = AppointOfficial(
                    cell_id=cell.cell_id,
                    ward_id=cell.ward_id,
                    role=role,
                    person_id=person_id,
                    full_name=name,
                )
                items.append((org_time, rest, appoint, cell.cell_id))
            # Every member and official gets an e-mail address (the erasable contact store).
            people = [m.member_id for m in original] + [p for _, p, _ in _officials(cell)]
            for person_id in people:
                if person_id not in with_contact:
                    with_contact.add(person_id)
                    contact = SetContactDetails(
                        person_id=person_id,
                        ward_id=cell.ward_id,
                        phone=None,
                        email=contact_email(person_id),
                    )
                    items.append((org_time, rest, contact, person_id))
        for t in district.transfers:
            if t.from_cell in ward_cells:
                transfer = TransferMember(
                    cell_id=t.from_cell,
                    ward_id=ward.unit_id,
                    member_id=t.member.member_id,
                    to_cell_id=t.to_cell,
                )
                items.append((org_time, rest, transfer, t.from_cell))
                items.append((org_time, rest, _admit(ward_cells[t.to_cell], t.member), t.to_cell))
        for cell in ward.cells:
            for member in cell.members:
                for e in member.exemptions:
                    exempt = ExemptMember(
                        cell_id=cell.cell_id,
                        ward_id=cell.ward_id,
                        member_id=member.member_id,
                        exempt_from=e.start,
                        exempt_until=e.end,
                        reason=e.reason,
                    )
                    items.append((org_time, rest, exempt, cell.cell_id))
    timed: list[tuple[datetime, Command, str]] = []
    for meeting in month.meetings:
        timed += _meeting_commands(meeting)
    for change in month.roll_changes:
        timed += _roll_change_commands(change)
    # Stable: at equal times, the order each meeting's commands were made in is kept.
    timed.sort(key=lambda t: t[0])
    items += [(when, rest, cmd, corr) for when, cmd, corr in timed]

    prefix = district.config.id_prefix
    planned = []
    for position, (when, stage, command, corr) in enumerate(items):
        planned.append(
            PlannedCommand(
                position=position,
                message_id=f"{prefix}:{month.label}:{position:06d}",
                key=command.scope()[0],
                occurred_at=when,
                stage=stage,
                command=command,
                correlation_id=uuid.uuid5(_NAMESPACE, f"{prefix}:{corr}"),
            )
        )
    return planned


def expected_events(commands: list[PlannedCommand]) -> dict[str, int]:
    """The events the service appends when every command is accepted: one each."""
    counts = Counter(EVENT_OF[c.command.command_type] for c in commands)
    return dict(sorted(counts.items()))


def ward_officials(ward: Ward) -> list[tuple[OfficialRole, tuple[str, str]]]:
    """The ward's secretary and deputy (bí thư, phó bí thư đảng ủy): the first two of its
    committee, (person id, name)."""
    roles = (OfficialRole.SECRETARY, OfficialRole.DEPUTY_SECRETARY)
    return list(zip(roles, ward.committee[:2], strict=False))


def _register_cell(cell: Cell) -> RegisterCell:
    return RegisterCell(
        cell_id=cell.cell_id,
        ward_id=cell.ward_id,
        name=cell.name,
        meeting_day=cell.meeting_day,
        roll_calls=cell.roll_calls,
    )


def _admit(cell: Cell, member: Member) -> AdmitMember:
    moved_in = member.transferred_from is not None and member.transferred_from != cell.cell_id
    return AdmitMember(
        cell_id=cell.cell_id,
        ward_id=cell.ward_id,
        member_id=member.member_id,
        full_name=member.full_name,
        status=MemberStatus.PROBATIONARY if member.probationary else MemberStatus.FULL,
        transferred_from_cell_id=member.transferred_from if moved_in else None,
    )


def _officials(cell: Cell) -> list[tuple[OfficialRole, str, str]]:
    roles = {"secretary": OfficialRole.SECRETARY, "deputy": OfficialRole.DEPUTY_SECRETARY}
    out = [(roles[m.role], m.member_id, m.full_name) for m in cell.members if m.role in roles]
    return [*out, (OfficialRole.WARD_MEMBER_IN_CHARGE, *cell.in_charge)]


def _roll_change_commands(change: RollChange) -> list[tuple[datetime, Command, str]]:
    """A move: off the old cell's roll, onto the new one's. A new member: admitted, with
    an e-mail address like everyone else's."""
    member = change.member
    admit = AdmitMember(
        cell_id=change.to_cell,
        ward_id=change.ward_id,
        member_id=member.member_id,
        full_name=member.full_name,
        status=MemberStatus.PROBATIONARY if member.probationary else MemberStatus.FULL,
        transferred_from_cell_id=change.from_cell,
    )
    if change.from_cell is None:
        contact = SetContactDetails(
            person_id=member.member_id,
            ward_id=change.ward_id,
            phone=None,
            email=contact_email(member.member_id),
        )
        return [(change.at, admit, change.to_cell), (change.at, contact, member.member_id)]
    transfer = TransferMember(
        cell_id=change.from_cell,
        ward_id=change.ward_id,
        member_id=member.member_id,
        to_cell_id=change.to_cell,
    )
    return [(change.at, transfer, change.from_cell), (change.at, admit, change.to_cell)]


def _roll(entries: list[RollEntry]) -> list[AttendanceEntry]:
    return [AttendanceEntry(member_id=e.member_id, status=Attendance(e.status), reason=e.reason)
            for e in entries]  # fmt: skip


def _meeting_commands(m: Meeting) -> list[tuple[datetime, Command, str]]:
    ids = {"meeting_id": m.meeting_id, "ward_id": m.ward_id, "cell_id": m.cell_id}
    out: list[tuple[datetime, Command, str]] = [
        (
            m.scheduled_at,
            ScheduleMeeting(
                **ids,
                kind=MeetingKind(m.kind),
                scheduled_start=m.scheduled_start,
                agenda=m.agenda,
                location=m.location,
                orientation_id=m.orientation_id,
            ),
            m.meeting_id,
        )
    ]
    if m.rescheduled_at is not None:
        assert m.rescheduled_start is not None and m.reschedule_reason is not None
        out.append(
            (
                m.rescheduled_at,
                RescheduleMeeting(
                    **ids, scheduled_start=m.rescheduled_start, reason=m.reschedule_reason
                ),
                m.meeting_id,
            )
        )
    if m.cancelled_at is not None:
        assert m.cancel_reason is not None
        out.append((m.cancelled_at, CancelMeeting(**ids, reason=m.cancel_reason), m.meeting_id))
    if m.opened_at is None:
        return out
    assert m.closed_at is not None
    out.append(
        (
            m.opened_at,
            OpenMeeting(
                **ids,
                opened_at=m.opened_at,
                roll_call=_roll(m.roll_call),
                supervisor_present=m.supervisor_present,
            ),
            m.meeting_id,
        )
    )
    for p in m.petitions:
        out.append(
            (
                p.raised_at,
                RaisePetition(
                    petition_id=p.petition_id,
                    ward_id=p.ward_id,
                    cell_id=p.cell_id,
                    meeting_id=p.meeting_id,
                    category=PetitionCategory(p.category),
                    place=p.place,
                    raised_by=p.raised_by,
                    text=p.text,
                ),
                m.meeting_id,
            )
        )
        pid = {"petition_id": p.petition_id, "ward_id": p.ward_id}
        if p.acknowledged_at is not None:
            out.append((p.acknowledged_at, AcknowledgePetition(**pid), m.meeting_id))
        if p.resolved_at is not None:
            assert p.response is not None
            out.append((p.resolved_at, ResolvePetition(**pid, response=p.response), m.meeting_id))
        if p.reopened_at is not None:
            assert p.reopen_reason is not None
            out.append((p.reopened_at, ReopenPetition(**pid, reason=p.reopen_reason), m.meeting_id))
        if p.escalated_at is not None:
            assert p.escalation_note is not None
            escalate = EscalatePetition(**pid, note=p.escalation_note)
            out.append((p.escalated_at, escalate, m.meeting_id))
    for r in m.resolutions:
        out.append(
            (
                r.adopted_at,
                AdoptResolution(
                    **ids,
                    resolution_id=r.resolution_id,
                    title=r.title,
                    votes_for=r.votes_for,
                    votes_against=r.votes_against,
                    votes_abstain=r.votes_abstain,
                    tasks=[
                        ResolutionTask(
                            task_id=t.task_id,
                            description=t.description,
                            assignee=t.assignee,
                            due_on=t.due_on,
                        )
                        for t in r.tasks
                    ],
                ),
                m.meeting_id,
            )
        )
        for t in r.tasks:
            if t.completed_at is not None:
                complete = CompleteTask(
                    **ids,
                    resolution_id=r.resolution_id,
                    task_id=t.task_id,
                    completed_on=t.completed_at.astimezone(LOCAL_TZ).date(),
                )
                out.append((t.completed_at, complete, m.meeting_id))
    out.append(
        (
            m.closed_at,
            CloseMeeting(
                **ids,
                closed_at=m.closed_at,
                second_roll_call=_roll(m.second_roll_call)
                if m.second_roll_call is not None
                else None,
                speakers=m.speakers,
                minutes_recorded=m.minutes_recorded,
                previous_resolution_carried_out=m.previous_resolution_carried_out,
            ),
            m.meeting_id,
        )
    )
    return out
