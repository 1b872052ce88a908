"""An event copied from its validated command equals the one validated again, field for
field and byte for byte; a command whose fields differ from its event's is validated."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pydantic import BaseModel

from services.meetings.domain.facts import _same_fields, event_from
from shared.clock import LOCAL_TZ
from shared.contract import events as ev
from shared.contract.commands import (
    AdmitMember,
    AdoptResolution,
    CancelMeeting,
    Command,
    CompleteTask,
    ExemptMember,
    RegisterCell,
    RescheduleMeeting,
    ScheduleMeeting,
    TransferMember,
)

START = datetime(2026, 12, 3, 19, 30, tzinfo=LOCAL_TZ)
MEETING = {
    "meeting_id": "nam-ngan.to-01.2026-12",
    "ward_id": "nam-ngan",
    "cell_id": "nam-ngan.to-01",
}
CELL = {"ward_id": "nam-ngan", "cell_id": "nam-ngan.to-01"}

CASES: list[tuple[Command, type[BaseModel]]] = [
    (
        ScheduleMeeting.model_validate(
            {**MEETING, "scheduled_start": START, "agenda": ["Quán triệt nghị quyết"]}
        ),
        ev.MeetingScheduled,
    ),
    (ScheduleMeeting.model_validate({**MEETING, "scheduled_start": START}), ev.MeetingScheduled),
    (
        RescheduleMeeting.model_validate({**MEETING, "scheduled_start": START, "reason": "mưa"}),
        ev.MeetingRescheduled,
    ),
    (CancelMeeting.model_validate({**MEETING, "reason": "bão"}), ev.MeetingCancelled),
    (
        AdoptResolution.model_validate(
            {
                **MEETING,
                "resolution_id": "nq-1",
                "title": "Nghị quyết tháng 12",
                "votes_for": 9,
                "votes_against": 1,
                "tasks": [
                    {
                        "task_id": "t-1",
                        "description": "Sửa đường",
                        "assignee": "Tổ 1",
                        "due_on": date(2027, 1, 15),
                    }
                ],
            }
        ),
        ev.ResolutionAdopted,
    ),
    (
        CompleteTask.model_validate(
            {**MEETING, "resolution_id": "nq-1", "task_id": "t-1", "completed_on": date(2027, 1, 2)}
        ),
        ev.TaskCompleted,
    ),
    (RegisterCell.model_validate({**CELL, "name": "Chi bộ tổ 1"}), ev.CellRegistered),
    (
        AdmitMember.model_validate({**CELL, "member_id": "dv-1", "full_name": "Nguyễn Văn A"}),
        ev.MemberAdmitted,
    ),
    (
        ExemptMember.model_validate(
            {**CELL, "member_id": "dv-1", "exempt_from": date(2026, 12, 1), "reason": "ốm"}
        ),
        ev.MemberExempted,
    ),
    (
        TransferMember.model_validate(
            {**CELL, "member_id": "dv-1", "to_cell_id": "nam-ngan.to-02"}
        ),
        ev.MemberTransferredOut,
    ),
]


@pytest.mark.parametrize(("cmd", "event_type"), CASES, ids=lambda x: type(x).__name__)
def test_copied_event_equals_the_validated_one(cmd: Command, event_type: type[BaseModel]) -> None:
    assert _same_fields(type(cmd), event_type)  # the fast path is taken
    copied = event_from(cmd, event_type)  # type: ignore[type-var]
    validated = event_type(**cmd.model_dump())
    assert copied == validated
    assert copied.model_dump_json() == validated.model_dump_json()
    assert copied.model_fields_set == validated.model_fields_set


def test_copied_lists_are_not_shared_with_the_command() -> None:
    cmd, event_type = CASES[0]
    copied = event_from(cmd, event_type)  # type: ignore[type-var]
    assert copied.agenda == cmd.agenda and copied.agenda is not cmd.agenda  # type: ignore[attr-defined]


class _Stricter(ev.DomainEvent):
    event_type = "Stricter"
    meeting_id: str
    ward_id: str
    cell_id: str
    kind: ev.MeetingKind
    scheduled_start: datetime
    agenda: list[str]
    location: str | None = None
    orientation_id: str | None = None


def test_an_event_whose_fields_differ_is_validated() -> None:
    cmd, _ = CASES[0]
    assert not _same_fields(type(cmd), _Stricter)  # Identifier is not a plain str
    assert event_from(cmd, _Stricter).meeting_id == cmd.meeting_id  # type: ignore[attr-defined]
