"""One path for every command, whichever door it came in by (HTTP or Kafka).

A batch runs in one Postgres transaction; each command in its own savepoint. The batch
commits once, which is what makes the Kafka door fast, and a command that is rejected
(rule broken, conflict, not authorised) leaves nothing behind while the others stand.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.meetings.adapters.event_store import (
    AppendResult,
    ConcurrencyConflict,
    EventMetadata,
    PostgresEventStore,
)
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.org_directory import OrgDirectory
from services.meetings.domain import meeting
from services.meetings.domain.errors import DomainRejection
from shared.auth import WRITER_ROLES, AuthError, Principal, forbidden_role, forbidden_scope
from shared.clock import Clock
from shared.contract import DomainEvent, ScheduleMeeting
from shared.contract.commands import Command


@dataclass(frozen=True)
class CommandContext:
    """Where a command came from; becomes the metadata of the events it produces."""

    principal: Principal
    source: str
    door: str  # "http" or "kafka"
    idempotency_key: str | None = None
    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    causation_id: uuid.UUID | None = None
    occurred_at: datetime | None = None  # when it happened at the source; else when received


@dataclass(frozen=True)
class Rejection:
    """Why a command was refused: a stable code and texts for officials and developers."""

    code: str
    status: int
    message_vi: str
    message_en: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: Exception) -> Rejection:
        if isinstance(exc, DomainRejection):
            return cls(exc.code, exc.status, exc.message_vi, exc.message_en, exc.details)
        if isinstance(exc, AuthError):
            return cls(exc.code, exc.status, exc.message_vi, exc.message_en)
        if isinstance(exc, ConcurrencyConflict):
            return cls(
                "concurrency_conflict",
                409,
                "Dữ liệu đã được người khác thay đổi; hãy tải lại và thử lại.",
                "The stream changed since it was read; reload and retry.",
                {
                    "stream_id": exc.stream_id,
                    "expected_version": exc.expected,
                    "actual_version": exc.actual,
                },
            )
        raise exc


Outcome = AppendResult | Rejection
Decision = tuple[str, str, int, list[DomainEvent], list[DomainEvent]]
Handler = Callable[[Any, asyncpg.Connection], Awaitable[Decision]]


class CommandBus:
    def __init__(
        self,
        store: PostgresEventStore,
        org: OrgDirectory,
        clock: Clock,
        metrics: MeetingsMetrics,
    ) -> None:
        self._store = store
        self._org = org
        self._clock = clock
        self._metrics = metrics
        self._handlers: dict[type[Command], Handler] = {
            ScheduleMeeting: self._schedule_meeting,
        }

    async def handle(self, command: Command, ctx: CommandContext) -> Outcome:
        return (await self.handle_batch([(command, ctx)]))[0]

    async def handle_batch(self, items: list[tuple[Command, CommandContext]]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        await self._authorise(items, outcomes)
        keys = [ctx.idempotency_key for _, ctx in items if ctx.idempotency_key]
        written: list[tuple[str, list[DomainEvent]]] = []
        async with self._store.transaction() as conn:
            earlier = await self._store.results_for_keys(keys, conn)
            for i, (command, ctx) in enumerate(items):
                if outcomes[i] is not None:
                    continue
                key = ctx.idempotency_key
                if key is not None and key in earlier:
                    outcomes[i] = earlier[key]
                    continue
                try:
                    stream, ward, version, history, new = await self._handlers[type(command)](
                        command, conn
                    )
                    result = await self._store.append(
                        conn, stream, ward, version, new, self._metadata(ctx), key
                    )
                except (DomainRejection, ConcurrencyConflict) as exc:
                    outcomes[i] = Rejection.of(exc)
                    continue
                outcomes[i] = result
                written.append((stream, history + new))
                if key is not None:  # the same key later in this batch replays this result
                    earlier[key] = dataclasses.replace(result, replayed=True)
        for stream, events in written:
            self._store.remember(stream, events)
        for (command, ctx), outcome in zip(items, outcomes, strict=True):
            self._metrics.commands.labels(
                command.command_type, ctx.door, _outcome_label(outcome)
            ).inc()
        return [o for o in outcomes if o is not None]

    async def _authorise(
        self, items: list[tuple[Command, CommandContext]], outcomes: list[Outcome | None]
    ) -> None:
        above_ward = {
            command.scope()[0]
            for command, ctx in items
            if ctx.principal.scope_level not in ("system", "ward", "cell")
        }
        ancestors = await self._org.ancestors(above_ward)
        for i, (command, ctx) in enumerate(items):
            ward, cell = command.scope()
            if ctx.principal.role not in WRITER_ROLES:
                outcomes[i] = Rejection.of(forbidden_role())
            elif not ctx.principal.covers(ward, cell, ancestors.get(ward, frozenset())):
                outcomes[i] = Rejection.of(forbidden_scope())

    def _metadata(self, ctx: CommandContext) -> EventMetadata:
        return EventMetadata(
            actor=ctx.principal.actor,
            source=ctx.source,
            occurred_at=ctx.occurred_at or self._clock.now(),
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
        )

    async def _schedule_meeting(self, cmd: ScheduleMeeting, conn: asyncpg.Connection) -> Decision:
        stream = meeting.stream_id(cmd.meeting_id)
        version, history = await self._store.load(stream, conn)
        new = meeting.Meeting.replay(cmd.meeting_id, history).schedule(cmd)
        return stream, cmd.ward_id, version, history, new


def _outcome_label(outcome: Outcome | None) -> str:
    if isinstance(outcome, Rejection):
        return f"rejected_{outcome.code}"
    if isinstance(outcome, AppendResult) and outcome.replayed:
        return "replayed"
    return "accepted"
