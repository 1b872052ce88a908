"""Read-only contact lookup for other services (notifications looks addresses up at send
time, so an erasure holds for every later message). Only ``system``-scoped tokens may
read: contact details are personal data. Nothing here is logged."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import AuthError, Principal
from shared.contract.types import Identifier
from shared.http import bearer_principal, error_response


class LookupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    person_ids: list[Identifier] = Field(max_length=1000)


def _system_only(principal: Annotated[Principal, Depends(bearer_principal)]) -> Principal:
    if principal.scope_level != "system":
        raise AuthError(
            "forbidden_scope",
            "Chỉ hệ thống mới được đọc thông tin liên hệ.",
            "Only a system-scoped token may read contact details.",
            403,
        )
    return principal


def contacts_router() -> APIRouter:
    router = APIRouter(prefix="/v1/people", tags=["contacts"])

    @router.get("/{person_id}/contact")
    async def contact(
        person_id: Identifier,
        request: Request,
        _: Annotated[Principal, Depends(_system_only)],
    ) -> Any:
        pool: asyncpg.Pool = request.app.state.pool
        row = await pool.fetchrow(
            "select email, phone from meetings.contacts where person_id = $1", person_id
        )
        if row is None:
            return error_response(
                404,
                "no_contact",
                "Không có thông tin liên hệ của người này.",
                "No contact details for this person.",
            )
        return {"person_id": person_id, "email": row["email"], "phone": row["phone"]}

    @router.post("/contacts:lookup")
    async def lookup(
        body: LookupBody,
        request: Request,
        _: Annotated[Principal, Depends(_system_only)],
    ) -> Any:
        """Many people at once: those without contact details are left out."""
        pool: asyncpg.Pool = request.app.state.pool
        rows = await pool.fetch(
            "select person_id, email, phone from meetings.contacts where person_id = any($1)",
            body.person_ids,
        )
        return {
            "contacts": {r["person_id"]: {"email": r["email"], "phone": r["phone"]} for r in rows}
        }

    return router
