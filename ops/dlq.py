"""The dead-letter topics, for `chibo dlq`: read them to the end, and re-drive records.

Reading uses a plain consumer with no group (nothing is committed, no consumer group is
joined) and stops at the end offsets taken when it started, so it always terminates.

Re-driving publishes a DLQ record's original bytes, with its original key, to the topic
it came from, with a `redriven_from` header naming the DLQ record, in the DLQ's order
(each partition's records by offset: a stream's records share its ward's key, so one
partition holds them in the order they were dead-lettered). It is safe to repeat: a
command is carried out at most once per (source, message_id), and consumers drop an
event at or below the stream version they already applied. An event consumer applies
each stream contiguously, so the records of a parked stream (its first one with the
cause, the later ones `stream_gap`) apply once redriven together, in this order, with
the cause fixed.

A dead letter cut short (`dlq_truncated`: its record was over 900,000 bytes) is not the
record it stands for: its redrive reads the whole record from its `dlq_source` and sends
that, or sends nothing if the origin topic no longer holds it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ops.target import (
    KAFKA_TIMEOUT_S,
    NotFound,
    Unreachable,
    kafka_clients,
    kafka_kwargs,
    with_kafka,
)
from shared.kafka import topic_partitions
from shared.settings import KafkaSettings

DlqKind = Literal["commands", "events"]

# What a redrive does for each reason, per DLQ, as the runbooks say: docs/contract.md
# ("Rejections") for commands, docs/operations.md (DeadLetterGrowing) for events.
#
# The same bytes meet the same check again, whatever is deployed: a command's publisher
# must fix it and publish it again with a new message_id; an event that is not an
# envelope has no stream to go back to.
SAME_CHECK_AGAIN: dict[DlqKind, frozenset[str]] = {
    "commands": frozenset(
        {"malformed_envelope", "unknown_command", "invalid_payload", "wrong_key"}
    ),
    "events": frozenset({"malformed_envelope"}),
}
# A redrive is the way back once this is done; before it, the record is dead-lettered
# again (an event with its stream's later ones: parked again).
FIX_FIRST: dict[DlqKind, dict[str, str]] = {
    "commands": {
        "unauthorised_source": "allow-list the source (INBOUND_ALLOWED_SOURCES)",
        "unstorable": "deploy the fix of the contract's bounds",
        "rejected_invalid_command": "deploy the fix of the decision",
    },
    "events": {
        "invalid_payload": "deploy the contract fix",
        "newer_schema_version": "upgrade the consumer",
        "unsupported_schema_version": "add the upcaster",
    },
}
STREAM_GAP = "stream_gap"  # an event parked behind its stream's dead-lettered one
READ_STALL_S = 30.0


def dlq_topic(settings: KafkaSettings, kind: DlqKind) -> str:
    return settings.dlq_topic if kind == "commands" else settings.events_dlq_topic


def origin_topic(settings: KafkaSettings, kind: DlqKind) -> str:
    """Where a re-driven record goes: the topic the DLQ's records were read from."""
    return settings.commands_topic if kind == "commands" else settings.events_topic


@dataclass(frozen=True)
class DlqRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode(errors="replace")
        return None

    @property
    def position(self) -> str:
        """This DLQ record's own place: topic/partition/offset (what `--source` takes)."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def reason(self) -> str:
        return self.header("dlq_reason") or "(none)"

    @property
    def detail(self) -> str:
        return self.header("dlq_detail") or ""

    @property
    def source(self) -> str | None:
        """Where the original record was: topic/partition/offset."""
        return self.header("dlq_source")

    @property
    def cut(self) -> bool:
        """Whether the value is only the start of the original, or none of it."""
        return self.header("dlq_truncated") == "true"

    @property
    def message_id(self) -> str | None:
        return self.header("dlq_message_id")

    @property
    def consumer(self) -> str | None:
        return self.header("dlq_consumer")

    @property
    def dead_lettered_at(self) -> datetime:
        raw = self.header("dlq_at")
        if raw:
            try:
                at = datetime.fromisoformat(raw)
                return at if at.tzinfo else at.replace(tzinfo=UTC)
            except ValueError:
                pass
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def key_text(self) -> str | None:
        return self.key.decode(errors="replace") if self.key is not None else None

    def matches(self, positions: set[str]) -> bool:
        return self.position in positions or (self.source or "") in positions

    def as_json(self) -> dict[str, Any]:
        return {
            "dlq_position": self.position,
            "dlq_at": self.dead_lettered_at.isoformat(),
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "message_id": self.message_id,
            "consumer": self.consumer,
            "key": self.key_text,
            "size": len(self.value),
            "value": self.value.decode(errors="replace"),
            "headers": {k: v.decode(errors="replace") for k, v in self.headers},
        }


@dataclass(frozen=True)
class DlqListing:
    topic: str
    records: list[DlqRecord]  # oldest first

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(r.reason for r in self.records).most_common())


async def read_dlq(
    settings: KafkaSettings,
    topic: str,
    on_total: Callable[[int], None] | None = None,
    on_record: Callable[[], None] | None = None,
) -> DlqListing:
    """Every record of ``topic`` up to the end offsets seen at the start."""
    records: list[DlqRecord] = []
    async with contextlib.AsyncExitStack() as clients:

        async def open_topic() -> tuple[AIOKafkaConsumer, dict[TopicPartition, int], int]:
            admin, consumer = await clients.enter_async_context(kafka_clients(settings))
            partitions = (await topic_partitions(admin, [topic]))[topic]
            if partitions is None:
                raise NotFound(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, begins[tp])
            total = sum(ends[tp] - begins[tp] for tp in tps)
            return consumer, {tp: ends[tp] for tp in tps if ends[tp] > begins[tp]}, total

        consumer, ends, total = await with_kafka(settings, open_topic(), KAFKA_TIMEOUT_S * 2)
        if on_total:
            on_total(total)
        remaining = set(ends)
        stalled_since = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=1000)
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset >= ends[tp]:
                        continue
                    records.append(
                        DlqRecord(
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            timestamp_ms=r.timestamp,
                            key=r.key,
                            value=r.value or b"",
                            headers=tuple(r.headers),
                        )
                    )
                    if on_record:
                        on_record()
                stalled_since = time.monotonic()
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if remaining and time.monotonic() - stalled_since > READ_STALL_S:
                raise Unreachable(
                    "Kafka",
                    settings.bootstrap_servers,
                    f"reading {topic} stalled for {READ_STALL_S:.0f}s",
                )
    records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    return DlqListing(topic=topic, records=records)


def select(
    records: Iterable[DlqRecord],
    reasons: Iterable[str] = (),
    positions: Iterable[str] = (),
) -> list[DlqRecord]:
    """Records with one of ``reasons`` (if any given) at one of ``positions`` (if any given):
    a position is the DLQ record's own topic/partition/offset or its `dlq_source`."""
    wanted_reasons, wanted_positions = set(reasons), set(positions)
    return [
        r
        for r in records
        if (not wanted_reasons or r.reason in wanted_reasons)
        and (not wanted_positions or r.matches(wanted_positions))
    ]


def stream_of(record: DlqRecord) -> tuple[str | None, str] | None:
    """(consumer, stream_id) of an events DLQ record, or None if its value is not an
    envelope with a stream."""
    try:
        stream = json.loads(record.value).get("stream_id")
    except (ValueError, AttributeError):
        return None
    return (record.consumer, stream) if isinstance(stream, str) else None


def redrive_warnings(kind: DlqKind, records: list[DlqRecord]) -> list[str]:
    """What the runbook says about redriving these records, as warnings: records that will
    be dead-lettered again whatever is done, causes to fix before the redrive, and
    `stream_gap` records redriven without the event their stream waits for."""
    warnings = []
    by_reason = Counter(r.reason for r in records)
    again = {reason: n for reason, n in by_reason.items() if reason in SAME_CHECK_AGAIN[kind]}
    if again:
        fix = (
            "the publisher must fix them and publish them again with a new message_id"
            if kind == "commands"
            else "they were not written by our relay"
        )
        warnings.append(
            f"{sum(again.values())} record(s) meet the same check again and will be"
            f" dead-lettered again ({_counted(again)}): {fix}."
        )
    for reason, n in by_reason.items():
        if reason in FIX_FIRST[kind]:
            parked = ", and parks its stream again" if kind == "events" else ""
            warnings.append(
                f"{n} {reason} record(s): {FIX_FIRST[kind][reason]} first; a record"
                f" redriven before that is dead-lettered again{parked}."
            )
    if kind == "events" and by_reason.get(STREAM_GAP):
        causes = {stream_of(r) for r in records if r.reason != STREAM_GAP}
        orphans = [r for r in records if r.reason == STREAM_GAP and stream_of(r) not in causes]
        if orphans:
            warnings.append(
                f"{len(orphans)} {STREAM_GAP} record(s) without the event their stream waits"
                " for in this selection: they are parked again unless that one was redriven"
                " (and applied) before; select it too (its --reason with --reason"
                f" {STREAM_GAP}, or --all)."
            )
    return warnings


def listing_hint(kind: DlqKind) -> str:
    """How to bring these records back, as the runbook says."""
    if kind == "commands":
        return (
            "Re-drive with: chibo dlq redrive --source P/O (the DLQ p/o column) or --reason"
            " REASON, once the cause is fixed (docs/contract.md, Rejections); a command"
            " refused for its own bytes is fixed by its publisher, with a new message_id."
        )
    return (
        "Fix the cause first (docs/operations.md, DeadLetterGrowing), then redrive each"
        " parked stream's records together, in DLQ order: chibo dlq redrive --topic events"
        f" --all (or --reason REASON --reason {STREAM_GAP}, or --source P/O)."
    )


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counts.items())


def parse_position(text: str, dlq: str | None = None) -> str:
    """Check TOPIC/PARTITION/OFFSET (or PARTITION/OFFSET, meaning a record of ``dlq``);
    returns it normalised, or raises ValueError."""
    parts = text.strip().split("/")
    if len(parts) == 2 and dlq:
        parts = [dlq, *parts]
    if len(parts) != 3 or not (parts[0] and parts[1].isdigit() and parts[2].isdigit()):
        raise ValueError(f"{text!r} is not TOPIC/PARTITION/OFFSET or PARTITION/OFFSET")
    return f"{parts[0]}/{int(parts[1])}/{int(parts[2])}"


def redrive_headers(record: DlqRecord) -> list[tuple[str, bytes]]:
    """The record's own headers without the DLQ's, plus where it was re-driven from."""
    kept = [(k, v) for k, v in record.headers if not k.startswith("dlq_") and k != "redriven_from"]
    return [*kept, ("redriven_from", record.position.encode())]


async def whole_values(settings: KafkaSettings, records: list[DlqRecord]) -> dict[str, bytes]:
    """The original bytes of each record cut short (``cut``), by the DLQ record's
    position, read from the record its ``dlq_source`` names; raises `NotFound` if one is
    no longer there (the origin topic's retention) or has no ``dlq_source``."""
    origins: dict[str, str] = {}  # DLQ record's position -> its original's
    missing = []
    for r in records:
        if r.cut:
            try:
                origins[r.position] = parse_position(r.source or "")
            except ValueError:
                missing.append(r.position)
    wanted: dict[TopicPartition, set[int]] = {}
    for origin in origins.values():
        topic, partition, offset = origin.rsplit("/", 2)
        wanted.setdefault(TopicPartition(topic, int(partition)), set()).add(int(offset))
    found: dict[str, bytes] = {}  # original's position -> its bytes

    async def read() -> None:
        async with kafka_clients(settings) as (_, consumer):
            tps = list(wanted)
            consumer.assign(tps)
            begins = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            for tp, offsets in wanted.items():
                for offset in sorted(offsets):
                    if not begins[tp] <= offset < ends[tp]:
                        continue  # gone (retention), or never there
                    consumer.seek(tp, offset)
                    original = await consumer.getone(tp)
                    if original.offset == offset:
                        found[f"{tp.topic}/{tp.partition}/{offset}"] = original.value or b""

    if wanted:
        await with_kafka(settings, read(), KAFKA_TIMEOUT_S * 2)
    missing += [position for position, origin in origins.items() if origin not in found]
    if missing:
        raise NotFound(
            f"{len(missing)} dead letter(s) cut short (dlq_truncated) whose whole record is"
            f" not at its dlq_source: {', '.join(missing)}; nothing was re-sent"
        )
    return {position: found[origin] for position, origin in origins.items()}


async def redrive(
    settings: KafkaSettings,
    kind: DlqKind,
    records: list[DlqRecord],
    on_sent: Callable[[], None] | None = None,
) -> int:
    """Publish each record's original bytes and key to the original topic, in each DLQ
    partition's order (offsets, not timestamps: the order the records were dead-lettered
    in, whatever the clocks of the consumers that wrote them); returns how many the broker
    acknowledged. A record cut short is sent whole, as read from its ``dlq_source``."""
    target = origin_topic(settings, kind)
    records = sorted(records, key=lambda r: (r.topic, r.partition, r.offset))
    whole = await whole_values(settings, records)

    async def start() -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**kafka_kwargs(settings), enable_idempotence=True, acks="all")
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    producer = await with_kafka(settings, start(), KAFKA_TIMEOUT_S)
    sent = 0
    try:
        futures = []
        for record in records:
            futures.append(
                await producer.send(
                    target,
                    whole.get(record.position, record.value),
                    key=record.key,
                    headers=redrive_headers(record),
                )
            )
        for future in futures:
            await future
            sent += 1
            if on_sent:
                on_sent()
    finally:
        await producer.stop()
    return sent
