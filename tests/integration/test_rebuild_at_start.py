"""Replicas of the reports service that start together after an upgrade (a new projection
version) queue on the rebuild's lock: the first rebuilds, the others find the new version
under the lock and do not rebuild again. A replica of an older release (a rolling update
under way, a restart of an old pod) never rebuilds the tables back to its version.

Each test has a database of its own: the stack's reports service stops consuming when
its tables' version is not its own, and these tests change it."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from typer.testing import CliRunner

from ops.cli import app
from ops.stack import Stack
from services.reports.bootstrap import MIGRATIONS
from services.reports.service_layer.rebuild import (
    PROJECTION_VERSION,
    BuiltByNewerCode,
    RebuildResult,
    history_can_expire,
    rebuild_if_outdated,
)
from shared.kafka import TopicConfigUnreadable, ensure_topics, topic_retention
from shared.postgres import migrate
from shared.settings import KafkaSettings
from tests.integration.helpers import close_pool, own_database


async def test_replicas_starting_together_rebuild_once(stack: Stack) -> None:
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
    async with own_database(stack) as database_url:
        pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=2) for _ in range(3)]
        try:
            await migrate(pools[0], "reports", MIGRATIONS)
            await pools[0].execute("delete from reports.projection_version")  # "an upgrade"

            results = await asyncio.gather(*(rebuild_if_outdated(pool, kafka) for pool in pools))

            assert sum(r is not None for r in results) == 1, results
            assert await pools[0].fetchval(
                "select max(version) from reports.projection_version"
            ) == (PROJECTION_VERSION)
            assert (
                await asyncio.gather(*(rebuild_if_outdated(pool, kafka) for pool in pools))
                == [None] * 3
            )
        finally:
            for pool in pools:
                await close_pool(pool)


async def _version(pool: asyncpg.Pool) -> tuple[int, object]:
    row = await pool.fetchrow("select version, rebuilt_at from reports.projection_version")
    assert row is not None
    return row["version"], row["rebuilt_at"]


async def test_a_replica_of_an_older_release_does_not_rebuild_back(stack: Stack) -> None:
    """An old pod restarted mid-rollout finds the tables built by the new release: it
    leaves them be (no flip-flop of rebuilds between the releases)."""
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
    async with own_database(stack) as database_url:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            await migrate(pool, "reports", MIGRATIONS)
            assert await rebuild_if_outdated(pool, kafka) is not None
            built = await _version(pool)
            assert built[0] == PROJECTION_VERSION

            with pytest.raises(BuiltByNewerCode) as refused:
                await rebuild_if_outdated(pool, kafka, version=PROJECTION_VERSION - 1)

            assert (refused.value.built, refused.value.ours) == (
                PROJECTION_VERSION,
                PROJECTION_VERSION - 1,
            )
            assert await _version(pool) == built  # not rebuilt: same version, same moment
        finally:
            await close_pool(pool)


async def test_an_old_and_a_new_replica_starting_together_end_on_the_new_version(
    stack: Stack,
) -> None:
    """Both find the tables outdated and queue on the lock. Whichever comes second under
    it decides again there: the new one rebuilds over the old one's tables, the old one
    finds the new version and refuses. Either way the new version stays."""
    kafka = KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
    await ensure_topics(kafka, [kafka.events_topic, kafka.events_dlq_topic])
    async with own_database(stack) as database_url:
        pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=2) for _ in range(2)]
        try:
            await migrate(pools[0], "reports", MIGRATIONS)
            old, new = await asyncio.gather(
                rebuild_if_outdated(pools[0], kafka, version=PROJECTION_VERSION - 1),
                rebuild_if_outdated(pools[1], kafka),
                return_exceptions=True,
            )
            assert isinstance(new, RebuildResult), new
            assert isinstance(old, RebuildResult | BuiltByNewerCode), old  # first, or refused
            assert (await _version(pools[0]))[0] == PROJECTION_VERSION
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


async def test_the_rebuild_before_a_rollout_migrates_runs_once_and_does_not_go_back(
    stack: Stack,
) -> None:
    """`chibo reports rebuild --migrate --if-outdated`, as deploy/k8s/jobs/reports-rebuild
    runs it with the new release's image before the rollout: it brings the schema and the
    tables to this version, a second run does nothing, and the replicas then start
    without a rebuild. It refuses tables of a newer version unless told it is a rollback."""
    await ensure_topics(
        KafkaSettings(bootstrap_servers=stack.kafka_bootstrap),
        ["chibo.events.v1", "chibo.events.dlq.v1"],
    )
    async with own_database(stack) as database_url:
        env = {"KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap, "DATABASE_URL": database_url}

        def rebuild(*options: str) -> Any:
            return CliRunner().invoke(app, ["reports", "rebuild", "--json", *options], env=env)

        first = rebuild("--migrate", "--if-outdated")
        assert first.exit_code == 0, first.output
        assert json.loads(first.stdout)["already_current"] is False
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            built = await _version(pool)
            assert built[0] == PROJECTION_VERSION

            again = rebuild("--migrate", "--if-outdated")
            assert again.exit_code == 0, again.output
            assert json.loads(again.stdout)["already_current"] is True
            assert await _version(pool) == built
            # A replica of this release starts at once: nothing to rebuild.
            assert (
                await rebuild_if_outdated(
                    pool, KafkaSettings(bootstrap_servers=stack.kafka_bootstrap)
                )
                is None
            )

            await pool.execute(
                "update reports.projection_version set version = $1", PROJECTION_VERSION + 1
            )
            refused = rebuild()
            assert refused.exit_code == 5, refused.output
            assert "--allow-downgrade" in refused.output
            assert (await _version(pool))[0] == PROJECTION_VERSION + 1

            rolled_back = rebuild("--allow-downgrade")
            assert rolled_back.exit_code == 0, rolled_back.output
            assert (await _version(pool))[0] == PROJECTION_VERSION
        finally:
            await close_pool(pool)
