"""What every consumer of the events topic shares: the FastStream broker, exactly-once
tracking in the consumer's own schema, batches applied in one transaction, and the
dead-letter route for unreadable events.

Exactly-once effect (design invariant 5): the consumer records the last applied version
of each stream (table ``<schema>.applied_streams``, created by the consumer's own
migrations) in the same transaction as its own writes. The relay keeps each stream's
events in order, so an event whose version is not above the recorded one is a duplicate
(redelivery, or a re-publish after a relay crash) and changes nothing.
"""

# No `from __future__ import annotations`: FastStream reads the handler's annotations at runtime.
import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from shared.contract import EVENT_TYPES, DomainEvent, EventEnvelope
from shared.contract.envelope import ConsumedEnvelope, Envelope, read_current
from shared.kafka import faststream_security
from shared.logs import get_logger
from shared.postgres import json_rows, rows_of
from shared.settings import KafkaSettings

log = get_logger(__name__)


async def undecoded(message: StreamMessage[Any]) -> Any:
    """The subscriber's decoder: the record values as they are. ``EventConsumer`` and the
    meetings command intake read the raw records themselves, and FastStream's default
    decoder would build a message object and ``json.loads`` every record of a batch before
    the handler runs, for nothing (about 10 µs per record)."""
    return message.body


# Container objects allocated (net of those freed) before the cyclic GC's youngest
# generation is collected; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def freeze_startup_objects(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Collect once, then move every object alive after start-up (modules, the app,
    pydantic's schemas, the pool) out of the cyclic GC's reach. Each full collection
    otherwise walks them all again: in the reports service 50-110 ms each, about a sixth
    of its CPU on a 30,000-event backlog. Call it once, when start-up is done.

    Then collect the youngest generation after ``young_threshold`` allocations, not
    700: a batch being applied holds its events' objects (envelopes, models, rows) until
    it is done, so at 700 a collection came every ~50 events and walked the batch's live
    objects again and again, and promoted them towards full collections: 4-5 us of GC per
    event, a fifth of the reports consumer's CPU, in a micro-benchmark of 500-event
    batches; none at 10,000. What a batch frees goes by reference counting; cyclic
    garbage is still collected, only after more allocations."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)


def batch_records(message: KafkaMessage) -> list[ConsumerRecord]:
    """The records of a batch subscriber's message (a single record is a batch of one)."""
    raw = message.raw_message
    return list(raw) if isinstance(raw, tuple) else [raw]


async def rewind_and_pause(
    message: KafkaMessage, records: list[ConsumerRecord], failures_in_a_row: int
) -> None:
    """Seek every partition of an unacknowledged batch back to its first record, so the
    batch is read again, after a pause that grows with consecutive failures (a lasting
    outage must not become a hot loop)."""
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    for tp, offset in first.items():
        message.consumer.seek(partition=tp, offset=offset)  # type: ignore[attr-defined]
    await asyncio.sleep(min(0.1 * 2**failures_in_a_row, 10.0))


def make_broker(settings: KafkaSettings, registry: CollectorRegistry, service: str) -> KafkaBroker:
    return KafkaBroker(
        settings.bootstrap_servers,
        security=faststream_security(settings),
        middlewares=[KafkaPrometheusMiddleware(registry=registry, app_name=service)],
        client_id=f"chibo-{service}",
        enable_idempotence=True,
        acks="all",
        logger=logging.getLogger("chibo.faststream"),  # through our JSON log format
    )


async def claim_batch(
    conn: asyncpg.Connection, schema: str, envelopes: Sequence[Envelope]
) -> list[bool]:
    """Record a batch's events as applied, in one statement; for each envelope, whether
    it is new (False: it, or a later event of its stream, was applied already).

    Must run first in the transaction that makes the batch's effects. Each stream's row
    is moved up to the batch's highest version of it, or inserted, and locked (in stream
    order, as concurrent batches take them); ``old.version`` (PostgreSQL 18) says where
    it stood. A row another transaction holds is waited for, and its committed version
    is the one compared, so a rebalance overlap finds its duplicates without a retry.
    A stream whose row is not returned was applied up to that version or beyond (its
    row is locked all the same): all its events here are duplicates.
    """
    latest: dict[str, int] = {}
    for envelope in envelopes:
        if envelope.stream_version > latest.get(envelope.stream_id, 0):
            latest[envelope.stream_id] = envelope.stream_version
    rows = await conn.fetch(
        f"""
        insert into "{schema}".applied_streams as a (stream_id, version)
        select * from {rows_of("stream_id text, version int")} u
        order by stream_id
        on conflict (stream_id) do update
        set version = excluded.version, applied_at = now()
        where a.version < excluded.version
        returning a.stream_id, coalesce(old.version, 0)
        """,
        json_rows(list(latest.items())),
    )
    applied: dict[str, int] = dict(rows)  # the moved streams: their version before
    new: list[bool] = []
    for envelope in envelopes:
        before = applied.get(envelope.stream_id)
        is_new = before is not None and envelope.stream_version > before
        if is_new:
            applied[envelope.stream_id] = envelope.stream_version
        new.append(is_new)
    return new


# The envelope is an ``EventEnvelope``, or (an event of a known type at its current
# version, read in one pass) a typed one with the same fields but ``payload``.
Apply = Callable[[asyncpg.Connection, ConsumedEnvelope, DomainEvent], Awaitable[None]]
ApplyBatch = Callable[
    [asyncpg.Connection, list[tuple[ConsumedEnvelope, DomainEvent]]], Awaitable[None]
]


class EventConsumer:
    """Reads one record, applies it exactly once, and routes what cannot be read to the DLQ."""

    def __init__(
        self,
        service: str,
        schema: str,
        pool: asyncpg.Pool,
        broker: KafkaBroker,
        settings: KafkaSettings,
        apply: Apply,
        registry: CollectorRegistry,
        after_commit: Callable[[], None] = lambda: None,
        apply_batch: ApplyBatch | None = None,
    ) -> None:
        """``apply`` makes one event's effect; a consumer that can write a whole batch at
        once (the reports' projections) passes ``apply_batch`` instead."""
        self._service = service
        self._schema = schema
        self._pool = pool
        self._broker = broker
        self._settings = settings
        self._apply = apply
        self._apply_batch = apply_batch
        self._after_commit = after_commit
        self._failures_in_a_row = 0
        self.outcomes = Counter(
            "chibo_consumed_events_total",
            "Events read from the events topic, by outcome: applied, duplicate, ignored, "
            "dead_lettered, failed (retried).",
            ["consumer", "outcome"],
            registry=registry,
        )
        # Every outcome exists from the start, so the first failure after a restart is a
        # rise that alerts can see, not a series appearing from nothing.
        self._outcome = {
            outcome: self.outcomes.labels(service, outcome)
            for outcome in ("applied", "duplicate", "ignored", "dead_lettered", "failed")
        }
        self.applied_offset = Gauge(
            "chibo_consumer_applied_offset",
            "Offset of the last record each partition has committed the effect of.",
            ["consumer", "topic", "partition"],
            registry=registry,
        )
        self.applied_event_time = Gauge(
            "chibo_consumer_last_applied_event_recorded_timestamp_seconds",
            "When the last applied event was recorded by the writer (freshness).",
            ["consumer"],
            registry=registry,
        )
        self._event_time = self.applied_event_time.labels(service)
        self._offsets: dict[tuple[str, int], Any] = {}  # (topic, partition) -> its child

    async def __call__(self, message: KafkaMessage) -> None:
        """One batch of records: what cannot be read is dead-lettered, the rest is applied
        in one transaction, and only then is the batch acknowledged."""
        records = batch_records(message)
        try:
            await self._process(records)
        except Exception:
            # A valid event that failed to apply (database down, say) is retried, never
            # skipped: the batch is rewound and read again.
            self._failures_in_a_row += 1
            self._outcome["failed"].inc(len(records))
            log.exception("consumer.apply_failed", records=len(records))
            await rewind_and_pause(message, records, self._failures_in_a_row)
            return
        self._failures_in_a_row = 0
        await message.ack()

    async def _process(self, records: list[ConsumerRecord]) -> None:
        readable: list[tuple[ConsumedEnvelope, DomainEvent]] = []
        dead: list[tuple[ConsumerRecord, str, str]] = []
        for record in records:
            raw_value: bytes = record.value or b""
            try:
                # One pass, for an event of a known type at its current version.
                readable.append(read_current(raw_value))
                continue
            except ValidationError:
                pass  # anything else: the two-pass path below decides, as it always did
            try:
                general = EventEnvelope.model_validate_json(raw_value)
            except ValidationError as exc:
                dead.append((record, "malformed_envelope", str(exc)))
                continue
            if general.event_type not in EVENT_TYPES:
                # A newer publisher's event type: nothing here depends on it yet.
                self._outcome["ignored"].inc()
                log.info("consumer.unknown_event_type", event_type=general.event_type)
                continue
            try:
                readable.append((general, general.domain_event()))
            except ValidationError as exc:
                dead.append((record, "invalid_payload", str(exc)))
        applied: list[ConsumedEnvelope] = []
        if readable:
            async with self._pool.acquire() as conn, conn.transaction():
                claimed = await claim_batch(conn, self._schema, [e for e, _ in readable])
                fresh = [item for item, new in zip(readable, claimed, strict=True) if new]
                if self._apply_batch is not None:
                    await self._apply_batch(conn, fresh)
                else:
                    for envelope, event in fresh:
                        await self._apply(conn, envelope, event)
                applied = [envelope for envelope, _ in fresh]
            self._outcome["duplicate"].inc(len(readable) - len(fresh))
        if applied:
            self._after_commit()
            self._outcome["applied"].inc(len(applied))
            self._event_time.set(max(e.recorded_at for e in applied).timestamp())
            self._log_applied(applied, duplicates=len(readable) - len(applied))
        for record, reason, detail in dead:
            await self._dead_letter(record, reason, detail)
        # Every record of the batch is done with, in any outcome: each partition's gauge
        # is set once, to its last record's offset (a partition's records are in order).
        last: dict[tuple[str, int], int] = {}
        for record in records:
            last[(record.topic, record.partition)] = record.offset
        for key, offset in last.items():
            gauge = self._offsets.get(key)
            if gauge is None:
                gauge = self._offsets[key] = self.applied_offset.labels(self._service, *key)
            gauge.set(offset)

    def _log_applied(self, applied: list[ConsumedEnvelope], duplicates: int) -> None:
        """The correlation trail. A batch of one gets its ``event.applied`` line at info; a
        larger batch gets one ``events.batch_applied`` line at info, with the batch's event
        ids and their correlation ids (in the same order), and each event's own line at
        debug: a JSON line per event cost about a quarter of the live consumer's CPU."""
        if len(applied) == 1 or log.is_enabled_for(logging.DEBUG):
            each = log.info if len(applied) == 1 else log.debug
            for envelope in applied:
                each(
                    "event.applied",
                    consumer=self._service,
                    event_type=envelope.event_type,
                    event_id=str(envelope.event_id),
                    stream_id=envelope.stream_id,
                    stream_version=envelope.stream_version,
                    correlation_id=str(envelope.correlation_id)
                    if envelope.correlation_id
                    else None,
                    causation_id=str(envelope.causation_id) if envelope.causation_id else None,
                )
        if len(applied) > 1:
            log.info(
                "events.batch_applied",
                consumer=self._service,
                events=len(applied),
                duplicates=duplicates,
                event_ids=[str(e.event_id) for e in applied],
                correlation_ids=[
                    str(e.correlation_id) if e.correlation_id else None for e in applied
                ],
            )

    async def _dead_letter(self, source: ConsumerRecord, reason: str, detail: str) -> None:
        await self._broker.publish(
            source.value or b"",
            topic=self._settings.events_dlq_topic,
            key=source.key,
            headers={
                "dlq_reason": reason,
                "dlq_detail": detail[:2000],
                "dlq_consumer": self._service,
                "dlq_source": f"{source.topic}/{source.partition}/{source.offset}",
                "dlq_at": datetime.now(UTC).isoformat(),
            },
        )
        self._outcome["dead_lettered"].inc()
        log.warning(
            "consumer.dead_lettered",
            reason=reason,
            source=f"{source.topic}/{source.partition}/{source.offset}",
        )
