"""The HTTP side every service shares: /health, /ready and /metrics, and one shape for
every rejection: ``{"code", "message_vi", "message_en", "details"}`` with a 4xx status
(or 503 when a dependency is down), never a bare 500."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.auth import AuthError, Principal, TokenService, unauthenticated
from shared.logs import configure_logging, get_logger
from shared.settings import ServiceSettings

log = get_logger(__name__)

bearer = HTTPBearer(auto_error=False, description="JWT issued by `chibo token issue`.")


def bearer_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller, from its bearer token (``app.state.tokens`` verifies it)."""
    if credentials is None:
        raise unauthenticated("no bearer token")
    tokens: TokenService = request.app.state.tokens
    return tokens.verify(credentials.credentials)


# Texts for the statuses the framework itself produces (bad body, unknown route, ...).
_HTTP_STATUS_TEXTS = {
    400: ("bad_request", "Yêu cầu không đọc được.", "The request could not be read."),
    404: ("not_found", "Không tìm thấy địa chỉ này.", "No such resource."),
    405: ("method_not_allowed", "Phương thức không được hỗ trợ.", "Method not allowed."),
    413: ("too_large", "Yêu cầu quá lớn.", "The request is too large."),
    415: ("unsupported_media_type", "Định dạng không được hỗ trợ.", "Unsupported media type."),
}


def error_response(
    status: int, code: str, message_vi: str, message_en: str, **details: Any
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message_vi": message_vi, "message_en": message_en, "details": details},
        status_code=status,
        headers={"Retry-After": "5"} if status == 503 else None,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")}
            for e in exc.errors()
        ]
        return error_response(
            422,
            "invalid_command",
            "Dữ liệu gửi lên không hợp lệ.",
            "The request is not valid.",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, vi, en = _HTTP_STATUS_TEXTS.get(
            exc.status_code, ("http_error", "Yêu cầu không hợp lệ.", str(exc.detail))
        )
        return error_response(exc.status_code, code, vi, en)

    @app.exception_handler(AuthError)
    async def auth_failed(_: Request, exc: AuthError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message_vi, exc.message_en)

    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.TooManyConnectionsError)
    @app.exception_handler(OSError)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("http.dependency_unavailable", error=type(exc).__name__)
        return error_response(
            503,
            "service_unavailable",
            "Hệ thống tạm thời chưa xử lý được; xin thử lại sau.",
            "A dependency is unavailable; retry later.",
        )


ReadinessCheck = Callable[[], Awaitable[bool]]


def add_operational_routes(
    app: FastAPI,
    registry: CollectorRegistry,
    checks: dict[str, ReadinessCheck],
    informational: dict[str, ReadinessCheck] | None = None,
) -> None:
    """Liveness says the process answers; readiness says every dependency it cannot serve
    without answers too. Informational checks are reported but do not take the service
    out of rotation (the meetings API still takes commands while Kafka is away).

    The checks also run at each scrape, into ``chibo_ready{check, required}``: an
    orchestrator acts on /ready, but only a metric lets an alert see a replica that
    answers /metrics while its database is gone."""
    ready_gauge = Gauge(
        "chibo_ready",
        "1 when the readiness check answers, 0 when it fails. required=true checks take"
        " the service out of rotation (/ready answers 503); the others are informational.",
        ["check", "required"],
        registry=registry,
    )

    async def run_checks() -> tuple[dict[str, str], dict[str, str]]:
        # Side by side: two dependencies that hang cost one timeout, not one each, so the
        # scrape still answers within its own timeout.
        extra_checks = informational or {}
        answers = await asyncio.gather(
            *(_run_check(check) for check in (*checks.values(), *extra_checks.values()))
        )
        results = dict(zip(checks, answers[: len(checks)], strict=True))
        extra = dict(zip(extra_checks, answers[len(checks) :], strict=True))
        for outcomes, required in ((results, "true"), (extra, "false")):
            for name, outcome in outcomes.items():
                ready_gauge.labels(name, required).set(1 if outcome == "ok" else 0)
        return results, extra

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        results, extra = await run_checks()
        healthy = all(v == "ok" for v in results.values())
        return JSONResponse(
            {
                "status": "ready" if healthy else "not_ready",
                "checks": results,
                "informational": extra,
            },
            status_code=200 if healthy else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        await run_checks()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def postgres_check(app: FastAPI) -> ReadinessCheck:
    """The pool the lifespan put on ``app.state.pool`` answers a query."""

    async def check() -> bool:
        pool = getattr(app.state, "pool", None)
        return pool is not None and await pool.fetchval("select 1") == 1

    return check


def broker_check(broker: Any) -> ReadinessCheck:
    """The FastStream broker reaches Kafka."""

    async def check() -> bool:
        return bool(await broker.ping(timeout=2.0))

    return check


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run a service's app on its port, with our own logging in place of uvicorn's."""
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    uvicorn.run(
        app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False
    )


# A check that hangs (a database that accepts connections and never answers) fails:
# /metrics must still answer within a scrape's timeout.
CHECK_TIMEOUT_S = 3.0


async def _run_check(check: ReadinessCheck) -> str:
    try:
        return "ok" if await asyncio.wait_for(check(), CHECK_TIMEOUT_S) else "failing"
    except Exception:
        return "failing"
