"""The organisation tree as the write side sees it: which units a ward sits under.

Authorisation needs it for tokens scoped above the ward (district, province, ...).
The table is filled from the organisation's own events (domain issue); until then a
deployment seeds it (``chibo org import``) or tests insert rows.
"""

from __future__ import annotations

import asyncpg

from services.meetings.domain.petition import Unit


class OrgDirectory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def chains(
        self, ward_ids: set[str], conn: asyncpg.Connection | None = None
    ) -> dict[str, list[Unit]]:
        """The units above each ward, nearest first, with their levels: where its
        petitions go next (by level), and who stands above their holder. A parent not
        registered yet ends the chain, with no level."""
        if not ward_ids:
            return {}
        rows = await (conn or self._pool).fetch(
            """
            with recursive up(ward_id, unit_id, depth) as (
                select u.unit_id, u.parent_id, 1 from meetings.org_units u
                where u.unit_id = any($1::text[]) and u.parent_id is not null
                union all
                select up.ward_id, p.parent_id, up.depth + 1 from up
                join meetings.org_units p on p.unit_id = up.unit_id
                where p.parent_id is not null and up.depth < 16
            )
            select up.ward_id, up.unit_id, u.level from up
            left join meetings.org_units u on u.unit_id = up.unit_id
            order by up.ward_id, up.depth
            """,
            list(ward_ids),
        )
        found: dict[str, list[Unit]] = {}
        for r in rows:
            found.setdefault(r["ward_id"], []).append(Unit(r["unit_id"], r["level"]))
        return {ward: found.get(ward, []) for ward in ward_ids}

    async def ancestors(self, ward_ids: set[str]) -> dict[str, frozenset[str]]:
        """Every unit above each ward, nearest first up to the root."""
        if not ward_ids:
            return {}
        rows = await self._pool.fetch(
            """
            with recursive up(ward_id, unit_id) as (
                select u.unit_id, u.parent_id from meetings.org_units u
                where u.unit_id = any($1::text[]) and u.parent_id is not null
                union
                select up.ward_id, p.parent_id from up
                join meetings.org_units p on p.unit_id = up.unit_id
                where p.parent_id is not null
            )
            select ward_id, array_agg(unit_id) as ancestors from up group by ward_id
            """,
            list(ward_ids),
        )
        found = {r["ward_id"]: frozenset(r["ancestors"]) for r in rows}
        return {ward: found.get(ward, frozenset()) for ward in ward_ids}
