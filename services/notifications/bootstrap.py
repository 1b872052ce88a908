"""Wires the notifications service: events topic → notifier (directory, timers, outbox) →
dispatcher → channels (SMTP e-mail, signed webhook, log); timers → scheduler → outbox."""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import Field, SecretStr

from services.notifications.adapters.channels import (
    Channel,
    EmailChannel,
    LogChannel,
    WebhookChannel,
)
from services.notifications.adapters.contacts import ContactsClient
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.adapters.rate_limit import TokenBucket, parse_rates
from services.notifications.adapters.templating import TemplateRenderer
from services.notifications.domain.notices import (
    CHANNELS,
    QuietHours,
    parse_leads,
    parse_local_time,
)
from services.notifications.entrypoints.http import preferences_router
from services.notifications.service_layer.dispatcher import Dispatcher
from services.notifications.service_layer.notifier import Notifier
from services.notifications.service_layer.outbox import NotifyConfig, Outbox
from services.notifications.service_layer.scheduler import TimerScheduler
from shared.auth import Role, TokenService
from shared.clock import Clock
from shared.consumer import EventConsumer, freeze_startup_objects, make_broker, subscribe_events
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
    # -- e-mail
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_connections: int = 8  # open SMTP connections: also the duplicate window on a crash
    mail_from: str = "Chibo <thong-bao@chibo.local>"
    # A cell's shared mailbox, e.g. "chi-bo.{cell_id}@example.org", also receives meeting
    # notices; off ("") unless a deployment names its real mail domain.
    cell_mailbox_pattern: str = ""
    # -- webhook (SMS / Zalo gateways); enabled when both are set
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # -- contacts, looked up at send time in the meetings service with a system token
    # minted for each call from AUTH_JWT_SECRET (short-lived, so it never runs out)
    contacts_url: str = "http://127.0.0.1:8001"
    # -- rules
    notify_default_channels: str = "email"
    notify_channels: str = ",".join(CHANNELS)  # channels this deployment may use
    quiet_hours: str = "22:00-06:00"  # Asia/Ho_Chi_Minh; "off" disables
    meeting_reminder_leads: str = "24h"
    petition_deadline_leads: str = "48h,4h"
    attendance_threshold: float = 0.9
    # A regular meeting not held by this day is reported; every month has it (1..28).
    meeting_missing_day: Annotated[int, Field(ge=1, le=28)] = 10
    # Ladder levels whose units are wards (đảng bộ phường / xã) and owe the monthly report:
    # the same variable and default as the reports service (services/reports/bootstrap.py).
    report_ward_levels: str = "ward,commune"
    digest_at: str = ""  # e.g. "07:00": low notices folded into a daily digest; "" = off
    templates_dir: Path | None = None
    # -- delivery
    rate_limits: str = "email:2000,webhook:50,log:0"  # per second and replica, 0 = unlimited
    # A temporary failure is retried, RETRY_BASE_S doubling up to RETRY_MAX_S, for this
    # long after the first attempt: an outage of hours delays notices, it does not lose them.
    retry_give_up_s: Annotated[float, Field(gt=0)] = 6 * 3600.0
    retry_base_s: Annotated[float, Field(gt=0)] = 2.0
    retry_max_s: Annotated[float, Field(gt=0)] = 300.0
    # A failing timer is retried with the same backoff, then set aside as dead.
    timer_max_attempts: Annotated[int, Field(ge=1)] = 10
    dispatch_batch: int = 500
    dispatch_concurrency: int = 16
    dispatch_lease_s: float = 60.0
    dispatch_poll_s: float = 1.0
    scheduler_interval_s: float = 0.25

    def config(self) -> NotifyConfig:
        enabled = tuple(c.strip() for c in self.notify_channels.split(",") if c.strip())
        if not (self.webhook_url and self.webhook_secret):
            enabled = tuple(c for c in enabled if c != "webhook")
        default = tuple(c.strip() for c in self.notify_default_channels.split(",") if c.strip())
        if not default or set(default) - set(enabled):
            # The fallback of everyone without a usable preference: it must exist.
            raise ValueError(
                f"NOTIFY_DEFAULT_CHANNELS={self.notify_default_channels!r} must name channels"
                f" this deployment has: {', '.join(enabled)} (a webhook needs WEBHOOK_URL"
                " and WEBHOOK_SECRET)"
            )
        return NotifyConfig(
            default_channels=default,
            enabled_channels=enabled,
            quiet_hours=QuietHours.parse(self.quiet_hours),
            reminder_leads=parse_leads(self.meeting_reminder_leads),
            deadline_leads=parse_leads(self.petition_deadline_leads),
            attendance_threshold=self.attendance_threshold,
            meeting_missing_day=self.meeting_missing_day,
            digest_at=parse_local_time(self.digest_at),
            cell_mailbox_pattern=self.cell_mailbox_pattern,
            report_levels=frozenset(
                s.strip() for s in self.report_ward_levels.split(",") if s.strip()
            ),
        )


PLACEHOLDER = "REPLACE_ME"  # deploy/k8s/secret.template.yaml's mark


def _refuse_placeholders(settings: NotificationsSettings) -> None:
    """A secret this service will use that still holds the template's placeholder stops
    the start: running with it would fail every send (or every look-up) later, quietly."""
    used = {"AUTH_JWT_SECRET": settings.auth_jwt_secret}
    if settings.smtp_username:
        used["SMTP_PASSWORD"] = settings.smtp_password
    if settings.webhook_url:
        used["WEBHOOK_SECRET"] = settings.webhook_secret
    left = sorted(n for n, v in used.items() if v and PLACEHOLDER in v.get_secret_value())
    if left:
        raise SystemExit(
            f"{', '.join(left)} still hold the placeholder {PLACEHOLDER}:"
            " set the real values (deploy/k8s/secret.template.yaml)"
        )


def _contacts_tokens(settings: NotificationsSettings) -> TokenService:
    """The look-up's tokens are minted here, for each call, so none can expire in service;
    a configured CONTACTS_TOKEN (a long-lived token, which did) is no longer read."""
    _refuse_placeholders(settings)
    if os.environ.get("CONTACTS_TOKEN"):
        log.warning(
            "settings.contacts_token_ignored",
            detail="CONTACTS_TOKEN is not read: look-up tokens are minted from AUTH_JWT_SECRET",
        )
    return settings.tokens()  # refuses to start without a 32+ character AUTH_JWT_SECRET


def build_app(settings: NotificationsSettings, clock: Clock | None = None) -> FastAPI:
    config = settings.config()  # fails fast on a malformed rule
    if clock is None:
        clock = settings.clock()
    registry = CollectorRegistry()
    metrics = NotificationsMetrics(registry)
    kafka = settings.kafka
    broker = make_broker(kafka, registry, settings.service_name)
    lag = ConsumerLagMonitor(
        kafka, CONSUMER_GROUP, [kafka.events_topic], registry, dlq_topic=kafka.events_dlq_topic
    )
    tokens = _contacts_tokens(settings)

    def contacts_token() -> str:
        return tokens.issue(
            "notifications", Role.SYSTEM_PUBLISHER, "system", None, ttl=timedelta(minutes=10)
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await migrate(pool, "notifications", MIGRATIONS)
        await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
        app.state.pool = pool
        work_available = asyncio.Event()
        outbox = Outbox(TemplateRenderer(settings.templates_dir), metrics, config)
        consumer = EventConsumer(
            settings.service_name,
            "notifications",
            pool,
            broker,
            kafka,
            Notifier(outbox, clock),
            registry,
            after_commit=work_available.set,  # the dispatcher sees committed rows at once
        )
        subscribe_events(
            broker, kafka.events_topic, CONSUMER_GROUP, settings.consumer_batch_size, consumer
        )
        channels: dict[str, Channel] = {"log": LogChannel()}
        if "email" in config.enabled_channels:
            channels["email"] = EmailChannel(
                settings.smtp_host,
                settings.smtp_port,
                settings.mail_from,
                connections=settings.smtp_connections,
                start_tls=settings.smtp_starttls,
                username=settings.smtp_username,
                password=settings.smtp_password,
                clock=clock,
            )
        if settings.webhook_url and settings.webhook_secret:
            channels["webhook"] = WebhookChannel(settings.webhook_url, settings.webhook_secret)
        dispatcher = Dispatcher(
            pool,
            channels,
            ContactsClient(settings.contacts_url, contacts_token),
            metrics,
            clock,
            work_available,
            rate_limits={
                name: TokenBucket(rate) for name, rate in parse_rates(settings.rate_limits).items()
            },
            give_up_after_s=settings.retry_give_up_s,
            retry_base_s=settings.retry_base_s,
            retry_max_s=settings.retry_max_s,
            batch=settings.dispatch_batch,
            concurrency=settings.dispatch_concurrency,
            lease_s=settings.dispatch_lease_s,
            poll_interval_s=settings.dispatch_poll_s,
        )
        scheduler = TimerScheduler(
            pool,
            outbox,
            clock,
            metrics,
            work_available.set,
            interval_s=settings.scheduler_interval_s,
            max_attempts=settings.timer_max_attempts,
            retry_base_s=settings.retry_base_s,
            retry_max_s=settings.retry_max_s,
        )
        freeze_startup_objects()  # before the first batch
        await broker.start()
        await dispatcher.start()
        await scheduler.start()
        await lag.start()
        log.info("service.started", port=settings.http_port)
        try:
            yield
        finally:
            await lag.stop()
            await scheduler.stop()
            await dispatcher.stop()
            await broker.stop()
            await pool.close()

    app = FastAPI(title="Chibo — notifications", version="0.2.0", lifespan=lifespan)
    install_error_handlers(app)
    app.state.tokens = tokens
    app.include_router(preferences_router(config.default_channels, config.enabled_channels))

    add_operational_routes(
        app, registry, {"postgres": postgres_check(app), "kafka": broker_check(broker)}
    )
    return app


def main() -> None:
    settings = NotificationsSettings()
    serve(build_app(settings), settings)
