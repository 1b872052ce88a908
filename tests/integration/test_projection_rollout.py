"""A rolling update of the reports service that changes ``PROJECTION_VERSION``: a replica
of the old release keeps consuming until the new release's rebuild commits, then its
next batch is refused (rolled back, not acknowledged), it leaves the group and reports
not ready; the new release's replica, which finds the tables current and starts at once,
applies those events from the group's committed offsets. None lost, none twice.

Real reports apps (``build_app``, their lifespans run in this process) against a
database, an events topic and a consumer group of their own: the stack's reports
service stops consuming when its tables' version is not its own, and this test changes
it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from pydantic import SecretStr

from ops.stack import Stack
from services.reports import bootstrap
from services.reports.bootstrap import ReportsSettings, build_app
from services.reports.service_layer.rebuild import PROJECTION_VERSION, rebuild_if_outdated
from shared.consumer import EventConsumer
from shared.settings import KafkaSettings
from tests.integration.helpers import close_pool, eventually, metric_from, own_database
from tests.unit.test_event_reading import PAYLOAD, value

OLD = PROJECTION_VERSION - 1


def scheduled(prefix: str, i: int) -> bytes:
    meeting = f"{prefix}.to-{i:02d}.2026-12"
    return value(
        event_id=str(uuid.uuid4()),
        stream_id=f"meeting-{meeting}",
        payload={**PAYLOAD, "meeting_id": meeting},
    )


async def publish(kafka: KafkaSettings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for raw in values:
            stream = json.loads(raw)["stream_id"]
            await producer.send_and_wait(kafka.events_topic, raw, key=stream.encode())
    finally:
        await producer.stop()


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app started as uvicorn would (its lifespan), and a client to its routes."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://reports") as client:
            yield client


async def applied(pool: asyncpg.Pool, prefix: str) -> dict[str, int]:
    rows = await pool.fetch(
        "select stream_id, version from reports.applied_streams where stream_id like $1",
        f"meeting-{prefix}.%",
    )
    return {r["stream_id"]: r["version"] for r in rows}


def topics_of_its_own(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, partitions: int
) -> tuple[str, KafkaSettings]:
    """An events topic, DLQ and consumer group of the test's own (the stack's reports
    service must not read these events, nor these replicas the stack's)."""
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap_servers=stack.kafka_bootstrap,
        events_topic=f"chibo.events.rollout-{suffix}",
        events_dlq_topic=f"chibo.events.dlq.rollout-{suffix}",
        partitions=partitions,
    )
    monkeypatch.setattr(bootstrap, "CONSUMER_GROUP", f"chibo-reports-rollout-{suffix}")
    return suffix, kafka


async def test_an_old_replica_stops_once_the_new_release_has_rebuilt(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix, kafka = topics_of_its_own(stack, monkeypatch, partitions=3)
    prefix = f"rollout{suffix}"
    before = [scheduled(prefix, i) for i in range(12)]
    after = [scheduled(prefix, i) for i in range(12, 24)]

    async with own_database(stack) as database_url, AsyncExitStack() as stop:
        settings = ReportsSettings(
            database_url=database_url,
            kafka=kafka,
            auth_jwt_secret=SecretStr("rollout-test-secret-" + "x" * 32),
            consumer_batch_size=50,
        )
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        stop.push_async_callback(close_pool, pool)

        # The old release runs alone and consumes.
        old_app = build_app(settings, projection_version=OLD)
        old = await stop.enter_async_context(running(old_app))
        await publish(kafka, before)
        await eventually(
            lambda: _all_at_one(pool, prefix, 12), timeout_s=60, what="the old replica applies"
        )
        assert (await old.get("/ready")).json()["checks"]["projection_version"] == "ok"

        # The new release's first replica rebuilds at its start (what its lifespan does
        # first); the old replica is still the group's only member.
        assert await rebuild_if_outdated(pool, kafka) is not None
        rebuilt = await version_row(pool)
        assert rebuilt[0] == PROJECTION_VERSION
        assert await _all_at_one(pool, prefix, 12)

        # Events after the rebuild: the old replica refuses them and stops.
        await publish(kafka, after)
        await eventually(
            lambda: metric_from(
                old,
                "chibo_consumer_refused_batches_total",
                consumer="reports",
                guard="projection_version",
            ),
            timeout_s=60,
            what="the old replica refuses a batch",
        )
        old_consumer: EventConsumer = old_app.state.consumer
        assert old_consumer.refused == "projection_version"
        ready = await old.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {
            "postgres": "ok",
            "kafka": "ok",
            "projection_version": "failing",
        }
        assert len(await applied(pool, prefix)) == 12  # none of the later ones, by old rules

        # The new release's replica finds the tables current (no second rebuild) and
        # applies what the old one refused, from the group's committed offsets.
        new_app = build_app(settings)
        new = await stop.enter_async_context(running(new_app))
        await eventually(
            lambda: _all_at_one(pool, prefix, 24), timeout_s=60, what="the new replica applies"
        )
        assert await version_row(pool) == rebuilt
        assert await pool.fetchval(
            "select count(*) from reports.meetings where meeting_id like $1", f"{prefix}.%"
        ) == (24)
        assert (await new.get("/ready")).json()["checks"]["projection_version"] == "ok"
        assert await metric_from(new, "chibo_consumed_events_total", outcome="applied") == 12
        # The old one stays stopped and out of rotation.
        assert old_consumer.refused == "projection_version"
        assert (await old.get("/ready")).status_code == 503


async def version_row(pool: asyncpg.Pool) -> tuple[int, object]:
    row = await pool.fetchrow("select version, rebuilt_at from reports.projection_version")
    assert row is not None
    return row["version"], row["rebuilt_at"]


async def _all_at_one(pool: asyncpg.Pool, prefix: str, count: int) -> bool:
    versions = await applied(pool, prefix)
    return len(versions) == count and set(versions.values()) == {1}


async def test_a_replica_started_after_the_new_release_rebuilt_does_not_consume(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old pod that restarts mid-rollout: it serves HTTP, reports not ready, and
    neither rebuilds nor consumes."""
    suffix, kafka = topics_of_its_own(stack, monkeypatch, partitions=1)
    prefix = f"restart{suffix}"
    async with own_database(stack) as database_url, AsyncExitStack() as stop:
        settings = ReportsSettings(
            database_url=database_url,
            kafka=kafka,
            auth_jwt_secret=SecretStr("rollout-test-secret-" + "x" * 32),
        )
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        stop.push_async_callback(close_pool, pool)
        new = await stop.enter_async_context(running(build_app(settings)))
        assert (await new.get("/ready")).status_code == 200
        version = await version_row(pool)

        old_app = build_app(settings, projection_version=OLD)
        old = await stop.enter_async_context(running(old_app))
        await publish(kafka, [scheduled(prefix, i) for i in range(5)])
        await eventually(lambda: _all_at_one(pool, prefix, 5), timeout_s=60, what="applied")

        ready = await old.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["projection_version"] == "failing"
        assert await version_row(pool) == version
        assert await metric_from(old, "chibo_consumed_events_total", outcome="applied") == 0
        assert await metric_from(new, "chibo_consumed_events_total", outcome="applied") == 5
