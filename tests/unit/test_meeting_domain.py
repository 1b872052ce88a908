"""Given events, when a command, then events or a rejection: the meeting aggregate."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from services.meetings.domain.errors import DomainRejection
from services.meetings.domain.meeting import Meeting
from shared.clock import LOCAL_TZ
from shared.contract import MeetingKind, MeetingScheduled, ScheduleMeeting

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
    events = Meeting.replay("m", []).schedule(command())
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
    history = Meeting.replay("m", []).schedule(command())
    with pytest.raises(DomainRejection) as rejected:
        Meeting.replay("m", history).schedule(command())
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
    event = Meeting.replay("m", []).schedule(command())[0]
    assert isinstance(event, MeetingScheduled)
    with pytest.raises(ValidationError):
        event.cell_id = "other"  # type: ignore[misc]
