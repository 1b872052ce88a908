"""The event store's streams as they are stored (meetings.events, meetings.streams),
read-only, for `chibo stream`.

Only data access lives here; `ops/cli.py` renders it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ops.target import NotFound, connect
from shared.clock import LOCAL_TZ


@dataclass(frozen=True)
class StoredEvent:
    stream_id: str
    stream_version: int
    global_position: int
    event_id: str
    event_type: str
    schema_version: int
    ward_id: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    source: str
    correlation_id: str | None
    causation_id: str | None
    payload: Any

    def as_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "stream_version": self.stream_version,
            "global_position": self.global_position,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "ward_id": self.ward_id,
            "occurred_at": self.occurred_at.astimezone(LOCAL_TZ).isoformat(),
            "recorded_at": self.recorded_at.astimezone(LOCAL_TZ).isoformat(),
            "actor": self.actor,
            "source": self.source,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class StreamSummary:
    stream_id: str
    ward_id: str
    version: int
    first_event_type: str | None
    last_recorded_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "ward_id": self.ward_id,
            "version": self.version,
            "first_event_type": self.first_event_type,
            "last_recorded_at": (
                self.last_recorded_at.astimezone(LOCAL_TZ).isoformat()
                if self.last_recorded_at
                else None
            ),
        }


_STREAM_EVENTS = """
select stream_id, stream_version, global_position, event_id, event_type, schema_version,
       ward_id, occurred_at, recorded_at, actor, source, correlation_id, causation_id,
       payload::text as payload
from meetings.events
where stream_id = $1
order by stream_version
"""

_WARD_STREAMS = """
select s.stream_id, s.ward_id, s.version,
       (select e.event_type from meetings.events e
         where e.stream_id = s.stream_id and e.stream_version = 1) as first_event_type,
       (select max(e.recorded_at) from meetings.events e
         where e.stream_id = s.stream_id) as last_recorded_at
from meetings.streams s
where s.ward_id = $1
order by s.stream_id
limit $2
"""


async def stream_events(database_url: str, stream_id: str) -> list[StoredEvent]:
    """A stream's events in version order; `NotFound` when it has none."""
    async with connect(database_url) as conn:
        rows = await conn.fetch(_STREAM_EVENTS, stream_id)
    if not rows:
        raise NotFound(
            f"no stream {stream_id!r} in meetings.events"
            " (a ward's streams: chibo stream list --ward WARD)"
        )
    return [
        StoredEvent(
            stream_id=r["stream_id"],
            stream_version=r["stream_version"],
            global_position=r["global_position"],
            event_id=str(r["event_id"]),
            event_type=r["event_type"],
            schema_version=r["schema_version"],
            ward_id=r["ward_id"],
            occurred_at=r["occurred_at"],
            recorded_at=r["recorded_at"],
            actor=r["actor"],
            source=r["source"],
            correlation_id=str(r["correlation_id"]) if r["correlation_id"] else None,
            causation_id=str(r["causation_id"]) if r["causation_id"] else None,
            payload=json.loads(r["payload"]),
        )
        for r in rows
    ]


async def ward_streams(database_url: str, ward_id: str, limit: int = 1000) -> list[StreamSummary]:
    """The ward's streams with their current versions; `NotFound` when it has none."""
    async with connect(database_url) as conn:
        rows = await conn.fetch(_WARD_STREAMS, ward_id, limit)
    if not rows:
        raise NotFound(f"no streams for ward {ward_id!r} in meetings.streams")
    return [
        StreamSummary(
            stream_id=r["stream_id"],
            ward_id=r["ward_id"],
            version=r["version"],
            first_event_type=r["first_event_type"],
            last_recorded_at=r["last_recorded_at"],
        )
        for r in rows
    ]
