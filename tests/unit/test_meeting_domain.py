"""Given events, when a command, then events or a rejection: the meeting aggregate."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from services.meetings.domain.errors import DomainRejection
from services.meetings.domain.meeting import Meeting
from shared.clock import LOCAL_TZ
from shared.contract import MeetingKind, MeetingScheduled, ScheduleMeeting
from tests.unit.test_meeting_lifecycle import a_cell

START = datetime(2026, 12, 3, 19, 30, tzinfo=LOCAL_TZ)


def command(**overrides: object) -> ScheduleMeeting:
    fields: dict[str, object] = {
        "meeting_id": "nam-ngan.to-01.2026-12",
        "ward_id": "nam-ngan",
        "cell_id": "nam-ngan.to-01",
        "scheduled_start": START,
        "agenda": ["Quán triệt nghị quyết"],
    }
    return ScheduleMeeting.model_validate({**fields, **overrides})


def test_given_no_history_when_scheduled_then_meeting_scheduled() -> None:
    events = Meeting.replay("m", []).schedule(command(), a_cell())
    assert events == [
        MeetingScheduled(
            meeting_id="nam-ngan.to-01.2026-12",
            ward_id="nam-ngan",
            cell_id="nam-ngan.to-01",
            kind=MeetingKind.REGULAR,
            scheduled_start=START,
            agenda=["Quán triệt nghị quyết"],
        )
    ]


def test_given_scheduled_when_scheduled_again_then_rejected_in_vietnamese() -> None:
    history = Meeting.replay("m", []).schedule(command(), a_cell())
    with pytest.raises(DomainRejection) as rejected:
        Meeting.replay("m", history).schedule(command(), a_cell())
    assert rejected.value.code == "already_exists"
    assert "đã được lên lịch" in rejected.value.message_vi


@pytest.mark.parametrize(
    "overrides",
    [
        {"scheduled_start": datetime(2026, 12, 3, 19, 30)},  # naive: time must be explicit
        {"ward_id": "Nam Ngạn"},  # ids are slugs, safe as Kafka keys
        {"kind": "picnic"},
        {"agenda": ["x"] * 51},
        {"unexpected": True},
    ],
)
def test_invalid_commands_are_refused_by_the_contract(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        command(**overrides)


def test_events_are_frozen_facts() -> None:
    event = Meeting.replay("m", []).schedule(command(), a_cell())[0]
    assert isinstance(event, MeetingScheduled)
    with pytest.raises(ValidationError):
        event.cell_id = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "start",
    [
        "0001-01-01T06:00:00+07:00",  # then every OpenMeeting overflowed on start - 12 h
        "1999-12-31T23:59:59+00:00",
        "2100-01-01T00:00:00+00:00",
        "9999-12-31T23:00:00+07:00",
    ],
)
def test_times_outside_the_contracts_years_are_refused(start: str) -> None:
    with pytest.raises(ValidationError):
        command(scheduled_start=start)


def test_the_contracts_years_are_2000_to_2099() -> None:
    assert command(scheduled_start="2000-01-01T00:00:00+00:00")
    assert command(scheduled_start="2099-12-31T23:59:59+00:00")


@pytest.mark.parametrize("month", ["0000-01", "0000-05", "1999-12", "2100-01", "9999-12"])
def test_months_outside_the_contracts_years_are_refused(month: str) -> None:
    from shared.contract.commands import IssueOrientation, SubmitWardReport

    with pytest.raises(ValidationError):
        IssueOrientation(orientation_id="o", ward_id="w", month=month, topics=["x"])
    with pytest.raises(ValidationError):
        SubmitWardReport(ward_id="w", month=month, submitted_by="x")
    assert IssueOrientation(orientation_id="o", ward_id="w", month="2099-12", topics=["x"])
    assert SubmitWardReport(ward_id="w", month="2000-01", submitted_by="x")


def test_dates_and_the_envelopes_time_outside_the_contracts_years_are_refused() -> None:
    from shared.contract.commands import AdoptResolution, CompleteTask, ExemptMember
    from shared.contract.inbound import InboundCommand

    ids = {"ward_id": "w", "cell_id": "c", "meeting_id": "m"}
    exempt = {"cell_id": "c", "ward_id": "w", "member_id": "m1", "reason": "x"}
    with pytest.raises(ValidationError):
        ExemptMember.model_validate({**exempt, "exempt_from": "0001-01-01"})
    with pytest.raises(ValidationError):
        CompleteTask.model_validate(
            {"resolution_id": "r", "task_id": "t", "completed_on": "9999-12-31", **ids}
        )
    task = {"task_id": "t", "description": "x", "assignee": "x", "due_on": "9999-12-31"}
    adopt = {"resolution_id": "r", "title": "x", "votes_for": 1, "tasks": [task], **ids}
    with pytest.raises(ValidationError) as refused:
        AdoptResolution.model_validate(adopt)
    assert "due_on" in str(refused.value)
    task["due_on"] = "2099-12-31"
    assert AdoptResolution.model_validate(adopt)
    envelope = {
        "message_id": "1", "type": "RegisterCell", "source": "s", "payload": {},
        "occurred_at": "0001-01-01T00:00:00+07:00",
    }  # fmt: skip
    with pytest.raises(ValidationError):
        InboundCommand.model_validate(envelope)
    assert InboundCommand.model_validate({**envelope, "occurred_at": "2026-01-01T08:00:00+07:00"})
