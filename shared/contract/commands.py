"""Commands: what a caller asks the write side to do. They may be rejected."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contract.events import MeetingKind
from shared.contract.types import Identifier, ShortText


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScheduleMeeting(Command):
    """Schedule a cell's meeting. ``meeting_id`` is chosen by the caller, so a retry is safe."""

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    kind: MeetingKind = MeetingKind.REGULAR
    scheduled_start: AwareDatetime
    agenda: list[ShortText] = Field(default_factory=list, max_length=50)
