"""Commands: what a caller asks the write side to do. They may be rejected."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contract.events import MeetingKind
from shared.contract.types import Identifier, ShortText


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    command_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def scope(self) -> tuple[str, str | None]:
        """The (ward id, cell id) the command acts on, for authorisation."""
        fields = self.__dict__  # each command type names its own ward (and maybe cell)
        return fields["ward_id"], fields.get("cell_id")


class ScheduleMeeting(Command):
    """Schedule a cell's meeting. ``meeting_id`` is chosen by the caller, so a retry is safe."""

    command_type: ClassVar[str] = "ScheduleMeeting"

    meeting_id: Identifier
    ward_id: Identifier
    cell_id: Identifier
    kind: MeetingKind = MeetingKind.REGULAR
    scheduled_start: AwareDatetime
    agenda: list[ShortText] = Field(default_factory=list, max_length=50)
    location: ShortText | None = None


COMMAND_TYPES: dict[str, type[Command]] = {cls.command_type: cls for cls in (ScheduleMeeting,)}
