"""Who receives what: notifications' own projection of the organisation (cells, rolls,
offices, the unit tree) and of the meetings and petitions its timers watch, kept in the
``notifications`` schema from events, in the consumer's transaction. Ids, roles and the
names of cells and units (for the text people read); e-mail addresses and phone numbers
are looked up at send time (adapters/contacts.py)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from services.notifications.domain.names import PlaceNames, UnitName
from shared.contract import DomainEvent
from shared.contract.events import (
    CellRegistered,
    MemberAdmitted,
    MemberTransferredOut,
    OfficialAppointed,
    OfficialRole,
    UnitOfficialAppointed,
    UnitRegistered,
)


async def apply_org_event(conn: asyncpg.Connection, event: DomainEvent) -> None:
    """Keep the directory up to date with one organisation event (others are ignored)."""
    if isinstance(event, CellRegistered):
        await conn.execute(
            "insert into notifications.cells (cell_id, ward_id, meeting_day, name)"
            " values ($1, $2, $3, $4)"
            " on conflict (cell_id) do update set ward_id = excluded.ward_id,"
            " meeting_day = excluded.meeting_day, name = excluded.name",
            event.cell_id,
            event.ward_id,
            event.meeting_day,
            event.name,
        )
    elif isinstance(event, MemberAdmitted):
        await conn.execute(
            "insert into notifications.cell_members (cell_id, person_id) values ($1, $2)"
            " on conflict do nothing",
            event.cell_id,
            event.member_id,
        )
    elif isinstance(event, MemberTransferredOut):
        await conn.execute(
            "delete from notifications.cell_members where cell_id = $1 and person_id = $2",
            event.cell_id,
            event.member_id,
        )
    elif isinstance(event, OfficialAppointed):
        await conn.execute(
            "insert into notifications.cell_officials (cell_id, role, person_id)"
            " values ($1, $2, $3) on conflict (cell_id, role)"
            " do update set person_id = excluded.person_id",
            event.cell_id,
            event.role.value,
            event.person_id,
        )
    elif isinstance(event, UnitRegistered):
        await conn.execute(
            "insert into notifications.units (unit_id, parent_id, level, name)"
            " values ($1, $2, $3, $4)"
            " on conflict (unit_id) do update set parent_id = excluded.parent_id,"
            " level = excluded.level, name = excluded.name",
            event.unit_id,
            event.parent_id,
            event.level,
            event.name,
        )
    elif isinstance(event, UnitOfficialAppointed):
        await conn.execute(
            "insert into notifications.unit_officials (unit_id, role, person_id)"
            " values ($1, $2, $3) on conflict (unit_id, role)"
            " do update set person_id = excluded.person_id",
            event.unit_id,
            event.role.value,
            event.person_id,
        )


async def cell_members(conn: asyncpg.Connection, cell_id: str) -> list[str]:
    rows = await conn.fetch(
        "select person_id from notifications.cell_members where cell_id = $1 order by person_id",
        cell_id,
    )
    return [r["person_id"] for r in rows]


async def cell_officials(
    conn: asyncpg.Connection, cell_id: str, roles: tuple[OfficialRole, ...] | None = None
) -> list[str]:
    rows = await conn.fetch(
        "select role, person_id from notifications.cell_officials where cell_id = $1 order by role",
        cell_id,
    )
    wanted = {r.value for r in roles} if roles else None
    return [r["person_id"] for r in rows if wanted is None or r["role"] in wanted]


async def unit_officials(conn: asyncpg.Connection, unit_id: str | None) -> list[str]:
    if unit_id is None:
        return []
    rows = await conn.fetch(
        "select person_id from notifications.unit_officials where unit_id = $1 order by role",
        unit_id,
    )
    return [r["person_id"] for r in rows]


async def unit_parent(conn: asyncpg.Connection, unit_id: str) -> str | None:
    parent: str | None = await conn.fetchval(
        "select parent_id from notifications.units where unit_id = $1", unit_id
    )
    return parent


async def holder_officials(
    conn: asyncpg.Connection, level: str, holder_id: str | None
) -> list[str]:
    """The officials of the unit holding a petition: the cell's at level "cell"."""
    if holder_id is None:
        return []
    if level == "cell":
        return await cell_officials(conn, holder_id)
    return await unit_officials(conn, holder_id)


async def cell_ward(conn: asyncpg.Connection, cell_id: str) -> str | None:
    ward: str | None = await conn.fetchval(
        "select ward_id from notifications.cells where cell_id = $1", cell_id
    )
    return ward


async def place_names(
    conn: asyncpg.Connection,
    cell_ids: tuple[str | None, ...] = (),
    unit_ids: tuple[str | None, ...] = (),
) -> PlaceNames:
    """The registered names of these cells and units (and the units' levels), one query."""
    cells = [c for c in cell_ids if c]
    units = [u for u in unit_ids if u]
    rows = await conn.fetch(
        "select 'cell' as what, cell_id as id, null as level, name from notifications.cells"
        " where cell_id = any($1::text[])"
        " union all"
        " select 'unit', unit_id, level, name from notifications.units"
        " where unit_id = any($2::text[])",
        cells,
        units,
    )
    return PlaceNames(
        cells={r["id"]: r["name"] for r in rows if r["what"] == "cell"},
        units={
            r["id"]: UnitName(r["id"], r["level"], r["name"]) for r in rows if r["what"] == "unit"
        },
    )


# -- meetings and petitions the timers watch ---------------------------------------------


async def save_meeting(
    conn: asyncpg.Connection,
    meeting_id: str,
    ward_id: str,
    cell_id: str,
    kind: str,
    scheduled_start: datetime,
    payload: dict[str, Any],
) -> None:
    await conn.execute(
        "insert into notifications.meetings"
        " (meeting_id, ward_id, cell_id, kind, scheduled_start, payload)"
        " values ($1, $2, $3, $4, $5, $6::jsonb) on conflict (meeting_id) do update set"
        " scheduled_start = excluded.scheduled_start, payload = excluded.payload,"
        " status = 'scheduled'",
        meeting_id,
        ward_id,
        cell_id,
        kind,
        scheduled_start,
        json.dumps(payload, default=str),
    )


async def meeting(conn: asyncpg.Connection, meeting_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "select * from notifications.meetings where meeting_id = $1", meeting_id
    )
    return row


async def move_meeting(conn: asyncpg.Connection, meeting_id: str, start: datetime) -> None:
    await conn.execute(
        "update notifications.meetings set scheduled_start = $2,"
        " payload = jsonb_set(payload, '{scheduled_start}', to_jsonb($3::text))"
        " where meeting_id = $1",
        meeting_id,
        start,
        start.isoformat(),
    )


async def set_meeting_status(conn: asyncpg.Connection, meeting_id: str, status: str) -> None:
    await conn.execute(
        "update notifications.meetings set status = $2 where meeting_id = $1", meeting_id, status
    )


async def mark_regular_held(conn: asyncpg.Connection, cell_id: str, month: str) -> None:
    await conn.execute(
        "insert into notifications.regular_meetings_held (cell_id, month) values ($1, $2)"
        " on conflict do nothing",
        cell_id,
        month,
    )


async def regular_held(conn: asyncpg.Connection, cell_id: str, month: str) -> bool:
    return bool(
        await conn.fetchval(
            "select 1 from notifications.regular_meetings_held where cell_id = $1 and month = $2",
            cell_id,
            month,
        )
    )


async def save_petition(
    conn: asyncpg.Connection,
    petition_id: str,
    ward_id: str,
    cell_id: str,
    level: str,
    holder_id: str | None,
    deadline_at: datetime,
    history_entry: dict[str, Any],
) -> None:
    await conn.execute(
        "insert into notifications.petitions"
        " (petition_id, ward_id, cell_id, level, holder_id, deadline_at, history)"
        " values ($1, $2, $3, $4, $5, $6, jsonb_build_array($7::jsonb))"
        " on conflict (petition_id) do nothing",
        petition_id,
        ward_id,
        cell_id,
        level,
        holder_id,
        deadline_at,
        json.dumps(history_entry, default=str),
    )


async def update_petition(
    conn: asyncpg.Connection,
    petition_id: str,
    *,
    status: str,
    history_entry: dict[str, Any],
    level: str | None = None,
    holder_id: str | None = None,
    deadline_at: datetime | None = None,
    new_holder: bool = False,
) -> asyncpg.Record | None:
    """``new_holder``: the petition changed hands (an escalation), so ``holder_id`` is set
    even when None (no unit at that level yet): the previous holder no longer holds it."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "update notifications.petitions set status = $2,"
        " level = coalesce($3, level),"
        " holder_id = case when $7 then $4 else coalesce($4, holder_id) end,"
        " deadline_at = coalesce($5, deadline_at), history = history || $6::jsonb"
        " where petition_id = $1 returning *",
        petition_id,
        status,
        level,
        holder_id,
        deadline_at,
        json.dumps([history_entry], default=str),
        new_holder,
    )
    return row


async def petition(conn: asyncpg.Connection, petition_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "select * from notifications.petitions where petition_id = $1", petition_id
    )
    return row


async def record_report(
    conn: asyncpg.Connection, ward_id: str, month: str, submitted_at: datetime
) -> None:
    await conn.execute(
        "insert into notifications.ward_reports (ward_id, month, submitted_at)"
        " values ($1, $2, $3) on conflict do nothing",
        ward_id,
        month,
        submitted_at,
    )


async def report_submitted(conn: asyncpg.Connection, ward_id: str, month: str) -> bool:
    return bool(
        await conn.fetchval(
            "select 1 from notifications.ward_reports where ward_id = $1 and month = $2",
            ward_id,
            month,
        )
    )


async def channels_of(
    conn: asyncpg.Connection, people: list[str], default: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    """Each person's channels: their preference, or the deployment's default."""
    rows = await conn.fetch(
        "select person_id, channels from notifications.preferences where person_id = any($1)",
        people,
    )
    chosen = {r["person_id"]: tuple(r["channels"]) for r in rows}
    return {p: chosen.get(p, default) for p in people}
