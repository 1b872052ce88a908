"""The event store in PostgreSQL: optimistic concurrency per stream, idempotency keys,
and every event's metadata, written in one transaction.

A batch's stream rows, events and idempotency keys are one statement (``write``) on a
connection the caller owns (``transaction()``), so a batch commits once; ``append`` writes
one stream in a savepoint (the benchmarks and tests fill the store with it).

A transaction takes its id at its first write, and the relay publishes in transaction id
order (adapters/relay.py). So a writer loads every stream it appends to before its
transaction's first write, never after: a stream loaded later could hold a rival's
events committed under a higher id, and the relay would publish this writer's next
version of that stream before them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from services.meetings.adapters.ids import new_uuid
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
    # On a replay: the type of the command the key was first used for (None for keys
    # stored before migration 009). Not part of the answer a caller gets.
    command_type: str | None = field(default=None, compare=False, repr=False)

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


class NewEvent(NamedTuple):
    """One event to write, at its place in its stream, under a new id (``new_uuid()``).
    A named tuple: one is made per event, and a frozen dataclass costs three times more."""

    stream_id: str
    stream_version: int
    ward_id: str
    event: DomainEvent
    meta: EventMetadata
    event_id: uuid.UUID


class StreamAdvance(NamedTuple):
    """A stream moving from the version its writer loaded to the version it leaves."""

    stream_id: str
    ward_id: str
    expected_version: int
    new_version: int


class KeyedResult(NamedTuple):
    """Where the events of a command sent with an idempotency key are: its stream, the
    stream's version after them, and how many there were (a replay reads them back)."""

    idempotency_key: str
    stream_id: str
    stream_version: int
    event_count: int
    command_type: str | None = None


# One statement per append, whatever the number of streams and events: the streams move
# (a new one is inserted, a known one moves from the version its writer loaded), the
# events of the streams that moved are inserted, and the idempotency keys are remembered.
# A new stream another writer created first fails the statement on streams_pkey (a plain
# insert: `on conflict do nothing` doubled the insert's cost); a known stream that did not
# move is named in `stuck`, and none of its events is written. Identity positions are
# handed out in insertion order, which is the events' order (`order by e.ord`), so sorted
# positions are in that order.
_WRITE = """
with created as (
    insert into meetings.streams (stream_id, ward_id, version)
    select * from unnest($1::text[], $2::text[], $3::int[])
    returning stream_id
), moved as (
    update meetings.streams s set version = u.new_version
    from unnest($4::text[], $5::int[], $6::int[], $7::text[])
         as u(stream_id, expected, new_version, ward_id)
    where s.stream_id = u.stream_id and s.version = u.expected and s.ward_id = u.ward_id
    returning s.stream_id
), advanced as (
    select stream_id from created union all select stream_id from moved
), appended as (
    insert into meetings.events (
        event_id, stream_id, stream_version, event_type, schema_version, ward_id,
        payload, occurred_at, correlation_id, causation_id, actor, source)
    select e.event_id, e.stream_id, e.stream_version, e.event_type,
           e.schema_version, e.ward_id, e.payload::jsonb, e.occurred_at,
           e.correlation_id, e.causation_id, e.actor, e.source
    from unnest($8::uuid[], $9::text[], $10::int[], $11::text[], $12::int[],
                $13::text[], $14::text[], $15::timestamptz[], $16::uuid[],
                $17::uuid[], $18::text[], $19::text[])
         with ordinality as e(event_id, stream_id, stream_version, event_type,
                              schema_version, ward_id, payload, occurred_at,
                              correlation_id, causation_id, actor, source, ord)
    where e.stream_id in (select stream_id from advanced)
    order by e.ord
    returning global_position
), keyed as (
    insert into meetings.idempotency_keys
        (idempotency_key, stream_id, stream_version, event_count, command_type)
    select * from unnest($20::text[], $21::text[], $22::int[], $23::int[], $24::text[])
)
select array(select global_position from appended order by global_position) as positions,
       case when (select count(*) from advanced) < cardinality($1::text[]) + cardinality($4::text[])
            then array(select unnest($1::text[] || $4::text[])
                       except select stream_id from advanced)
       end as stuck
"""

# A key's result: kept as JSON by rows written before migration 007, else read back from
# the events it names.
_RESULTS_FOR_KEYS = """
select k.idempotency_key, k.result, k.stream_id, k.stream_version, k.command_type,
       ev.positions, ev.event_ids
from meetings.idempotency_keys k
left join lateral (
    select array_agg(e.global_position order by e.stream_version) as positions,
           array_agg(e.event_id order by e.stream_version) as event_ids
    from meetings.events e
    where e.stream_id = k.stream_id
      and e.stream_version > k.stream_version - k.event_count
      and e.stream_version <= k.stream_version
) ev on k.result is null
where k.idempotency_key = any($1::text[])
"""


_KEY_TAKEN = re.compile(r"^Key \(stream_id\)=\((.*)\) already exists\.$")


class ConcurrencyConflict(Exception):
    """The stream moved on since the caller loaded it."""

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        super().__init__(f"stream {stream_id}: expected version {expected}, found {actual}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


# Errors PostgreSQL (or asyncpg, encoding a parameter) gives for a value it cannot take
# (SQLSTATE class 22, "data exception", and class 54, e.g. an index row too large): the
# same write fails again however often it is retried, unlike a lost connection.
UNSTORABLE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
)


def is_unstorable(exc: BaseException) -> bool:
    """Whether a write failed for its values, not for the database's state."""
    return isinstance(exc, UNSTORABLE_ERRORS)


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
        self._appended: dict[str, Any] = {}

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection outside any transaction, for a caller that runs several in turn."""
        async with self._pool.acquire() as conn:
            yield conn

    async def load(
        self, stream_id: str, conn: asyncpg.Connection | None = None
    ) -> tuple[int, list[DomainEvent]]:
        """The stream's events in order; its version is their count."""
        events = (await self.load_many([stream_id], conn))[stream_id]
        return len(events), events

    async def load_many(
        self, stream_ids: list[str], conn: asyncpg.Connection | None = None
    ) -> dict[str, list[DomainEvent]]:
        """Several streams in one query: cached events plus the rows above them."""
        wanted = list(dict.fromkeys(stream_ids))
        cached = {sid: self._cache.get(sid) for sid in wanted}
        rows = await (conn or self._pool).fetch(
            """
            select e.stream_id, e.event_type, e.schema_version, e.payload
            from unnest($1::text[], $2::int[]) as c(stream_id, after)
            join meetings.events e
              on e.stream_id = c.stream_id and e.stream_version > c.after
            order by e.stream_id, e.stream_version
            """,
            wanted,
            [len(cached[sid]) for sid in wanted],
        )
        loaded: dict[str, list[DomainEvent]] = {sid: list(cached[sid]) for sid in wanted}
        for r in rows:
            loaded[r["stream_id"]].append(
                load_event(r["event_type"], r["schema_version"], json.loads(r["payload"]))
            )
        if conn is None:  # a committed read: safe to remember
            for sid in wanted:
                self._cache.put(sid, tuple(loaded[sid]))
        return loaded

    def remember(self, stream_id: str, events: list[DomainEvent]) -> None:
        """Cache a stream's full history once the transaction that wrote it has committed."""
        self._cache.put(stream_id, tuple(events))

    async def results_for_keys(
        self, keys: list[str], conn: asyncpg.Connection | None = None
    ) -> dict[str, AppendResult]:
        if not keys:
            return {}
        rows = await (conn or self._pool).fetch(_RESULTS_FOR_KEYS, keys)
        return {
            r["idempotency_key"]: AppendResult.from_json(json.loads(r["result"]), replayed=True)
            if r["result"] is not None
            else AppendResult(
                stream_id=r["stream_id"],
                stream_version=r["stream_version"],
                global_positions=list(r["positions"] or []),
                event_ids=list(r["event_ids"] or []),
                replayed=True,
                command_type=r["command_type"],
            )
            for r in rows
        }

    @staticmethod
    async def written_by(conn: asyncpg.Connection, result: AppendResult, actor: str) -> bool:
        """Whether ``actor`` wrote the events of a stored result (False if it wrote none)."""
        if not result.event_ids:
            return False
        written: str | None = await conn.fetchval(
            "select actor from meetings.events where stream_id = $1 and stream_version = $2",
            result.stream_id,
            result.stream_version,
        )
        return written == actor

    async def write(
        self,
        conn: asyncpg.Connection,
        advances: list[StreamAdvance],
        events: list[NewEvent],
        keys: list[KeyedResult] | None = None,
    ) -> list[int]:
        """Move the streams, insert the events and remember the idempotency keys, in one
        statement whatever their number; returns each event's global position. Raises
        ConcurrencyConflict, and leaves the caller's transaction to be rolled back, if any
        stream moved meanwhile or a key was taken meanwhile.
        """
        started = time.perf_counter()
        keys = keys or []
        created = [a for a in advances if a.expected_version == 0]
        moved = [a for a in advances if a.expected_version > 0]
        try:
            row = await conn.fetchrow(
                _WRITE,
                [a.stream_id for a in created],
                [a.ward_id for a in created],
                [a.new_version for a in created],
                [a.stream_id for a in moved],
                [a.expected_version for a in moved],
                [a.new_version for a in moved],
                [a.ward_id for a in moved],
                [e.event_id for e in events],
                [e.stream_id for e in events],
                [e.stream_version for e in events],
                [e.event.event_type for e in events],
                [e.event.schema_version for e in events],
                [e.ward_id for e in events],
                [e.event.model_dump_json() for e in events],
                [e.meta.occurred_at for e in events],
                [e.meta.correlation_id for e in events],
                [e.meta.causation_id for e in events],
                [e.meta.actor for e in events],
                [e.meta.source for e in events],
                [k.idempotency_key for k in keys],
                [k.stream_id for k in keys],
                [k.stream_version for k in keys],
                [k.event_count for k in keys],
                [k.command_type for k in keys],
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "streams_pkey" and created:
                # Another writer created the stream first. Its version cannot be read in
                # this failed transaction: conflict_details() reads it after the rollback.
                taken = _KEY_TAKEN.search(exc.detail or "")
                stream_id = taken.group(1) if taken else created[0].stream_id
                raise ConcurrencyConflict(stream_id, 0, None) from exc
            if exc.constraint_name == "idempotency_keys_pkey" and keys:
                raise ConcurrencyConflict(keys[0].stream_id, -1, None) from exc
            raise ConcurrencyConflict(events[0].stream_id if events else "", -1, None) from exc
        if row["stuck"]:
            # Only the events of the streams that moved were inserted; the caller rolls back.
            stuck = set(row["stuck"])
            a = next(a for a in advances if a.stream_id in stuck)
            actual = await conn.fetchval(
                "select version from meetings.streams where stream_id = $1", a.stream_id
            )
            raise ConcurrencyConflict(a.stream_id, a.expected_version, actual)
        for event_type, n in Counter(e.event.event_type for e in events).items():
            child = self._appended.get(event_type)
            if child is None:  # labels() takes a lock and builds a key: once per type
                child = self._appended[event_type] = self._metrics.events_appended.labels(
                    event_type
                )
            child.inc(n)
        self._metrics.append_seconds.observe(time.perf_counter() - started)
        positions: list[int] = row["positions"]
        return positions

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
        """One stream's events, in a savepoint of the caller's transaction. The caller
        read ``expected_version`` before its transaction's first write (module docstring)."""
        new = [
            NewEvent(stream_id, expected_version + n, ward_id, event, meta, new_uuid())
            for n, event in enumerate(events, start=1)
        ]
        version = expected_version + len(events)
        keys = (
            [KeyedResult(idempotency_key, stream_id, version, len(new))] if idempotency_key else []
        )
        try:
            async with conn.transaction():
                positions = await self.write(
                    conn, [StreamAdvance(stream_id, ward_id, expected_version, version)], new, keys
                )
        except ConcurrencyConflict as exc:
            raise await self.conflict_details(conn, exc) from exc
        return AppendResult(stream_id, version, positions, [e.event_id for e in new])

    @staticmethod
    async def conflict_details(
        conn: asyncpg.Connection, conflict: ConcurrencyConflict
    ) -> ConcurrencyConflict:
        """The conflict with the stream's actual version, once the statement that found it
        has been rolled back (or rolled back to a savepoint): a stream created by another
        writer first."""
        if conflict.actual is not None or conflict.expected < 0:
            return conflict
        actual = await conn.fetchval(
            "select version from meetings.streams where stream_id = $1", conflict.stream_id
        )
        return ConcurrencyConflict(conflict.stream_id, conflict.expected, actual)
