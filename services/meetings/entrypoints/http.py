"""HTTP door: JSON commands under /v1, authenticated by bearer token. Rejections use the
shared shape (shared/http.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse

from services.meetings.adapters.event_store import UNSTORABLE_ERRORS
from services.meetings.service_layer.handlers import CommandBus, CommandContext, Rejection
from shared.auth import Principal
from shared.contract import ScheduleMeeting
from shared.contract.commands import COMMAND_TYPES, Command
from shared.http import bearer_principal, error_response
from shared.logs import get_logger

log = get_logger(__name__)

REJECTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": example}}}
    for code, text, example in (
        (401, "Missing or invalid token", {"code": "unauthenticated"}),
        (403, "Token scope or role does not allow this", {"code": "forbidden_scope"}),
        (409, "Rule or concurrency conflict", {"code": "already_exists"}),
        (
            422,
            "Malformed or invalid command, or an Idempotency-Key already used for another command",
            {"code": "invalid_command"},
        ),
    )
}


def rejection_response(rejection: Rejection) -> JSONResponse:
    return error_response(
        rejection.status,
        rejection.code,
        rejection.message_vi,
        rejection.message_en,
        **rejection.details,
    )


def caller_idempotency_key(principal: Principal, key: str) -> str:
    """The stored form of a caller's ``Idempotency-Key``: each caller (token subject) has
    its own keys, so one caller's key never answers another's command. The subject is
    percent-encoded, so the first ``:`` after it ends it; the prefix is not ``http:``,
    the global form used before, so no old key can be read as a caller's new one."""
    return f"http-caller:{quote(principal.subject, safe='')}:{key}"


def install_unstorable_handler(app: FastAPI) -> None:
    """A command whose write the database refuses for a value in it (a value the contract
    let through, that PostgreSQL cannot take) is the caller's 422, not a 500: the same
    request would fail again however often it is sent."""

    async def unstorable(request: Request, exc: Exception) -> JSONResponse:
        log.error("http.command_unstorable", path=request.url.path, error=f"{exc!r}"[:500])
        return error_response(
            422,
            "invalid_command",
            "Dữ liệu gửi lên có giá trị không lưu được; hãy kiểm tra lại.",
            "The database refused a value in the command.",
            error=type(exc).__name__,
        )

    for error in UNSTORABLE_ERRORS:
        app.add_exception_handler(error, unstorable)


def _bus(request: Request) -> CommandBus:
    return request.app.state.bus  # type: ignore[no-any-return]


def command_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["commands"], responses=REJECTION_RESPONSES)

    # The walking skeleton's address for scheduling stays, beside the generic one.
    _add_command_route(router, ScheduleMeeting, "/meetings")
    for command_type in COMMAND_TYPES.values():
        _add_command_route(router, command_type, f"/commands/{command_type.command_type}")
    return router


def _add_command_route(router: APIRouter, command_type: type[Command], path: str) -> None:
    """``POST /v1/commands/<Type>``: every command of the contract, by its type name.
    Send an ``Idempotency-Key`` header to make retries safe."""

    async def send(
        command: Command,
        bus: Annotated[CommandBus, Depends(_bus)],
        principal: Annotated[Principal, Depends(bearer_principal)],
        idempotency_key: Annotated[
            str | None,
            Header(
                max_length=200,
                description=(
                    "Makes a retry safe: the same key from the same caller (token subject)"
                    " with the same command answers the first result (`replayed: true`);"
                    " the key with another command (another type or target) is refused,"
                    " 422 `idempotency_key_reused`. Other callers' keys are separate."
                ),
            ),
        ] = None,
        x_correlation_id: Annotated[uuid.UUID | None, Header()] = None,
    ) -> Any:
        ctx = CommandContext(
            principal=principal,
            source="http",
            door="http",
            idempotency_key=caller_idempotency_key(principal, idempotency_key)
            if idempotency_key
            else None,
            # Keys stored before they were per caller: still the original caller's.
            legacy_idempotency_key=f"http:{idempotency_key}" if idempotency_key else None,
            correlation_id=x_correlation_id or uuid.uuid4(),
        )
        outcome = await bus.handle(command, ctx)
        if isinstance(outcome, Rejection):
            return rejection_response(outcome)
        return outcome.to_json()

    # Annotations are strings in this module; give FastAPI the body's real class.
    send.__annotations__["command"] = command_type
    router.add_api_route(
        path,
        send,
        methods=["POST"],
        status_code=201,
        name=f"{command_type.command_type}{path.replace('/', '_')}",
        summary=(command_type.__doc__ or command_type.command_type).strip().splitlines()[0],
    )
