"""Wires the reports service: events topic → projector → Postgres; HTTP read API."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge
from pydantic import Field

from services.reports.domain.monthly_report import QualityRubric, ReportPolicy
from services.reports.entrypoints.http import report_router
from services.reports.service_layer.projector import project, project_batch
from services.reports.service_layer.rebuild import (
    PROJECTION_VERSION,
    BuiltByNewerCode,
    built_version,
    history_can_expire,
    projection_guard,
    rebuild_if_outdated,
)
from services.reports.service_layer.reports import ReportReader
from shared.clock import Clock
from shared.consumer import EventConsumer, freeze_startup_objects, make_broker, subscribe_events
from shared.http import (
    ReadinessCheck,
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
    # Ladder levels whose units are "wards" (đảng bộ phường / xã): they have the cells.
    report_ward_levels: str = "ward,commune"
    report_attendance_target: float = Field(default=0.9, gt=0, le=1)
    # JSON, e.g. {"attendance": 40, "duration": 10, ...}; the points must add up to 100.
    report_quality_rubric: QualityRubric = QualityRubric()
    # A deployment's own report templates; files there win over the packaged ones.
    report_templates_dir: Path | None = None

    def policy(self) -> ReportPolicy:
        return ReportPolicy(self.report_attendance_target, self.report_quality_rubric)

    def ward_levels(self) -> frozenset[str]:
        return frozenset(s.strip() for s in self.report_ward_levels.split(",") if s.strip())


def build_app(
    settings: ReportsSettings, clock: Clock | None = None, projection_version: int | None = None
) -> FastAPI:
    """``projection_version``: the projection code's (``PROJECTION_VERSION``; tests start
    a replica of an older release with an older one)."""
    version = PROJECTION_VERSION if projection_version is None else projection_version
    tokens = settings.tokens()  # fails fast without AUTH_JWT_SECRET
    if clock is None:
        clock = settings.clock()
    registry = CollectorRegistry()
    kafka = settings.kafka
    broker = make_broker(kafka, registry, settings.service_name)
    lag = ConsumerLagMonitor(
        kafka, CONSUMER_GROUP, [kafka.events_topic], registry, dlq_topic=kafka.events_dlq_topic
    )
    history_expires = Gauge(
        "chibo_events_history_can_expire",
        "1 when the events topic's retention is finite (checked at start): once its first"
        " events expire, the projections can no longer be rebuilt from it.",
        registry=registry,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await migrate(pool, "reports", MIGRATIONS)
        await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
        history_expires.set(1 if await history_can_expire(kafka) else 0)
        try:
            await rebuild_if_outdated(pool, kafka, version=version)
            newer = None
        except BuiltByNewerCode as exc:
            # A replica of the previous release (a rolling update under way, or a
            # rollback): it serves HTTP but neither rebuilds nor consumes, and reports
            # not ready (projection_version), so it is out of rotation until replaced.
            log.error("projections.built_by_newer_code", built=exc.built, ours=exc.ours)
            newer = exc
        app.state.pool = pool
        app.state.reader = ReportReader(pool, clock, settings.policy(), settings.ward_levels())
        consumer = EventConsumer(
            settings.service_name,
            "reports",
            pool,
            broker,
            kafka,
            project,
            registry,
            apply_batch=project_batch,
            guard=projection_guard(version),
        )
        app.state.consumer = consumer
        if newer is None:
            subscriber = subscribe_events(
                broker, kafka.events_topic, CONSUMER_GROUP, settings.consumer_batch_size, consumer
            )
            # A batch refused by the guard (a newer release's rebuild committed) stops
            # the subscriber: it leaves the group, and the newer replicas take its
            # partitions from the last committed offsets.
            consumer.stop_consuming = subscriber.stop
        freeze_startup_objects()  # before the first batch
        await broker.start()
        await lag.start()
        log.info("service.started", port=settings.http_port)
        try:
            yield
        finally:
            await lag.stop()
            await broker.stop()
            await pool.close()

    app = FastAPI(title="Chibo — reports", version="0.2.0", lifespan=lifespan)
    app.state.tokens = tokens
    app.state.templates_dir = settings.report_templates_dir
    install_error_handlers(app)
    app.include_router(report_router())

    add_operational_routes(
        app,
        registry,
        {
            "postgres": postgres_check(app),
            "kafka": broker_check(broker),
            "projection_version": projection_check(app, version),
        },
    )
    return app


def projection_check(app: FastAPI, version: int) -> ReadinessCheck:
    """The tables are the version this code writes, and the consumer has not stopped
    over them: a replica of an older release fails it once a newer one has rebuilt."""

    async def check() -> bool:
        consumer: EventConsumer | None = getattr(app.state, "consumer", None)
        pool = getattr(app.state, "pool", None)
        if consumer is None or pool is None or consumer.refused is not None:
            return False
        return await built_version(pool) == version

    return check


def main() -> None:
    settings = ReportsSettings()
    serve(build_app(settings), settings)
