"""Domain events: what has happened. Each type carries its own schema version."""

from __future__ import annotations

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


EVENT_TYPES: dict[str, type[DomainEvent]] = {cls.event_type: cls for cls in (MeetingScheduled,)}


def load_event(event_type: str, schema_version: int, payload: dict[str, Any]) -> DomainEvent:
    """A stored or received payload as the current model, upcast from older versions."""
    cls = EVENT_TYPES[event_type]
    return cls.model_validate(upcast(event_type, schema_version, payload, cls.schema_version))
