"""Reads and writes of the reports schema."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from shared.clock import LOCAL_TZ
from shared.contract import EventEnvelope, MeetingScheduled


async def record_meeting_scheduled(
    conn: asyncpg.Connection, envelope: EventEnvelope, event: MeetingScheduled
) -> None:
    await conn.execute(
        """
        insert into reports.ward_meetings
            (meeting_id, ward_id, cell_id, kind, scheduled_start, agenda, global_position)
        values ($1, $2, $3, $4, $5, $6::jsonb, $7)
        """,
        event.meeting_id,
        event.ward_id,
        event.cell_id,
        event.kind.value,
        event.scheduled_start,
        json.dumps(event.agenda, ensure_ascii=False),
        envelope.global_position,
    )


async def ward_meetings(pool: asyncpg.Pool, ward_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "select meeting_id, cell_id, kind, scheduled_start, agenda from reports.ward_meetings"
        " where ward_id = $1 order by scheduled_start, meeting_id",
        ward_id,
    )
    return [
        {
            "meeting_id": r["meeting_id"],
            "cell_id": r["cell_id"],
            "kind": r["kind"],
            "scheduled_start": r["scheduled_start"].astimezone(LOCAL_TZ).isoformat(),
            "agenda": json.loads(r["agenda"]),
        }
        for r in rows
    ]


async def wards(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "select ward_id, count(*) as meetings from reports.ward_meetings"
        " group by ward_id order by ward_id"
    )
    return [{"ward_id": r["ward_id"], "meetings_scheduled": r["meetings"]} for r in rows]
