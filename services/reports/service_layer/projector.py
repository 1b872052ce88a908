"""Applies each event to the report projections, inside the consumer's transaction."""

from __future__ import annotations

import asyncpg

from services.reports.adapters import projection_store
from shared.contract import DomainEvent, EventEnvelope, MeetingScheduled


async def project(conn: asyncpg.Connection, envelope: EventEnvelope, event: DomainEvent) -> None:
    if isinstance(event, MeetingScheduled):
        await projection_store.record_meeting_scheduled(conn, envelope, event)
