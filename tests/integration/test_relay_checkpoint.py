"""A database restored from a logical dump hands out low transaction ids again, while its
relay checkpoint names the old ones: the relay must refuse to lead on it (nothing past it
would ever be published), not sit silent with a lag of 0."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from ops.stack import Stack
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.relay import CheckpointAhead, EventRelay
from services.meetings.bootstrap import MIGRATIONS
from shared.postgres import migrate
from shared.settings import KafkaSettings
from tests.integration.helpers import close_pool


async def test_a_checkpoint_past_the_databases_transaction_ids_stops_the_relay(
    stack: Stack,
) -> None:
    database = f"restored_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'create database "{database}"')
    url = stack.database_url.rsplit("/", 1)[0] + f"/{database}"
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await migrate(pool, "meetings", MIGRATIONS)
        metrics = MeetingsMetrics(CollectorRegistry())
        relay = EventRelay(
            pool, url, KafkaSettings(bootstrap_servers=stack.kafka_bootstrap), metrics
        )
        registry = metrics.registry

        # A checkpoint this database has reached: the relay leads (checked, then it starts
        # publishing; the check itself is what is tested here).
        relay._position = (0, 0)
        await relay._check_checkpoint()
        assert registry.get_sample_value("chibo_relay_checkpoint_ahead") == 0

        # The checkpoint of the cluster the dump came from: far past this one's ids.
        next_txid = await pool.fetchval(
            "select pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        )
        await pool.execute(
            "insert into meetings.relay_checkpoint (relay_name, transaction_id, global_position)"
            " values ('kafka-events', $1::text::xid8, 123456)",
            str(next_txid + 5_000_000),
        )
        with pytest.raises(CheckpointAhead, match="chibo events republish"):
            await relay._lead()
        assert registry.get_sample_value("chibo_relay_checkpoint_ahead") == 1
    finally:
        await close_pool(pool)
        await admin.execute(f'drop database "{database}" with (force)')
        await admin.close()
