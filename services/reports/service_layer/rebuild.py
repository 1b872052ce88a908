"""Drops the report projections and rebuilds them from the whole events topic.

One transaction: the live consumer waits (its first statement locks ``applied_streams``,
which the rebuild holds exclusively), readers keep seeing the old projection until the
commit, and then the new one at once. The topic's end offsets are read after the lock,
so every event the live consumer had applied is in the rebuild; what comes after is
applied live, and the version check drops what both saw. The same batch projector as
the live consumer makes the rows, so the result equals the live projection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from services.reports.adapters import projection_store
from services.reports.service_layer.projector import project_batch
from shared.consumer import claim_batch
from shared.contract import EVENT_TYPES, DomainEvent, EventEnvelope
from shared.kafka import aiokafka_client_kwargs, topic_partitions
from shared.logs import get_logger
from shared.settings import KafkaSettings

log = get_logger(__name__)

SCHEMA = "reports"
# Raise when the projections' tables or rules change: the service then rebuilds at start.
PROJECTION_VERSION = 2


class HistoryTruncated(RuntimeError):
    """The topic no longer holds its first events (retention), so it cannot be replayed."""


@dataclass
class RebuildResult:
    records: int = 0
    applied: int = 0
    skipped: int = 0  # unreadable or of an unknown type: the live consumer dead-lettered them


Progress = Callable[[int, int], None]  # (records read, records in all)


async def rebuild(
    conn: asyncpg.Connection,
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    batch_size: int = 5_000,
    progress: Progress = lambda done, total: None,
) -> RebuildResult:
    """``consumer`` is started, group-less, and assigned ``partitions``."""
    result = RebuildResult()
    async with conn.transaction():
        await conn.execute(f"lock table {SCHEMA}.applied_streams in exclusive mode")
        starts = await consumer.beginning_offsets(partitions)
        truncated = {tp.partition: o for tp, o in starts.items() if o > 0}
        if truncated:
            raise HistoryTruncated(
                f"partitions {truncated} no longer start at offset 0; set retention.ms=-1"
                " on the events topic and re-publish the history"
            )
        ends = await consumer.end_offsets(partitions)
        total = sum(ends.values())
        await projection_store.clear(conn)
        progress(0, total)
        todo = {tp for tp in partitions if ends[tp] > 0}
        for tp in partitions:
            consumer.seek(tp, 0)
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=1_000, max_records=batch_size)
            batch: list[tuple[EventEnvelope, DomainEvent]] = []
            for tp, records in fetched.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    result.records += 1
                    item = _read(record.value or b"")
                    if item is None:
                        result.skipped += 1
                    else:
                        batch.append(item)
                if records and records[-1].offset >= ends[tp] - 1:
                    todo.discard(tp)
            if batch:
                claimed = await claim_batch(conn, SCHEMA, [e for e, _ in batch])
                fresh = [item for item, new in zip(batch, claimed, strict=True) if new]
                await project_batch(conn, fresh)
                result.applied += len(fresh)
            progress(result.records, total)
        await conn.execute(f"delete from {SCHEMA}.projection_version")
        await conn.execute(
            f"insert into {SCHEMA}.projection_version (version) values ($1)", PROJECTION_VERSION
        )
    return result


async def rebuild_if_outdated(
    pool: asyncpg.Pool, kafka: KafkaSettings, batch_size: int = 5_000
) -> RebuildResult | None:
    """Rebuild when the tables were built by another version of the projection code
    (or never: a new install, or an upgrade that added projections)."""
    built = await pool.fetchval(f"select max(version) from {SCHEMA}.projection_version")
    if built == PROJECTION_VERSION:
        return None
    consumer = AIOKafkaConsumer(
        **aiokafka_client_kwargs(kafka), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        admin = AIOKafkaAdminClient(**aiokafka_client_kwargs(kafka))
        await admin.start()
        try:
            found = (await topic_partitions(admin, [kafka.events_topic]))[kafka.events_topic]
        finally:
            await admin.close()
        partitions = [TopicPartition(kafka.events_topic, p) for p in found or []]
        consumer.assign(partitions)
        async with pool.acquire() as conn:
            result = await rebuild(conn, consumer, partitions, batch_size)
    finally:
        await consumer.stop()
    log.info(
        "projections.rebuilt",
        from_version=built,
        to_version=PROJECTION_VERSION,
        records=result.records,
        applied=result.applied,
    )
    return result


def _read(value: bytes) -> tuple[EventEnvelope, DomainEvent] | None:
    try:
        envelope = EventEnvelope.model_validate_json(value)
        if envelope.event_type not in EVENT_TYPES:
            return None
        return envelope, envelope.domain_event()
    except ValidationError:
        return None
