"""Read models of the write side, updated in the transaction that appends the events,
so that a decision and the lookups it relies on never disagree: the organisation tree,
open petitions' deadlines, the petition index for recurrence, and each member's cell and
ward (whose contact details a ward may change)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.meetings.domain.petition import place_key
from shared.contract import DomainEvent
from shared.contract.commands import EraseContactDetails, SetContactDetails
from shared.contract.events import (
    MemberAdmitted,
    MemberTransferredOut,
    PetitionEscalated,
    PetitionMarkedOverdue,
    PetitionRaised,
    PetitionReopened,
    PetitionResolved,
    UnitRegistered,
)

_MODELLED = frozenset(
    {
        UnitRegistered,
        MemberAdmitted,
        MemberTransferredOut,
        PetitionRaised,
        PetitionEscalated,
        PetitionReopened,
        PetitionMarkedOverdue,
        PetitionResolved,
    }
)


async def apply(conn: asyncpg.Connection, events: list[DomainEvent]) -> None:
    # The last word per petition wins: (ward, level, deadline) while open, None once closed.
    open_petitions: dict[str, tuple[str, str, datetime | None] | None] = {}
    raised: list[PetitionRaised] = []
    # The last word per member: (cell, ward) once admitted, (cell, None) once transferred
    # out of that cell.
    members: dict[str, tuple[str, str | None]] = {}
    # Most events touch no lookup: skip them before the class patterns (ABCMeta checks).
    for event in [e for e in events if type(e) in _MODELLED]:
        match event:
            case UnitRegistered():
                await conn.execute(
                    "insert into meetings.org_units (unit_id, parent_id, level, name)"
                    " values ($1, $2, $3, $4) on conflict (unit_id) do update set"
                    " parent_id = excluded.parent_id, level = excluded.level,"
                    " name = excluded.name",
                    event.unit_id,
                    event.parent_id,
                    event.level,
                    event.name,
                )
            case MemberAdmitted():
                members[event.member_id] = (event.cell_id, event.ward_id)
            case MemberTransferredOut():
                # Out of the cell the member is in; admitted elsewhere first, they stay there.
                if members.get(event.member_id, (event.cell_id, None))[0] == event.cell_id:
                    members[event.member_id] = (event.cell_id, None)
            case PetitionRaised():
                raised.append(event)
                open_petitions[event.petition_id] = (event.ward_id, event.level, event.deadline_at)
            case PetitionEscalated():
                open_petitions[event.petition_id] = (
                    event.ward_id, event.to_level, event.deadline_at,
                )  # fmt: skip
            case PetitionReopened():
                open_petitions[event.petition_id] = (event.ward_id, event.level, event.deadline_at)
            case PetitionMarkedOverdue():
                open_petitions[event.petition_id] = (event.ward_id, event.level, None)
            case PetitionResolved():
                open_petitions[event.petition_id] = None
    if raised:
        await conn.execute(
            "insert into meetings.petition_index"
            " (petition_id, ward_id, category, place_key, raised_at)"
            " select * from unnest($1::text[], $2::text[], $3::text[], $4::text[],"
            " $5::timestamptz[]) on conflict do nothing",
            [e.petition_id for e in raised],
            [e.ward_id for e in raised],
            [e.category.value for e in raised],
            [place_key(e.place) for e in raised],
            [e.raised_at for e in raised],
        )
    if members:
        await _apply_members(conn, members)
    still_open = [(p, *state) for p, state in open_petitions.items() if state is not None]
    closed = [p for p, state in open_petitions.items() if state is None]
    if still_open:
        await conn.execute(
            "insert into meetings.petition_deadlines (petition_id, ward_id, level, due_at)"
            " select * from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])"
            " on conflict (petition_id) do update set level = excluded.level,"
            " due_at = excluded.due_at, claimed_until = null",
            [row[0] for row in still_open],
            [row[1] for row in still_open],
            [row[2] for row in still_open],
            [row[3] for row in still_open],
        )
    if closed:
        await conn.execute(
            "delete from meetings.petition_deadlines where petition_id = any($1::text[])", closed
        )


async def _apply_members(
    conn: asyncpg.Connection, members: dict[str, tuple[str, str | None]]
) -> None:
    joined = [(m, cell, ward) for m, (cell, ward) in members.items() if ward is not None]
    left = [(m, cell) for m, (cell, ward) in members.items() if ward is None]
    if joined:
        await conn.execute(
            "insert into meetings.members (member_id, cell_id, ward_id)"
            " select * from unnest($1::text[], $2::text[], $3::text[])"
            " on conflict (member_id) do update set cell_id = excluded.cell_id,"
            " ward_id = excluded.ward_id",
            [j[0] for j in joined],
            [j[1] for j in joined],
            [j[2] for j in joined],
        )
        # A member who moved takes their contact details to the new ward, which may then
        # correct or erase them (and the old ward no longer may).
        await conn.execute(
            "update meetings.contacts c set ward_id = j.ward_id, updated_at = now()"
            " from unnest($1::text[], $2::text[]) as j(person_id, ward_id)"
            " where c.person_id = j.person_id and c.ward_id <> j.ward_id",
            [j[0] for j in joined],
            [j[2] for j in joined],
        )
    if left:
        await conn.execute(
            "delete from meetings.members m"
            " using unnest($1::text[], $2::text[]) as l(member_id, cell_id)"
            " where m.member_id = l.member_id and m.cell_id = l.cell_id",
            [x[0] for x in left],
            [x[1] for x in left],
        )


async def person_wards(conn: asyncpg.Connection, person_ids: list[str]) -> dict[str, str]:
    """The ward each person belongs to now, for those the write side knows: a member's
    current cell's ward, else the ward of their contact details. Left out: people
    with neither (any ward in the caller's scope may record their first details)."""
    if not person_ids:
        return {}
    rows = await conn.fetch(
        "select p.person_id, coalesce(m.ward_id, c.ward_id) as ward_id"
        " from unnest($1::text[]) as p(person_id)"
        " left join meetings.members m on m.member_id = p.person_id"
        " left join meetings.contacts c on c.person_id = p.person_id"
        " where m.ward_id is not null or c.ward_id is not null",
        person_ids,
    )
    return {r["person_id"]: r["ward_id"] for r in rows}


async def similar_petitions(
    conn: asyncpg.Connection, keys: list[tuple[str, str, str]], since: datetime
) -> dict[tuple[str, str, str], list[str]]:
    """Earlier petitions per (ward, category, place key) raised since ``since``."""
    if not keys:
        return {}
    rows = await conn.fetch(
        """
        select k.ward_id, k.category, k.place_key, array_agg(i.petition_id order by i.raised_at)
               as ids
        from unnest($1::text[], $2::text[], $3::text[]) as k(ward_id, category, place_key)
        join meetings.petition_index i
          on i.ward_id = k.ward_id and i.category = k.category and i.place_key = k.place_key
         and i.raised_at >= $4
        group by k.ward_id, k.category, k.place_key
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        since,
    )
    return {(r["ward_id"], r["category"], r["place_key"]): list(r["ids"]) for r in rows}


async def store_contact(conn: asyncpg.Connection, cmd: SetContactDetails) -> None:
    """Only the fields given change; the others keep their value. The row's ward is the
    person's: a member's current ward (the command's, which the decision checked, unless
    a transfer committed since), else the command's."""
    await conn.execute(
        "insert into meetings.contacts (person_id, ward_id, phone, email)"
        " values ($1, coalesce((select ward_id from meetings.members where member_id = $1),"
        " $2), $3, $4)"
        " on conflict (person_id) do update set ward_id = excluded.ward_id,"
        " phone = coalesce(excluded.phone, meetings.contacts.phone),"
        " email = coalesce(excluded.email, meetings.contacts.email), updated_at = now()",
        cmd.person_id,
        cmd.ward_id,
        cmd.phone,
        cmd.email,
    )


async def erase_contact(conn: asyncpg.Connection, cmd: EraseContactDetails) -> None:
    await conn.execute("delete from meetings.contacts where person_id = $1", cmd.person_id)
