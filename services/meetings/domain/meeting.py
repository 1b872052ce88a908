"""The meeting aggregate. The walking skeleton knows one decision: schedule."""

from __future__ import annotations

from dataclasses import dataclass

from services.meetings.domain.errors import AlreadyExists
from shared.contract import DomainEvent, MeetingScheduled, ScheduleMeeting


def stream_id(meeting_id: str) -> str:
    return f"meeting-{meeting_id}"


@dataclass
class Meeting:
    meeting_id: str
    scheduled: bool = False

    @classmethod
    def replay(cls, meeting_id: str, events: list[DomainEvent]) -> Meeting:
        meeting = cls(meeting_id)
        for event in events:
            meeting.apply(event)
        return meeting

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, MeetingScheduled):
            self.scheduled = True

    def schedule(self, command: ScheduleMeeting) -> list[DomainEvent]:
        if self.scheduled:
            raise AlreadyExists(
                f"Cuộc họp {command.meeting_id} đã được lên lịch.",
                f"Meeting {command.meeting_id} is already scheduled.",
                meeting_id=command.meeting_id,
            )
        return [
            MeetingScheduled(
                meeting_id=command.meeting_id,
                ward_id=command.ward_id,
                cell_id=command.cell_id,
                kind=command.kind,
                scheduled_start=command.scheduled_start,
                agenda=command.agenda,
                location=command.location,
            )
        ]
