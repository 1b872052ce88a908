"""The HTTP side every service shares: /health, /ready and /metrics on a FastAPI app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]


def add_operational_routes(
    app: FastAPI, registry: CollectorRegistry, checks: dict[str, ReadinessCheck]
) -> None:
    """Liveness says the process answers; readiness says every dependency answers too."""

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                ok = await check()
            except Exception:
                ok = False
            results[name] = "ok" if ok else "failing"
        healthy = all(v == "ok" for v in results.values())
        return JSONResponse(
            {"status": "ready" if healthy else "not_ready", "checks": results},
            status_code=200 if healthy else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
