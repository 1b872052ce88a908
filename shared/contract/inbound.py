"""The envelope upstream systems publish commands in, on the inbound commands topic.

Publish JSON with the ward id as the record key. ``message_id`` is the idempotency key:
sending the same message again (a retry, a replay) has no second effect.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.contract.types import ContractDatetime

MessageId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
SourceId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class InboundCommand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: MessageId = Field(description="Unique per message; the idempotency key.")
    type: str = Field(description="Command type, e.g. ScheduleMeeting.")
    version: int = Field(1, ge=1, description="Schema version of the payload.")
    occurred_at: ContractDatetime = Field(
        description="When it happened at the source (years 2000-2099)."
    )
    source: SourceId = Field(description="The publishing system; must be allow-listed.")
    correlation_id: UUID | None = None
    payload: dict[str, Any]
