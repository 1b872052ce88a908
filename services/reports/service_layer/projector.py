"""Applies a batch of events to the report projections, inside the consumer's transaction."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.reports.adapters import projection_store
from services.reports.domain.projection import Write, batch_writes_for, writes_for
from shared.contract import DomainEvent
from shared.contract.envelope import Envelope


def event_writes(item: tuple[Envelope, DomainEvent]) -> list[Write]:
    envelope, event = item
    return writes_for(event, envelope.occurred_at, envelope.stream_version)


async def project_batch(
    conn: asyncpg.Connection, items: Sequence[tuple[Envelope, DomainEvent]]
) -> None:
    await projection_store.apply_writes(conn, batch_writes_for(items))


async def project(conn: asyncpg.Connection, envelope: Envelope, event: DomainEvent) -> None:
    await project_batch(conn, [(envelope, event)])
