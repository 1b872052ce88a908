"""The event store and relay on the real PostgreSQL and Kafka: concurrency, idempotency,
upcasting from stored rows, and a transaction that commits late."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from ops.stack import Stack
from services.meetings.adapters.event_store import (
    AppendResult,
    ConcurrencyConflict,
    EventMetadata,
    KeyedResult,
    PostgresEventStore,
)
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.relay import _SELECT_BATCH
from shared.contract import MeetingKind, MeetingScheduled
from shared.postgres import create_pool
from tests.integration.helpers import close_pool, eventually, unique_ward

META = EventMetadata(actor="test", source="test", occurred_at=datetime.now(UTC))


def scheduled(ward: str, n: int = 1) -> MeetingScheduled:
    return MeetingScheduled(
        meeting_id=f"{ward}.m{n}",
        ward_id=ward,
        cell_id=f"{ward}.to-01",
        kind=MeetingKind.REGULAR,
        scheduled_start=datetime(2026, 12, 3, 12, 30, tzinfo=UTC),
    )


@pytest.fixture()
async def pool(running_stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(running_stack.database_url, min_size=2, max_size=4)
    assert pool is not None
    yield pool
    await close_pool(pool)


def new_store(pool: asyncpg.Pool, cache: int = 100) -> PostgresEventStore:
    return PostgresEventStore(pool, MeetingsMetrics(CollectorRegistry()), cache)


async def test_two_writers_on_one_version_one_wins_one_gets_a_conflict(
    pool: asyncpg.Pool,
) -> None:
    ward = unique_ward()
    stream = f"meeting-{ward}"
    first, second = new_store(pool), new_store(pool)
    # Both load the empty stream, then both append as version 1 from two connections.
    assert (await first.load(stream))[0] == 0
    assert (await second.load(stream))[0] == 0
    conn_a = await pool.acquire()
    tx_a = conn_a.transaction()
    await tx_a.start()
    await first.append(conn_a, stream, ward, 0, [scheduled(ward)], META)

    async def second_writer() -> None:
        async with second.transaction() as conn_b:
            await second.append(conn_b, stream, ward, 0, [scheduled(ward, 2)], META)

    racing = asyncio.create_task(second_writer())  # blocks on A's uncommitted stream row
    await tx_a.commit()
    await pool.release(conn_a)
    with pytest.raises(ConcurrencyConflict) as conflict:
        await racing
    assert conflict.value.stream_id == stream
    # The loser learns the version it lost to, read once its statement was rolled back.
    assert (conflict.value.expected, conflict.value.actual) == (0, 1)
    # A stale expected version further on is a conflict too, not a gap in the stream.
    with pytest.raises(ConcurrencyConflict) as stale:
        async with second.transaction() as conn_b:
            await second.append(conn_b, stream, ward, 5, [scheduled(ward, 3)], META)
    assert stale.value.actual == 1
    rows = await pool.fetch(
        "select stream_version from meetings.events where stream_id = $1", stream
    )
    assert [r["stream_version"] for r in rows] == [1]


async def test_idempotency_key_returns_the_first_result_and_appends_nothing(
    pool: asyncpg.Pool,
) -> None:
    ward = unique_ward()
    store = new_store(pool)
    key = f"test:{uuid.uuid4()}"
    async with store.transaction() as conn:
        first = await store.append(conn, f"meeting-{ward}", ward, 0, [scheduled(ward)], META, key)
    again = await store.results_for_keys([key])
    assert again[key].event_ids == first.event_ids and again[key].replayed
    count = await pool.fetchval(
        "select count(*) from meetings.events where stream_id = $1", f"meeting-{ward}"
    )
    assert count == 1


async def test_a_replay_reads_the_whole_first_result_back_from_the_events(
    pool: asyncpg.Pool,
) -> None:
    ward = unique_ward()
    store = new_store(pool)
    stream = f"meeting-{ward}"
    async with store.transaction() as conn:
        await store.append(conn, stream, ward, 0, [scheduled(ward)], META)
    key = f"test:{uuid.uuid4()}"
    async with store.transaction() as conn:  # two events, at versions 2 and 3
        first = await store.append(
            conn, stream, ward, 1, [scheduled(ward, 2), scheduled(ward, 3)], META, key
        )
    empty_key = f"test:{uuid.uuid4()}"
    async with store.transaction() as conn:  # a command that appended nothing
        await store.write(conn, [], [], [KeyedResult(empty_key, stream, 3, 0)])
    again = await store.results_for_keys([key, empty_key])
    assert again[key] == dataclasses.replace(first, replayed=True)
    assert len(first.global_positions) == 2 and first.stream_version == 3
    assert again[empty_key] == AppendResult(stream, 3, [], [], replayed=True)


async def test_a_key_kept_with_its_result_as_json_replays_that_result(
    pool: asyncpg.Pool,
) -> None:
    """Keys written before migration 007 carry a JSON copy of the result."""
    ward = unique_ward()
    key = f"test:{uuid.uuid4()}"
    kept = AppendResult(f"meeting-{ward}", 1, [41], [uuid.uuid4()])
    await pool.execute(
        "insert into meetings.idempotency_keys (idempotency_key, stream_id, result)"
        " values ($1, $2, $3::jsonb)",
        key,
        kept.stream_id,
        json.dumps(kept.to_json()),
    )
    again = await new_store(pool).results_for_keys([key])
    assert again[key] == dataclasses.replace(kept, replayed=True)


async def test_a_stored_v1_row_loads_upcast_and_the_cache_sees_later_appends(
    pool: asyncpg.Pool,
) -> None:
    ward = unique_ward()
    stream = f"meeting-{ward}"
    v1_payload = scheduled(ward).model_dump(mode="json", exclude={"location"})
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "insert into meetings.streams (stream_id, ward_id, version) values ($1, $2, 1)",
            stream,
            ward,
        )
        await conn.execute(
            "insert into meetings.events (event_id, stream_id, stream_version, event_type,"
            " schema_version, ward_id, payload, occurred_at, actor, source)"
            " values ($1, $2, 1, 'MeetingScheduled', 1, $3, $4::jsonb, now(), 'test', 'test')",
            uuid.uuid4(),
            stream,
            ward,
            json.dumps(v1_payload),
        )
    store = new_store(pool)
    version, events = await store.load(stream)
    assert version == 1 and isinstance(events[0], MeetingScheduled)
    assert events[0].location is None
    # Another writer appends; the cached stream picks up only the new event.
    other = new_store(pool)
    async with other.transaction() as conn:
        await other.append(conn, stream, ward, 1, [scheduled(ward, 2)], META)
    version, events = await store.load(stream)
    assert version == 2 and isinstance(events[1], MeetingScheduled)
    assert events[1].meeting_id == f"{ward}.m2"


async def test_a_late_committing_transaction_is_relayed_not_skipped(
    running_stack: Stack, pool: asyncpg.Pool
) -> None:
    ward = unique_ward()
    store = new_store(pool)
    late = await pool.acquire()
    late_tx = late.transaction()
    await late_tx.start()
    try:
        # A takes its position first but commits last.
        a = await store.append(late, f"meeting-{ward}-a", ward, 0, [scheduled(ward, 1)], META)
        async with store.transaction() as conn:
            b = await store.append(conn, f"meeting-{ward}-b", ward, 0, [scheduled(ward, 2)], META)
        assert b.global_positions[0] > a.global_positions[0]
        # B is committed, yet nothing at or after the open transaction may be relayed.
        visible = await pool.fetch(_SELECT_BATCH, "0", 0, 1_000_000)
        visible_ids = {uuid.UUID(r["event_id"]) for r in visible}  # the relay reads ids as text
        assert b.event_ids[0] not in visible_ids
        await late_tx.commit()
    except BaseException:
        await late_tx.rollback()
        raise
    finally:
        await pool.release(late)

    consumer = AIOKafkaConsumer(
        "chibo.events.v1",
        bootstrap_servers=running_stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    offsets: dict[str, int] = {}
    wanted = {str(a.event_ids[0]): "a", str(b.event_ids[0]): "b"}
    try:

        async def both_relayed() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if record.key != ward.encode():
                        continue
                    event_id = json.loads(record.value)["event_id"]
                    if event_id in wanted:
                        offsets.setdefault(wanted[event_id], record.offset)
            return len(offsets) == 2

        await eventually(both_relayed, what="both events relayed")
    finally:
        await consumer.stop()
    assert offsets["a"] < offsets["b"]  # same ward, same partition: relay order is kept


async def test_a_pool_without_the_session_reset_still_rolls_back_what_was_left_open(
    running_stack: Stack,
) -> None:
    """The meetings service's pool skips asyncpg's reset query on release."""
    pool = await create_pool(running_stack.database_url, 1, 1, reset_session=False)
    try:
        async with pool.acquire() as conn:
            await conn.execute("begin")  # not a managed conn.transaction(): left open
            await conn.execute("create temp table left_open (x int)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("select to_regclass('pg_temp.left_open')") is None
    finally:
        await close_pool(pool)
