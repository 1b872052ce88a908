"""Upcasting: old versions of an event load as the current one.

Events are immutable, so when a payload's shape changes the old rows stay as they were
written; each upcaster lifts a payload one version up, and they chain. Both the event
store (loading aggregates) and every consumer (reading the topic or rebuilding) call
``upcast`` before validating against the current model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

# (event type, version it reads) -> function returning the next version's payload.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


def upcast(event_type: str, version: int, payload: Payload, target: int) -> Payload:
    while version < target:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise LookupError(f"no upcaster for {event_type} v{version} -> v{version + 1}")
        payload = step(dict(payload))
        version += 1
    if version > target:
        raise LookupError(f"{event_type} v{version} is newer than this reader (v{target})")
    return payload


@upcaster("MeetingScheduled", 1)
def _meeting_scheduled_v1_to_v2(payload: Payload) -> Payload:
    # v2 added where the cell meets; meetings scheduled under v1 did not say.
    payload.setdefault("location", None)
    return payload
