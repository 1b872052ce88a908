"""HTTP: each person's notification channels (``/v1/people/{person_id}/preferences``),
authorised with the bearer tokens of shared/auth.py."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.notifications.domain.notices import CHANNELS, choose_channels
from shared.auth import WRITER_ROLES, Principal, forbidden_scope
from shared.contract.types import Identifier
from shared.http import bearer_principal, error_response


class PreferencesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(min_length=1, max_length=len(CHANNELS))


async def _units_of(pool: asyncpg.Pool, person_id: str) -> tuple[set[str], set[str]]:
    """(cells, wards and higher units) the person belongs to or holds an office in."""
    rows = await pool.fetch(
        """
        select c.cell_id, c.ward_id from notifications.cells c
        where c.cell_id in (select cell_id from notifications.cell_members where person_id = $1
                            union select cell_id from notifications.cell_officials
                            where person_id = $1)
        """,
        person_id,
    )
    units = await pool.fetch(
        "select unit_id from notifications.unit_officials where person_id = $1", person_id
    )
    cells = {r["cell_id"] for r in rows}
    return cells, {r["ward_id"] for r in rows} | {r["unit_id"] for r in units}


async def _may_manage(pool: asyncpg.Pool, principal: Principal, person_id: str) -> bool:
    """The person themselves, a system token, or an official whose scope covers them."""
    if principal.subject == person_id or principal.scope_level == "system":
        return True
    if principal.role not in WRITER_ROLES:
        return False
    cells, units = await _units_of(pool, person_id)
    if principal.scope_level == "cell":
        return principal.scope_unit in cells
    if principal.scope_level == "ward":
        return principal.scope_unit in units
    # A level above the ward: one of the person's units has it as an ancestor.
    ancestors = await pool.fetch(
        """
        with recursive up(unit_id, parent_id) as (
            select unit_id, parent_id from notifications.units where unit_id = any($1)
            union select u.unit_id, u.parent_id from notifications.units u
            join up on u.unit_id = up.parent_id)
        select unit_id from up
        """,
        list(units),
    )
    return principal.scope_unit in {r["unit_id"] for r in ancestors}


def preferences_router(
    default_channels: tuple[str, ...], enabled_channels: tuple[str, ...] = CHANNELS
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["preferences"])

    @router.get("/people/{person_id}/preferences")
    async def get_preferences(
        person_id: Identifier,
        request: Request,
        principal: Annotated[Principal, Depends(bearer_principal)],
    ) -> Any:
        pool: asyncpg.Pool = request.app.state.pool
        if not await _may_manage(pool, principal, person_id):
            raise forbidden_scope()
        row = await pool.fetchrow(
            "select channels, updated_at from notifications.preferences where person_id = $1",
            person_id,
        )
        if row is None:
            return {"person_id": person_id, "channels": list(default_channels), "default": True}
        stored = list(row["channels"])
        # What is sent now: a stored channel the deployment no longer has is skipped, and
        # with none left the default channels stand in (domain/notices.py, choose_channels).
        effective, unavailable = choose_channels(tuple(stored), enabled_channels, default_channels)
        return {
            "person_id": person_id,
            "channels": stored,
            "default": False,
            "effective_channels": effective,
            "unavailable": unavailable,
        }

    @router.put("/people/{person_id}/preferences")
    async def set_preferences(
        person_id: Identifier,
        body: PreferencesBody,
        request: Request,
        principal: Annotated[Principal, Depends(bearer_principal)],
    ) -> Any:
        unknown = sorted(set(body.channels) - set(CHANNELS))
        if unknown:
            return error_response(
                422,
                "unknown_channel",
                "Kênh thông báo không được hỗ trợ.",
                f"Unknown channel(s): {', '.join(unknown)}; known: {', '.join(CHANNELS)}.",
                unknown=unknown,
            )
        absent = sorted(set(body.channels) - set(enabled_channels))
        if absent:
            # Accepting it would leave the person hearing nothing on it.
            return error_response(
                422,
                "channel_not_configured",
                "Kênh thông báo này chưa được cấu hình trên hệ thống, chưa thể đăng ký.",
                f"Channel(s) not configured on this deployment: {', '.join(absent)};"
                f" available: {', '.join(enabled_channels)}.",
                unavailable=absent,
                available=list(enabled_channels),
            )
        pool: asyncpg.Pool = request.app.state.pool
        if not await _may_manage(pool, principal, person_id):
            raise forbidden_scope()
        channels = list(dict.fromkeys(body.channels))
        await pool.execute(
            "insert into notifications.preferences (person_id, channels, updated_by)"
            " values ($1, $2, $3) on conflict (person_id) do update set"
            " channels = excluded.channels, updated_by = excluded.updated_by,"
            " updated_at = now()",
            person_id,
            channels,
            principal.actor,
        )
        return JSONResponse({"person_id": person_id, "channels": channels, "default": False})

    return router
