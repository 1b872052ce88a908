"""The envelope every event travels in on the events topic (key = ward id)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol, Union
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    create_model,
)

from shared.contract.events import EVENT_TYPES, DomainEvent, load_event


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


class Envelope(Protocol):
    """What a projection needs of an envelope, whichever way it was read."""

    @property
    def stream_id(self) -> str: ...
    @property
    def stream_version(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def recorded_at(self) -> datetime: ...


class ConsumedEnvelope(Envelope, Protocol):
    """The envelope's fields but ``payload``, whichever way it was read: what a live
    consumer's ``apply`` gets beside the typed event (``EventEnvelope`` has them all)."""

    @property
    def event_id(self) -> UUID: ...
    @property
    def event_type(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def global_position(self) -> int: ...
    @property
    def ward_id(self) -> str: ...
    @property
    def correlation_id(self) -> UUID | None: ...
    @property
    def causation_id(self) -> UUID | None: ...
    @property
    def actor(self) -> str: ...
    @property
    def source(self) -> str: ...


class _TypedEnvelope(BaseModel):
    """``EventEnvelope`` with the payload typed: the envelope's fields but ``payload``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
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
    payload: DomainEvent


def _current(cls: type[DomainEvent]) -> type[_TypedEnvelope]:
    event_type: Any = Literal[cls.event_type]
    schema_version: Any = Literal[cls.schema_version]
    return create_model(
        f"{cls.__name__}Envelope",
        __base__=_TypedEnvelope,
        event_type=(event_type, ...),
        schema_version=(schema_version, ...),
        payload=(cls, ...),
    )


# One model per event type at its current version, chosen by ``event_type``: the bytes
# are validated in one pass, with no dict of the payload in between.
_choices: Any = Union[tuple(_current(cls) for cls in EVENT_TYPES.values())]  # noqa: UP007
_CURRENT: TypeAdapter[_TypedEnvelope] = TypeAdapter(
    Annotated[_choices, Field(discriminator="event_type")]
)
_VALIDATE = _CURRENT.validator.validate_json  # without TypeAdapter's per-call wrapper


def read_current(value: bytes) -> tuple[ConsumedEnvelope, DomainEvent]:
    """The envelope and its typed event in one validation pass, for an event of a known
    type at its current schema version. ValidationError for anything else (an older
    version, an unknown type, bad input): the caller then takes the general path,
    ``EventEnvelope.model_validate_json`` and ``domain_event()``, which decides."""
    typed = _VALIDATE(value)
    return typed, typed.payload
