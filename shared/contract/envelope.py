"""The envelope every event travels in on the events topic (key = ward id)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

from shared.contract.events import DomainEvent, load_event


class EventEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    event_type: str
    schema_version: int
    stream_id: str
    stream_version: int
    global_position: int
    ward_id: str
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    correlation_id: UUID | None = None
    causation_id: UUID | None = None
    actor: str
    source: str
    payload: dict[str, Any]

    def domain_event(self) -> DomainEvent:
        """The typed payload, upcast to the current version. KeyError for an unknown type."""
        return load_event(self.event_type, self.schema_version, self.payload)
