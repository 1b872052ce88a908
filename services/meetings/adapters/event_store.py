"""The event store in PostgreSQL: optimistic concurrency per stream, idempotency keys,
and every event's metadata, written in one transaction.

Appends run on a connection the caller owns (``transaction()``), each in a savepoint,
so a batch of commands commits once while a rejected command leaves no trace.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.meetings.adapters.metrics import MeetingsMetrics
from shared.contract import DomainEvent
from shared.contract.events import load_event


@dataclass(frozen=True)
class EventMetadata:
    """Who asked, from where, and why: kept beside every event."""

    actor: str
    source: str
    occurred_at: datetime
    correlation_id: uuid.UUID | None = None
    causation_id: uuid.UUID | None = None


@dataclass(frozen=True)
class AppendResult:
    stream_id: str
    stream_version: int
    global_positions: list[int] = field(default_factory=list)
    event_ids: list[uuid.UUID] = field(default_factory=list)
    replayed: bool = False  # True when an idempotency key matched an earlier command

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "stream_version": self.stream_version,
            "global_positions": self.global_positions,
            "event_ids": [str(e) for e in self.event_ids],
            "replayed": self.replayed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], replayed: bool) -> AppendResult:
        return cls(
            stream_id=data["stream_id"],
            stream_version=data["stream_version"],
            global_positions=list(data["global_positions"]),
            event_ids=[uuid.UUID(e) for e in data["event_ids"]],
            replayed=replayed,
        )


class ConcurrencyConflict(Exception):
    """The stream moved on since the caller loaded it."""

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        super().__init__(f"stream {stream_id}: expected version {expected}, found {actual}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class StreamCache:
    """Recently loaded streams, so that loading an aggregate reads only its newest events.

    Only committed reads fill it, so a rolled-back append can never leave a phantom event.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._streams: OrderedDict[str, tuple[DomainEvent, ...]] = OrderedDict()

    def get(self, stream_id: str) -> tuple[DomainEvent, ...]:
        events = self._streams.get(stream_id, ())
        if events:
            self._streams.move_to_end(stream_id)
        return events

    def put(self, stream_id: str, events: tuple[DomainEvent, ...]) -> None:
        if self._capacity <= 0:
            return
        self._streams[stream_id] = events
        self._streams.move_to_end(stream_id)
        while len(self._streams) > self._capacity:
            self._streams.popitem(last=False)


class PostgresEventStore:
    def __init__(
        self, pool: asyncpg.Pool, metrics: MeetingsMetrics, cache_capacity: int = 10_000
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._cache = StreamCache(cache_capacity)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def load(
        self, stream_id: str, conn: asyncpg.Connection | None = None
    ) -> tuple[int, list[DomainEvent]]:
        """The stream's events in order; its version is their count."""
        cached = self._cache.get(stream_id)
        reader = conn or self._pool
        rows = await reader.fetch(
            "select event_type, schema_version, payload from meetings.events"
            " where stream_id = $1 and stream_version > $2 order by stream_version",
            stream_id,
            len(cached),
        )
        events = cached + tuple(
            load_event(r["event_type"], r["schema_version"], json.loads(r["payload"])) for r in rows
        )
        if conn is None:  # a committed read: safe to remember
            self._cache.put(stream_id, events)
        return len(events), list(events)

    def remember(self, stream_id: str, events: list[DomainEvent]) -> None:
        """Cache a stream's full history once the transaction that wrote it has committed."""
        self._cache.put(stream_id, tuple(events))

    async def results_for_keys(
        self, keys: list[str], conn: asyncpg.Connection | None = None
    ) -> dict[str, AppendResult]:
        if not keys:
            return {}
        rows = await (conn or self._pool).fetch(
            "select idempotency_key, result from meetings.idempotency_keys"
            " where idempotency_key = any($1::text[])",
            keys,
        )
        return {
            r["idempotency_key"]: AppendResult.from_json(json.loads(r["result"]), replayed=True)
            for r in rows
        }

    async def append(
        self,
        conn: asyncpg.Connection,
        stream_id: str,
        ward_id: str,
        expected_version: int,
        events: list[DomainEvent],
        meta: EventMetadata,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append in a savepoint of the caller's transaction; nothing is kept on conflict."""
        started = time.perf_counter()
        new_version = expected_version + len(events)
        event_ids = [uuid.uuid4() for _ in events]
        try:
            async with conn.transaction():
                await self._advance_stream(conn, stream_id, ward_id, expected_version, new_version)
                positions = await conn.fetch(
                    """
                    insert into meetings.events (
                        event_id, stream_id, stream_version, event_type, schema_version, ward_id,
                        payload, occurred_at, correlation_id, causation_id, actor, source)
                    select e.event_id, $2, e.version, e.event_type, e.schema_version, $3,
                           e.payload::jsonb, $4, $5, $6, $7, $8
                    from unnest($1::uuid[], $9::int[], $10::text[], $11::int[], $12::text[])
                         with ordinality as e(event_id, version, event_type, schema_version,
                                              payload, ord)
                    order by e.ord
                    returning global_position
                    """,
                    event_ids,
                    stream_id,
                    ward_id,
                    meta.occurred_at,
                    meta.correlation_id,
                    meta.causation_id,
                    meta.actor,
                    meta.source,
                    list(range(expected_version + 1, new_version + 1)),
                    [e.event_type for e in events],
                    [e.schema_version for e in events],
                    [e.model_dump_json() for e in events],
                )
                result = AppendResult(
                    stream_id=stream_id,
                    stream_version=new_version,
                    global_positions=[r["global_position"] for r in positions],
                    event_ids=event_ids,
                )
                if idempotency_key is not None:
                    await conn.execute(
                        "insert into meetings.idempotency_keys (idempotency_key, stream_id, result)"
                        " values ($1, $2, $3)",
                        idempotency_key,
                        stream_id,
                        json.dumps(result.to_json()),
                    )
        except asyncpg.UniqueViolationError as exc:
            # Another writer got there first: on the stream's version or on the same key.
            raise ConcurrencyConflict(stream_id, expected_version, None) from exc
        for event in events:
            self._metrics.events_appended.labels(event.event_type).inc()
        self._metrics.append_seconds.observe(time.perf_counter() - started)
        return result

    @staticmethod
    async def _advance_stream(
        conn: asyncpg.Connection, stream_id: str, ward_id: str, expected: int, new: int
    ) -> None:
        if expected == 0:
            status = await conn.execute(
                "insert into meetings.streams (stream_id, ward_id, version) values ($1, $2, $3)"
                " on conflict do nothing",
                stream_id,
                ward_id,
                new,
            )
        else:
            status = await conn.execute(
                "update meetings.streams set version = $3"
                " where stream_id = $1 and version = $2 and ward_id = $4",
                stream_id,
                expected,
                new,
                ward_id,
            )
        if status.endswith(" 0"):
            actual = await conn.fetchval(
                "select version from meetings.streams where stream_id = $1", stream_id
            )
            raise ConcurrencyConflict(stream_id, expected, actual)
