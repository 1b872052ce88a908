"""Wires the meetings service: settings → pool → event store → command bus → HTTP, relay."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.meetings.adapters.event_store import PostgresEventStore
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.relay import EventRelay
from services.meetings.entrypoints.http import command_router, install_error_handlers
from services.meetings.service_layer.handlers import CommandBus
from shared.clock import Clock, SystemClock
from shared.http import add_operational_routes
from shared.kafka import ensure_topics
from shared.logs import configure_logging, get_logger
from shared.postgres import create_pool, migrate
from shared.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
log = get_logger(__name__)


class MeetingsSettings(ServiceSettings):
    service_name: str = "meetings"
    http_port: int = 8001
    relay_batch_size: int = 1000


def build_app(settings: MeetingsSettings, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    registry = CollectorRegistry()
    metrics = MeetingsMetrics(registry)
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await migrate(pool, "meetings", MIGRATIONS)
        kafka = settings.kafka
        await ensure_topics(kafka, [kafka.events_topic, kafka.commands_topic, kafka.dlq_topic])
        store = PostgresEventStore(pool, clock, metrics)
        relay = EventRelay(
            pool, settings.database_url, kafka, metrics, batch_size=settings.relay_batch_size
        )
        state.update(pool=pool, relay=relay)
        app.state.bus = CommandBus(store, clock, metrics)
        await relay.start()
        log.info("service.started", port=settings.http_port)
        try:
            yield
        finally:
            await relay.stop()
            await pool.close()

    app = FastAPI(title="Chibo — meetings (write side)", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(command_router())

    async def postgres_ready() -> bool:
        pool = state.get("pool")
        return pool is not None and await pool.fetchval("select 1") == 1  # type: ignore[attr-defined]

    async def relay_ready() -> bool:
        relay = state.get("relay")
        return relay is not None and relay.healthy()  # type: ignore[attr-defined]

    add_operational_routes(app, registry, {"postgres": postgres_ready, "relay": relay_ready})
    return app


def main() -> None:
    settings = MeetingsSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    uvicorn.run(
        build_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )
