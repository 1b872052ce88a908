"""Wires the meetings service: settings → pool → event store → command bus → HTTP, relay."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from faststream.middlewares import AckPolicy
from prometheus_client import CollectorRegistry

from services.meetings.adapters.event_store import PostgresEventStore
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.org_directory import OrgDirectory
from services.meetings.adapters.relay import EventRelay
from services.meetings.domain.petition import PetitionPolicy
from services.meetings.entrypoints.http import command_router, install_unstorable_handler
from services.meetings.entrypoints.http_contacts import contacts_router
from services.meetings.entrypoints.kafka_commands import KafkaCommandIntake
from services.meetings.service_layer.deadline_scheduler import (
    DeadlineScheduler,
    warn_of_levels_off_the_ladder,
)
from services.meetings.service_layer.handlers import CommandBus
from shared.clock import Clock
from shared.consumer import freeze_startup_objects, make_broker, undecoded
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
INTAKE_GROUP = "chibo-meetings-intake"
log = get_logger(__name__)


class MeetingsSettings(ServiceSettings):
    service_name: str = "meetings"
    http_port: int = 8001
    relay_batch_size: int = 1000
    intake_batch_size: int = 500
    # More than one helped where PostgreSQL answers slowly, and hurt in the benchmark
    # (docs/benchmarks.md, "Write side"): one by default.
    intake_consumers: int = 1
    aggregate_cache_streams: int = 10_000
    # Upstream publishers allowed on the inbound commands topic, comma-separated.
    inbound_allowed_sources: str = ""
    # The escalation ladder from the cell up, LEVEL:DAYS to resolve at that level.
    petition_ladder: str = "cell:7,ward:15,district:30,province:45"
    recurring_window_days: int = 180
    scheduler_enabled: bool = True
    scheduler_interval_s: float = 0.25
    scheduler_batch: int = 500
    scheduler_lease_s: float = 30.0

    def allowed_sources(self) -> frozenset[str]:
        return frozenset(s.strip() for s in self.inbound_allowed_sources.split(",") if s.strip())


def build_app(settings: MeetingsSettings, clock: Clock | None = None) -> FastAPI:
    tokens = settings.tokens()  # fails fast without AUTH_JWT_SECRET
    policy = PetitionPolicy.parse(settings.petition_ladder, settings.recurring_window_days)
    if clock is None:
        clock = settings.clock()
    registry = CollectorRegistry()
    metrics = MeetingsMetrics(registry)
    kafka = settings.kafka
    broker = make_broker(kafka, registry, settings.service_name)
    state: dict[str, object] = {}
    lag = ConsumerLagMonitor(
        kafka, INTAKE_GROUP, [kafka.commands_topic], registry, dlq_topic=kafka.dlq_topic
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        # Nothing here leaves session state on a pooled connection (the relay's advisory lock
        # has a connection of its own; the migration lock is released in a finally), so a
        # release skips the reset query: a round trip per batch, relay poll and check.
        pool = await create_pool(
            settings.database_url,
            settings.db_pool_min,
            settings.db_pool_max,
            reset_session=False,
        )
        await migrate(pool, "meetings", MIGRATIONS)
        await warn_of_levels_off_the_ladder(pool, policy)
        await ensure_topics(kafka, [kafka.events_topic, kafka.commands_topic, kafka.dlq_topic])
        store = PostgresEventStore(pool, metrics, settings.aggregate_cache_streams)
        bus = CommandBus(store, OrgDirectory(pool), clock, metrics, policy)
        scheduler = DeadlineScheduler(
            pool,
            bus,
            clock,
            metrics,
            policy,
            interval_s=settings.scheduler_interval_s,
            batch=settings.scheduler_batch,
            lease_s=settings.scheduler_lease_s,
        )
        relay = EventRelay(
            pool, settings.database_url, kafka, metrics, batch_size=settings.relay_batch_size
        )
        dead_lettered = KafkaCommandIntake.dlq_counter(kafka, registry)
        # INTAKE_CONSUMERS > 1: several consumers of the group in this process, each with its
        # own partitions and connection, so one batch is decided while another waits for
        # PostgreSQL. A partition (so a ward) still has one reader.
        for _ in range(settings.intake_consumers):
            intake = KafkaCommandIntake(
                bus, broker, kafka, settings.allowed_sources(), clock, dead_lettered
            )
            broker.subscriber(
                kafka.commands_topic,
                group_id=INTAKE_GROUP,
                batch=True,
                max_records=settings.intake_batch_size,
                auto_offset_reset="earliest",
                ack_policy=AckPolicy.MANUAL,  # the intake acks, or rewinds every partition
                decoder=undecoded,
            )(intake)
        app.state.pool = pool
        state.update(relay=relay)
        app.state.bus = bus
        app.state.tokens = tokens
        await relay.start()
        if settings.scheduler_enabled:
            await scheduler.start()
        await broker.start()
        await lag.start()
        log.info("service.started", port=settings.http_port)
        try:
            yield
        finally:
            await lag.stop()
            await broker.stop()
            await scheduler.stop()
            await relay.stop()
            await pool.close()

    app = FastAPI(title="Chibo — meetings (write side)", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    install_unstorable_handler(app)
    app.include_router(command_router())
    app.include_router(contacts_router())

    async def relay_ready() -> bool:
        relay = state.get("relay")
        return relay is not None and relay.healthy()  # type: ignore[attr-defined]

    # Commands need only Postgres; the relay catches up when Kafka is back.
    add_operational_routes(
        app,
        registry,
        {"postgres": postgres_check(app)},
        informational={"relay": relay_ready, "kafka": broker_check(broker)},
    )
    return app


def tune_gc() -> None:
    """The intake allocates a few hundred thousand short-lived objects per second beside a
    large long-lived heap (the stream cache). A batch of 500 commands has some 10-20
    thousand objects alive at its peak, most of them gone when it ends: with a gen-0
    threshold near that (it was 10,000) a collection ran in nearly every batch, at its
    peak, walked everything the batch had made and promoted it, and the promoted objects
    made the older collections walk them again (py-spy: ~13-15% of the intake's busy time,
    at the list comprehension of CommandBus._run that happened to cross the threshold).
    Above the peak (100,000), a batch's objects are freed by reference counting before a
    collection sees them; the count of net allocations only grows with what stays (the
    cache, bounded), so collections become rare."""
    freeze_startup_objects(young_threshold=100_000)


def main() -> None:
    settings = MeetingsSettings()
    tune_gc()
    serve(build_app(settings), settings)
