"""One path for every command, whichever door it came in by (HTTP or Kafka)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from services.meetings.adapters.event_store import AppendResult, EventMetadata, PostgresEventStore
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.domain import meeting
from shared.clock import Clock
from shared.contract import ScheduleMeeting
from shared.contract.commands import Command


@dataclass(frozen=True)
class CommandContext:
    """Where a command came from; becomes the metadata of the events it produces."""

    actor: str
    source: str
    door: str  # "http" or "kafka"
    idempotency_key: str | None = None
    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None


Handler = Callable[[Any, CommandContext], Awaitable[AppendResult]]


class CommandBus:
    def __init__(self, store: PostgresEventStore, clock: Clock, metrics: MeetingsMetrics) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._handlers: dict[type[Command], Handler] = {
            ScheduleMeeting: self._schedule_meeting,
        }

    async def handle(self, command: Command, ctx: CommandContext) -> AppendResult:
        name = type(command).__name__
        try:
            if ctx.idempotency_key is not None:
                earlier = await self._store.result_for_key(ctx.idempotency_key)
                if earlier is not None:
                    self._metrics.commands.labels(name, ctx.door, "replayed").inc()
                    return earlier
            result = await self._handlers[type(command)](command, ctx)
        except Exception as exc:
            self._metrics.commands.labels(name, ctx.door, _outcome(exc)).inc()
            raise
        self._metrics.commands.labels(name, ctx.door, "accepted").inc()
        return result

    def _metadata(self, ctx: CommandContext) -> EventMetadata:
        return EventMetadata(
            actor=ctx.actor,
            source=ctx.source,
            occurred_at=self._clock.now(),
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
        )

    async def _schedule_meeting(self, cmd: ScheduleMeeting, ctx: CommandContext) -> AppendResult:
        stream = meeting.stream_id(cmd.meeting_id)
        version, history = await self._store.load(stream)
        events = meeting.Meeting.replay(cmd.meeting_id, history).schedule(cmd)
        return await self._store.append(
            stream, cmd.ward_id, version, events, self._metadata(ctx), ctx.idempotency_key
        )


def _outcome(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        return f"rejected_{code}"
    if type(exc).__name__ == "ConcurrencyConflict":
        return "rejected_concurrency_conflict"
    return "error"
