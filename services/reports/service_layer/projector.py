"""Applies a batch of events to the report projections, inside the consumer's transaction."""

from __future__ import annotations

import asyncpg

from services.reports.adapters import projection_store
from services.reports.domain.projection import writes_for
from shared.contract import DomainEvent, EventEnvelope


async def project_batch(
    conn: asyncpg.Connection, items: list[tuple[EventEnvelope, DomainEvent]]
) -> None:
    writes = [
        write
        for envelope, event in items
        for write in writes_for(event, envelope.occurred_at, envelope.stream_version)
    ]
    await projection_store.apply_writes(conn, writes)


async def project(conn: asyncpg.Connection, envelope: EventEnvelope, event: DomainEvent) -> None:
    await project_batch(conn, [(envelope, event)])
