"""What every consumer of the events topic shares: the FastStream broker, exactly-once
tracking in the consumer's own schema, batches applied in one transaction, and the
dead-letter route for unreadable events.

Exactly-once effect (design invariant 5): the consumer records the last applied version
of each stream (table ``<schema>.applied_streams``, created by the consumer's own
migrations) in the same transaction as its own writes. The relay keeps each stream's
events in order, so an event whose version is not above the recorded one is a duplicate
(redelivery, or a re-publish after a relay crash) and changes nothing.

No skipped event (design invariant 3): each stream is applied contiguously. An event
above the next version of its stream (its predecessor was dead-lettered) is dead-lettered
too, with reason ``stream_gap``: the stream is parked, and its later events follow it to
the DLQ in order, until a redrive of the DLQ (in its order) brings them back with the
cause fixed. See ``claim_batch``.
"""

# No `from __future__ import annotations`: FastStream reads the handler's annotations at runtime.
import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import asyncpg
from aiokafka import ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from shared.contract import EVENT_TYPES, DomainEvent, EventEnvelope
from shared.contract.envelope import ConsumedEnvelope, Envelope, read_current
from shared.dead_letters import DeadLetterPublisher
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


class ReadRecord(NamedTuple):
    """What a consumer makes of one record of the events topic."""

    envelope: ConsumedEnvelope | None  # None: not an envelope (no stream to place it in)
    event: DomainEvent | None  # None: an unknown type (ignored), or ``reason`` says why
    reason: str | None = None  # the dead-letter reason when it cannot be read
    detail: str = ""


def read_record(value: bytes) -> ReadRecord:
    """The envelope and typed event of a record of the events topic, or why not: reasons
    ``malformed_envelope`` (no envelope), ``invalid_payload`` (the payload does not match
    its type's schema), ``newer_schema_version`` (written by a newer contract than this
    reader's: upgrade the reader) and ``unsupported_schema_version`` (an older version
    with no upcaster here). An unknown event type has no event and no reason."""
    try:
        # One pass, for an event of a known type at its current version.
        envelope, event = read_current(value)
        return ReadRecord(envelope, event)
    except ValidationError:
        pass  # anything else: the two-pass path below decides, as it always did
    try:
        general = EventEnvelope.model_validate_json(value)
    except ValidationError as exc:
        return ReadRecord(None, None, "malformed_envelope", str(exc))
    known = EVENT_TYPES.get(general.event_type)
    if known is None:
        return ReadRecord(general, None)  # a newer publisher's type: nothing depends on it
    try:
        return ReadRecord(general, general.domain_event())
    except ValidationError as exc:
        return ReadRecord(general, None, "invalid_payload", str(exc))
    except LookupError as exc:  # from upcast(): no way from this version to ours
        if general.schema_version > known.schema_version:
            detail = f"{exc}; upgrade this reader, then redrive"
            return ReadRecord(general, None, "newer_schema_version", detail)
        return ReadRecord(general, None, "unsupported_schema_version", str(exc))


def rewind(message: KafkaMessage, records: list[ConsumerRecord]) -> None:
    """Seek every partition of an unacknowledged batch back to its first record, so the
    batch is read again."""
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    for tp, offset in first.items():
        message.consumer.seek(partition=tp, offset=offset)  # type: ignore[attr-defined]


async def rewind_and_pause(
    message: KafkaMessage, records: list[ConsumerRecord], failures_in_a_row: int
) -> None:
    """``rewind``, then a pause that grows with consecutive failures (a lasting outage
    must not become a hot loop)."""
    rewind(message, records)
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


def subscribe_events(
    broker: KafkaBroker, topic: str, group_id: str, batch_size: int, consumer: "EventConsumer"
) -> Any:
    """Subscribe ``consumer`` to the events topic as both event services do: batches of up
    to ``batch_size`` raw records, acknowledged by the consumer itself (it acks a batch or
    rewinds it); a group that never read the topic starts from its first record (the
    whole history, e.g. a topic re-published with ``chibo events republish``)."""
    subscriber = broker.subscriber(
        topic,
        group_id=group_id,
        auto_offset_reset="earliest",
        batch=True,
        max_records=batch_size,
        ack_policy=AckPolicy.MANUAL,
        decoder=undecoded,  # it reads the raw records itself
    )
    subscriber(consumer)
    return subscriber


class Claim(StrEnum):
    """What ``claim_batch`` makes of one event of a batch."""

    NEW = "new"  # the next version of its stream: apply it
    DUPLICATE = "duplicate"  # at or below what was applied: changes nothing
    PARKED = "parked"  # its stream waits for an earlier version: dead-letter it, in order


@dataclass(frozen=True)
class Claimed:
    outcomes: list[Claim]  # one per event, in the batch's order
    versions: dict[str, int]  # each stream's applied version once the batch commits
    # A stream's new events came in another order than their versions' (never from the
    # relay or a redrive, which keep the stream's order): apply them in version order.
    out_of_order: bool = False
    # False: the claim's ``condition`` did not hold; nothing else is decided, and the
    # transaction must be rolled back.
    allowed: bool = True


@dataclass(frozen=True)
class BatchGuard:
    """A condition every batch must meet before its effects are made, for a consumer whose
    effects are only right while it holds (the reports: the projection code's version is
    the one the tables were built by). A boolean SQL expression, evaluated once in the
    statement that claims the batch, so it costs no round trip, and after that statement
    has waited for the table lock a rebuild holds, so it sees what the rebuild committed.
    A batch that fails it is rolled back, not acknowledged, counted
    (``chibo_consumer_refused_batches_total``), and the consumer stops (``EventConsumer``)."""

    name: str  # the metric's label, e.g. "projection_version"
    condition: str  # SQL, true when the batch may be applied
    explanation: str  # for the log line of the refusal: why, and what to do


class BatchRefused(Exception):
    """A batch failed its consumer's ``BatchGuard``: its transaction is rolled back."""


async def claim_batch(
    conn: asyncpg.Connection,
    schema: str,
    envelopes: Sequence[Envelope],
    readable: Sequence[bool] | None = None,
    condition: str | None = None,
) -> Claimed:
    """Record a batch's events as applied, and say for each whether it is new, a
    duplicate, or parked behind a gap in its stream. ``readable[i]`` False: the event
    cannot be read (it is dead-lettered for its own reason), so its stream stops before it.

    Each stream is applied contiguously: an event is new only when it is the next version
    of its stream (or, for a stream this consumer has no row of yet, from the batch's
    first version of it on: a consumer may first see a stream mid-way). An event above
    the next version is parked: its predecessor was dead-lettered (or never read), and
    it follows it to the DLQ, so that a redrive of the DLQ in order applies both.

    Must run first in the transaction that makes the batch's effects. One statement in
    the common case: each stream's row is moved up over the run of readable versions that
    starts at the batch's lowest one (``lo`` .. ``hi``) when it stands in or just before
    that run, or inserted (at ``hi``, which is ``lo - 1`` when ``lo`` cannot be read, so
    that its successors are parked too), and locked (in stream order, as concurrent
    batches take them); ``old.version`` and ``new.version`` (PostgreSQL 18) say where it
    stood and stands. A row another transaction holds is waited for, and its committed
    version is the one compared, so a rebalance overlap finds its duplicates without a
    retry. A second statement only when a stream's row already stood past the end of
    that run (a version missing or unreadable after it) and later readable versions of
    the batch continue from the row (say, a redelivered range whose dead-lettered event
    was since applied).

    ``condition`` (a ``BatchGuard``'s SQL) is evaluated in the same statement; when it
    does not hold, the result says so (``allowed`` False) and decides nothing else.
    """
    if readable is None:
        readable = [True] * len(envelopes)
    lowest: dict[str, int] = {}
    claimable: dict[str, set[int]] = {}
    for envelope, ok in zip(envelopes, readable, strict=True):
        stream, version = envelope.stream_id, envelope.stream_version
        if version < lowest.get(stream, version + 1):
            lowest[stream] = version
        if ok:
            versions = claimable.get(stream)
            if versions is None:
                claimable[stream] = {version}
            else:
                versions.add(version)
    runs = []
    for stream, lo in lowest.items():
        ok_versions = claimable.get(stream, ())
        hi = lo - 1
        while hi + 1 in ok_versions:
            hi += 1
        runs.append((stream, lo, hi))
    rows = await conn.fetch(_claim_sql(schema, condition), json_rows(runs))
    if condition is not None and rows and not rows[0][3]:
        return Claimed([], {}, allowed=False)
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for row in rows:
        stream, old, new = row[0], row[1], row[2]
        before[stream] = lowest[stream] - 1 if old is None else old
        after[stream] = new
    # The row stood past the run (its lowest version a duplicate): the readable versions
    # that continue from it are new too. Rare; the rows are ours until the commit.
    further = []
    for stream, version in after.items():
        ok_versions = claimable.get(stream, ())
        end = version
        while end + 1 in ok_versions:
            end += 1
        if end > version:
            further.append((stream, end))
            after[stream] = end
    if further:
        await conn.execute(_claim_further_sql(schema), json_rows(further))
    outcomes: list[Claim] = []
    last_new: dict[str, int] = {}  # each stream's highest new version so far
    out_of_order = False
    for envelope, ok in zip(envelopes, readable, strict=True):
        stream, version = envelope.stream_id, envelope.stream_version
        if version <= before[stream] or version > after[stream]:
            outcomes.append(Claim.DUPLICATE if version <= before[stream] else Claim.PARKED)
        elif not ok:
            # Its version is claimed by a readable copy of it in the batch.
            outcomes.append(Claim.DUPLICATE)
        elif version > last_new.get(stream, 0):
            outcomes.append(Claim.NEW)  # the common case: a stream's events in order
            last_new[stream] = version
        elif _taken(envelopes, outcomes, stream, version):
            outcomes.append(Claim.DUPLICATE)  # each version once
        else:
            outcomes.append(Claim.NEW)
            out_of_order = True
    return Claimed(outcomes, after, out_of_order)


def _taken(envelopes: Sequence[Envelope], outcomes: list[Claim], stream: str, version: int) -> bool:
    """Whether an earlier event of the batch was taken as this version of ``stream`` new."""
    return any(
        outcome is Claim.NEW and e.stream_id == stream and e.stream_version == version
        for e, outcome in zip(envelopes, outcomes, strict=False)
    )


def in_stream_order(
    fresh: list[tuple[ConsumedEnvelope, DomainEvent]],
) -> list[tuple[ConsumedEnvelope, DomainEvent]]:
    """The same events, each stream's in version order in the places its events held."""
    places: dict[str, list[int]] = {}
    for place, (envelope, _) in enumerate(fresh):
        places.setdefault(envelope.stream_id, []).append(place)
    ordered = list(fresh)
    for held in places.values():
        events = sorted((fresh[p] for p in held), key=lambda item: item[0].stream_version)
        for place, item in zip(held, events, strict=True):
            ordered[place] = item
    return ordered


def _claim_sql(schema: str, condition: str | None = None) -> str:
    """The row moves to ``hi`` (``excluded.version``) when it stands in ``lo - 1 .. hi - 1``;
    otherwise it stays where it is (a no-op update, so that it is locked and returned
    all the same). The row's ``lo`` comes from an object of the batch's streams, built
    once per statement (an InitPlan), as is ``condition``'s value (uncorrelated): the
    statement's snapshot is taken after its table locks are granted, so it sees what a
    rebuild that held ``applied_streams`` committed."""
    allowed = f", ({condition}) as allowed" if condition is not None else ""
    lo = (
        "((select jsonb_object_agg(r->>0, r->1) from jsonb_array_elements($1::jsonb) j(r))"
        " ->> a.stream_id)::int"
    )
    moves = f"a.version < excluded.version and a.version >= {lo} - 1"
    return f"""
        insert into "{schema}".applied_streams as a (stream_id, version)
        select stream_id, hi from {rows_of("stream_id text, lo int, hi int")} u
        order by stream_id
        on conflict (stream_id) do update
        set version = case when {moves} then excluded.version else a.version end,
            applied_at = case when {moves} then now() else a.applied_at end
        returning a.stream_id, old.version, new.version{allowed}
        """


def _claim_further_sql(schema: str) -> str:
    return f"""
        update "{schema}".applied_streams a set version = u.version, applied_at = now()
        from {rows_of("stream_id text, version int")} u
        where a.stream_id = u.stream_id
        """


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
        guard: BatchGuard | None = None,
    ) -> None:
        """``apply`` makes one event's effect; a consumer that can write a whole batch at
        once (the reports' projections) passes ``apply_batch`` instead. ``guard``: a
        condition each batch is checked against (``BatchGuard``); set ``stop_consuming``
        to what stops this consumer's subscriber, so that a refusal hands its partitions
        over to the replicas that meet it (without it, refused batches are retried with
        the failures' backoff)."""
        self._service = service
        self._schema = schema
        self._pool = pool
        self._dead_letters = DeadLetterPublisher(broker, settings.events_dlq_topic)
        self._apply = apply
        self._apply_batch = apply_batch
        self._after_commit = after_commit
        self._guard = guard
        self._failures_in_a_row = 0
        # The guard's name once a batch failed it, until a batch passes it again.
        self.refused: str | None = None
        self.stop_consuming: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._stopping: asyncio.Task[None] | None = None
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
        self.parked = Counter(
            "chibo_consumer_parked_total",
            "Events dead-lettered that leave their stream parked: the stream's later "
            "events follow them to the DLQ (reason stream_gap) until a redrive in DLQ "
            "order brings them back with the cause fixed. By dlq_reason.",
            ["consumer", "reason"],
            registry=registry,
        )
        self._parked = {
            reason: self.parked.labels(service, reason)
            for reason in (
                "stream_gap",
                "invalid_payload",
                "newer_schema_version",
                "unsupported_schema_version",
            )
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
        self.refused_batches = Counter(
            "chibo_consumer_refused_batches_total",
            "Batches rolled back unapplied because they failed the consumer's guard (for"
            " reports, projection_version: the tables were rebuilt by another version of"
            " the projection code); the consumer then stops. By guard.",
            ["consumer", "guard"],
            registry=registry,
        )
        self._refused_batches = (
            self.refused_batches.labels(service, guard.name) if guard is not None else None
        )

    async def __call__(self, message: KafkaMessage) -> None:
        """One batch of records: what cannot be read is dead-lettered, the rest is applied
        in one transaction, and only then is the batch acknowledged."""
        records = batch_records(message)
        try:
            await self._process(records)
        except BatchRefused:
            await self._refuse(message, records)
            return
        except Exception:
            # A valid event that failed to apply (database down, say) is retried, never
            # skipped: the batch is rewound and read again.
            self._failures_in_a_row += 1
            self._outcome["failed"].inc(len(records))
            log.exception("consumer.apply_failed", records=len(records))
            await rewind_and_pause(message, records, self._failures_in_a_row)
            return
        self._failures_in_a_row = 0
        self.refused = None
        await message.ack()

    async def _refuse(self, message: KafkaMessage, records: list[ConsumerRecord]) -> None:
        """The batch failed the guard and was rolled back: it is not acknowledged, so the
        group's committed offsets stay before it, and whoever consumes the partitions
        next reads it again. Said once, counted every time."""
        assert self._guard is not None and self._refused_batches is not None
        self._refused_batches.inc()
        if self.refused is None:
            log.error(
                "consumer.batch_refused",
                consumer=self._service,
                guard=self._guard.name,
                records=len(records),
                detail=self._guard.explanation,
                stopping=self.stop_consuming is not None,
            )
        self.refused = self._guard.name
        if self.stop_consuming is None:
            self._failures_in_a_row += 1
            await rewind_and_pause(message, records, self._failures_in_a_row)
            return
        rewind(message, records)
        if self._stopping is None:
            # Not awaited here: stopping the subscriber cancels the task this runs in.
            self._stopping = asyncio.create_task(self.stop_consuming())

    async def _process(self, records: list[ConsumerRecord]) -> None:
        # The records with a stream, read (event None: unknown type or unreadable), and
        # the dead letters with their batch index, so that they go out in the batch's order.
        read: list[tuple[int, ReadRecord]] = []
        dead: list[tuple[int, str, str]] = []
        for index, record in enumerate(records):
            item = read_record(record.value or b"")
            if item.envelope is None:
                dead.append((index, item.reason or "malformed_envelope", item.detail))
            else:
                read.append((index, item))
        applied: list[ConsumedEnvelope] = []
        duplicates = 0
        if read:
            envelopes = [item.envelope for _, item in read if item.envelope is not None]
            async with self._pool.acquire() as conn, conn.transaction():
                claimed = await claim_batch(
                    conn,
                    self._schema,
                    envelopes,
                    [item.reason is None for _, item in read],
                    self._guard.condition if self._guard is not None else None,
                )
                if not claimed.allowed:
                    raise BatchRefused  # rolls the claim back
                fresh: list[tuple[ConsumedEnvelope, DomainEvent]] = []
                for (index, item), envelope, outcome in zip(
                    read, envelopes, claimed.outcomes, strict=True
                ):
                    if outcome is Claim.NEW:
                        if item.event is not None:
                            fresh.append((envelope, item.event))
                        else:
                            # A newer publisher's type: claimed, so its stream goes on.
                            self._outcome["ignored"].inc()
                            log.info("consumer.unknown_event_type", event_type=envelope.event_type)
                    elif outcome is Claim.DUPLICATE:
                        duplicates += 1
                    elif item.reason is not None:
                        dead.append((index, item.reason, item.detail))
                    else:
                        waiting = claimed.versions[envelope.stream_id] + 1
                        detail = (
                            f"stream {envelope.stream_id} is waiting for version {waiting}"
                            f" (this is version {envelope.stream_version}); redrive the"
                            " stream's earlier dead letters first, in order"
                        )
                        dead.append((index, "stream_gap", detail))
                if claimed.out_of_order:
                    fresh = in_stream_order(fresh)
                if self._apply_batch is not None:
                    await self._apply_batch(conn, fresh)
                else:
                    for envelope, event in fresh:
                        await self._apply(conn, envelope, event)
                applied = [envelope for envelope, _ in fresh]
            self._outcome["duplicate"].inc(duplicates)
        if applied:
            self._after_commit()
            self._outcome["applied"].inc(len(applied))
            self._event_time.set(max(e.recorded_at for e in applied).timestamp())
            self._log_applied(applied, duplicates=duplicates)
        # In the batch's order: a parked stream's events reach the DLQ in their order.
        dead.sort(key=lambda d: d[0])
        for index, reason, detail in dead:
            await self._dead_letter(records[index], reason, detail)
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
        copy = await self._dead_letters.publish(
            source, reason, detail, {"dlq_consumer": self._service}
        )
        self._outcome["dead_lettered"].inc()
        if reason in self._parked:
            self._parked[reason].inc()
        log.warning("consumer.dead_lettered", reason=reason, source=copy.source)
