"""Wires the reports service: events topic → projector → Postgres; HTTP read API."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from faststream.middlewares import AckPolicy
from prometheus_client import CollectorRegistry

from services.reports.entrypoints.http import report_router
from services.reports.service_layer.projector import project
from shared.consumer import EventConsumer, make_broker
from shared.http import (
    add_operational_routes,
    broker_check,
    install_error_handlers,
    postgres_check,
    serve,
)
from shared.kafka import ConsumerLagMonitor, ensure_topics
from shared.logs import get_logger
from shared.postgres import create_pool, migrate
from shared.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
CONSUMER_GROUP = "chibo-reports"
log = get_logger(__name__)


class ReportsSettings(ServiceSettings):
    service_name: str = "reports"
    http_port: int = 8002


def build_app(settings: ReportsSettings) -> FastAPI:
    registry = CollectorRegistry()
    kafka = settings.kafka
    broker = make_broker(kafka, registry, settings.service_name)
    lag = ConsumerLagMonitor(kafka, CONSUMER_GROUP, [kafka.events_topic], registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await migrate(pool, "reports", MIGRATIONS)
        await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
        app.state.pool = pool
        consumer = EventConsumer(
            settings.service_name, "reports", pool, broker, kafka, project, registry
        )
        broker.subscriber(
            kafka.events_topic,
            group_id=CONSUMER_GROUP,
            auto_offset_reset="earliest",
            batch=True,
            max_records=settings.consumer_batch_size,
            ack_policy=AckPolicy.MANUAL,  # the consumer acks a batch, or rewinds it
        )(consumer)
        await broker.start()
        await lag.start()
        log.info("service.started", port=settings.http_port)
        try:
            yield
        finally:
            await lag.stop()
            await broker.stop()
            await pool.close()

    app = FastAPI(title="Chibo — reports", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(report_router())

    add_operational_routes(
        app, registry, {"postgres": postgres_check(app), "kafka": broker_check(broker)}
    )
    return app


def main() -> None:
    settings = ReportsSettings()
    serve(build_app(settings), settings)
