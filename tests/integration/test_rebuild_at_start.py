"""Replicas of the reports service that start together after an upgrade (a new projection
version) queue on the rebuild's lock: the first rebuilds, the others find the new version
under the lock and do not rebuild again."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ops.stack import Stack
from services.reports.bootstrap import MIGRATIONS
from services.reports.service_layer.rebuild import (
    PROJECTION_VERSION,
    history_can_expire,
    rebuild_if_outdated,
)
from shared.kafka import TopicConfigUnreadable, ensure_topics, topic_retention
from shared.postgres import migrate
from shared.settings import KafkaSettings
from tests.integration.helpers import close_pool


async def test_replicas_starting_together_rebuild_once(stack: Stack) -> None:
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
    pools = [
        await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2) for _ in range(3)
    ]
    try:
        await migrate(pools[0], "reports", MIGRATIONS)
        await pools[0].execute("delete from reports.projection_version")  # "an upgrade"

        results = await asyncio.gather(*(rebuild_if_outdated(pool, kafka) for pool in pools))

        assert sum(r is not None for r in results) == 1, results
        assert await pools[0].fetchval("select max(version) from reports.projection_version") == (
            PROJECTION_VERSION
        )
        assert (
            await asyncio.gather(*(rebuild_if_outdated(pool, kafka) for pool in pools))
            == [None] * 3
        )
    finally:
        for pool in pools:
            await close_pool(pool)


async def test_an_events_topic_whose_history_can_expire_is_reported(stack: Stack) -> None:
    """A topic created as docs/scaling.md once said (30 days) lets the first events
    expire, after which no rebuild can replay it: the start-up check says so."""
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
    assert await history_can_expire(kafka) is False  # as the services create it: unlimited
    # The events' dead letters too: parked streams wait for them.
    assert await topic_retention(kafka, kafka.events_dlq_topic) == {
        "retention.ms": -1,
        "retention.bytes": -1,
    }

    expiring = f"chibo.events.expiring-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(expiring, 1, 1, topic_configs={"retention.ms": "2592000000"})]
        )
    finally:
        await admin.close()
    expiring_kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, events_topic=expiring)
    assert await topic_retention(expiring_kafka, expiring) == {
        "retention.ms": 2_592_000_000,
        "retention.bytes": -1,
    }
    assert await history_can_expire(expiring_kafka) is True
    # A topic whose configuration the broker will not give (here: none such) is not
    # taken for one kept for ever.
    missing = f"chibo.events.missing-{uuid.uuid4().hex[:8]}"
    missing_kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, events_topic=missing)
    with pytest.raises(TopicConfigUnreadable):
        await topic_retention(missing_kafka, missing)
    assert await history_can_expire(missing_kafka) is True
