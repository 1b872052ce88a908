"""Which notices an event makes. Pure: recipients come in, notices go out."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from shared.contract import DomainEvent, MeetingScheduled


@dataclass(frozen=True)
class Notice:
    """One message to one recipient on one channel, not yet rendered."""

    trigger_event_id: UUID
    trigger: str
    recipient: str
    channel: str
    template: str
    context: dict[str, object]


def notices_for(
    event_id: UUID, event: DomainEvent, recipients: list[str], channel: str = "email"
) -> list[Notice]:
    if isinstance(event, MeetingScheduled):
        return [
            Notice(
                trigger_event_id=event_id,
                trigger="meeting_scheduled",
                recipient=recipient,
                channel=channel,
                template="meeting_scheduled",
                context={"meeting": event},
            )
            for recipient in recipients
        ]
    return []
