"""The published contract: every command and event, as pydantic v2 models.

These models are the single source; JSON Schema and AsyncAPI documents are generated
from them. Upstream publishers and our own services depend on this package only.
"""

from shared.contract.commands import ScheduleMeeting
from shared.contract.envelope import EventEnvelope
from shared.contract.events import EVENT_TYPES, DomainEvent, MeetingKind, MeetingScheduled

__all__ = [
    "EVENT_TYPES",
    "DomainEvent",
    "EventEnvelope",
    "MeetingKind",
    "MeetingScheduled",
    "ScheduleMeeting",
]
