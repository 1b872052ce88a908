"""HTTP door: JSON commands under /v1, with machine-readable rejections."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from services.meetings.adapters.event_store import ConcurrencyConflict
from services.meetings.domain.errors import DomainRejection
from services.meetings.service_layer.handlers import CommandBus, CommandContext
from shared.contract import ScheduleMeeting


def rejection(status: int, code: str, vi: str, en: str, **details: object) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message_vi": vi, "message_en": en, "details": details},
        status_code=status,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")}
            for e in exc.errors()
        ]
        return rejection(
            422,
            "invalid_command",
            "Dữ liệu của lệnh không hợp lệ.",
            "The command is not valid.",
            errors=errors,
        )

    @app.exception_handler(DomainRejection)
    async def rejected(_: Request, exc: DomainRejection) -> JSONResponse:
        return rejection(exc.status, exc.code, exc.message_vi, exc.message_en, **exc.details)

    @app.exception_handler(ConcurrencyConflict)
    async def conflict(_: Request, exc: ConcurrencyConflict) -> JSONResponse:
        return rejection(
            409,
            "concurrency_conflict",
            "Dữ liệu đã được người khác thay đổi; hãy tải lại và thử lại.",
            "The stream changed since it was read; reload and retry.",
            stream_id=exc.stream_id,
            expected_version=exc.expected,
            actual_version=exc.actual,
        )


def _bus(request: Request) -> CommandBus:
    return request.app.state.bus  # type: ignore[no-any-return]


def command_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["commands"])

    @router.post("/meetings", status_code=201)
    async def schedule_meeting(
        command: ScheduleMeeting,
        bus: Annotated[CommandBus, Depends(_bus)],
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
        x_correlation_id: Annotated[uuid.UUID | None, Header()] = None,
    ) -> dict[str, object]:
        ctx = CommandContext(
            actor="http:anonymous",
            source="http",
            door="http",
            idempotency_key=idempotency_key,
            correlation_id=x_correlation_id or uuid.uuid4(),
        )
        result = await bus.handle(command, ctx)
        return result.to_json()

    return router
