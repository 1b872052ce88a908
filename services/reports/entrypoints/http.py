"""HTTP read API of the reports service."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Request

from services.reports.adapters import projection_store
from shared.contract.types import Identifier


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool  # type: ignore[no-any-return]


def report_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["reports"])

    @router.get("/wards")
    async def list_wards(pool: Annotated[asyncpg.Pool, Depends(_pool)]) -> dict[str, Any]:
        return {"wards": await projection_store.wards(pool)}

    @router.get("/wards/{ward_id}/meetings")
    async def ward_meetings(
        ward_id: Annotated[Identifier, Path()],
        pool: Annotated[asyncpg.Pool, Depends(_pool)],
    ) -> dict[str, Any]:
        meetings = await projection_store.ward_meetings(pool, ward_id)
        return {"ward_id": ward_id, "meetings_scheduled": len(meetings), "meetings": meetings}

    return router
