"""Wires the notifications service: events topic → notifier → delivery log → dispatcher → SMTP."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from faststream.middlewares import AckPolicy
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.notifications.adapters.directory import MailboxPatternDirectory
from services.notifications.adapters.email import SmtpSender
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.service_layer.dispatcher import Dispatcher
from services.notifications.service_layer.notifier import Notifier
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
CONSUMER_GROUP = "chibo-notifications"
log = get_logger(__name__)


class NotificationsSettings(ServiceSettings):
    service_name: str = "notifications"
    http_port: int = 8003
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "Chibo <thong-bao@chibo.local>"
    cell_mailbox_pattern: str = "chi-bo.{cell_id}@chibo.local"
    templates_dir: Path | None = None
    max_send_attempts: int = 5


def build_app(settings: NotificationsSettings) -> FastAPI:
    registry = CollectorRegistry()
    metrics = NotificationsMetrics(registry)
    kafka = settings.kafka
    broker = make_broker(kafka, registry, settings.service_name)
    lag = ConsumerLagMonitor(kafka, CONSUMER_GROUP, [kafka.events_topic], registry)
    email = SmtpSender(
        settings.smtp_host,
        settings.smtp_port,
        settings.mail_from,
        start_tls=settings.smtp_starttls,
        username=settings.smtp_username,
        password=settings.smtp_password,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await migrate(pool, "notifications", MIGRATIONS)
        await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
        app.state.pool = pool
        work_available = asyncio.Event()
        notifier = Notifier(
            MailboxPatternDirectory(settings.cell_mailbox_pattern),
            TemplateRenderer(settings.templates_dir),
            metrics,
        )
        consumer = EventConsumer(
            settings.service_name,
            "notifications",
            pool,
            broker,
            kafka,
            notifier,
            registry,
            after_commit=work_available.set,  # the dispatcher sees committed rows at once
        )
        broker.subscriber(
            kafka.events_topic,
            group_id=CONSUMER_GROUP,
            auto_offset_reset="earliest",
            batch=True,
            max_records=settings.consumer_batch_size,
            ack_policy=AckPolicy.MANUAL,  # the consumer acks a batch, or rewinds it
        )(consumer)
        dispatcher = Dispatcher(
            pool, email, metrics, work_available, max_attempts=settings.max_send_attempts
        )
        await broker.start()
        await dispatcher.start()
        await lag.start()
        log.info("service.started", port=settings.http_port)
        try:
            yield
        finally:
            await lag.stop()
            await dispatcher.stop()
            await broker.stop()
            await pool.close()

    app = FastAPI(title="Chibo — notifications", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)

    add_operational_routes(
        app, registry, {"postgres": postgres_check(app), "kafka": broker_check(broker)}
    )
    return app


def main() -> None:
    settings = NotificationsSettings()
    serve(build_app(settings), settings)
