"""An event that records a command as it was given, built without validating it again.

The command was validated at the door. When the event's fields are the command's own,
with the same types and constraints, and the event has no validators, that validation
already holds for the event: copying is enough (the intake's hot path). Otherwise the
event is validated as usual.
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel

from shared.contract import DomainEvent
from shared.contract.commands import Command

E = TypeVar("E", bound=DomainEvent)


def event_from(cmd: Command, event_type: type[E]) -> E:
    if _same_fields(type(cmd), event_type):
        # Lists are copied: the event must not share a mutable value with the command.
        values: dict[str, Any] = {
            k: list(v) if type(v) is list else v for k, v in cmd.__dict__.items()
        }
        return event_type.model_construct(None, **values)
    return event_type(**cmd.model_dump())


@cache
def _same_fields(command_type: type[BaseModel], event_type: type[BaseModel]) -> bool:
    decorators = event_type.__pydantic_decorators__
    if any(
        (
            decorators.validators,
            decorators.field_validators,
            decorators.root_validators,
            decorators.model_validators,
        )
    ):
        return False
    given, wanted = command_type.model_fields, event_type.model_fields
    return given.keys() == wanted.keys() and all(
        given[name].annotation == wanted[name].annotation
        and given[name].metadata == wanted[name].metadata
        for name in given
    )
