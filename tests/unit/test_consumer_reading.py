"""What ``EventConsumer`` makes of each record of a batch: a current event is read in one
pass, an older version is upcast, an unknown type is ignored, and what cannot be read
is dead-lettered with its reason, the same outcomes as the two-pass read always gave.
The broker and the database are stand-ins; the integration tests use the real ones."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import structlog
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from shared.consumer import EventConsumer, in_stream_order, read_record
from shared.contract import EventEnvelope, MeetingScheduled
from shared.settings import KafkaSettings
from tests.unit.test_event_reading import PAYLOAD, value


class FakeConnection:
    """Enough of asyncpg for ``claim_batch``: no stream applied before, so each stream's
    row is inserted at the end of the batch's run of it (``old.version`` null)."""

    async def fetch(self, _sql: str, rows: str) -> list[Any]:
        return [(stream_id, None, hi) for stream_id, _lo, hi in json.loads(rows)]

    @asynccontextmanager
    async def transaction(self):  # type: ignore[no-untyped-def]
        yield


class FakePool:
    def __init__(self) -> None:
        self.conn = FakeConnection()

    @asynccontextmanager
    async def acquire(self):  # type: ignore[no-untyped-def]
        yield self.conn


class FakeBroker:
    def __init__(self) -> None:
        self.published: list[tuple[bytes, dict[str, Any]]] = []

    async def publish(self, body: bytes, **kwargs: Any) -> None:
        self.published.append((body, kwargs))


def record(offset: int, raw: bytes) -> ConsumerRecord:
    return ConsumerRecord(
        "chibo.events.v1", 0, offset, 0, 0, b"nam-ngan", raw, None, 8, len(raw), []
    )


def recording_consumer(
    service: str,
) -> tuple[EventConsumer, FakeBroker, CollectorRegistry, list[tuple[Any, Any]]]:
    """A consumer on a fake pool and broker, with what it applied, published and counted."""
    applied: list[tuple[Any, Any]] = []

    async def apply(_conn: Any, envelope: Any, event: Any) -> None:
        applied.append((envelope, event))

    broker = FakeBroker()
    registry = CollectorRegistry()
    consumer = EventConsumer(
        service,
        service,
        FakePool(),  # type: ignore[arg-type]
        broker,  # type: ignore[arg-type]
        KafkaSettings(),
        apply,
        registry,
    )
    return consumer, broker, registry, applied


def test_each_record_gets_the_outcome_of_the_two_pass_read() -> None:
    consumer, broker, registry, applied = recording_consumer("reports")
    current = value()
    older = value(
        stream_id="meeting-b",
        schema_version=1,
        payload={k: v for k, v in PAYLOAD.items() if k != "location"},
    )
    malformed = b"\xff\xfe not json"
    invalid = value(stream_id="meeting-c", payload={**PAYLOAD, "scheduled_start": "tomorrow"})
    unknown = value(stream_id="meeting-d", event_type="SomethingNew", payload={"x": 1})
    records = [
        record(i, raw) for i, raw in enumerate([current, older, malformed, invalid, unknown])
    ]

    asyncio.run(consumer._process(records))

    assert [type(event) for _, event in applied] == [MeetingScheduled, MeetingScheduled]
    for (envelope, event), raw in zip(applied, [current, older], strict=True):
        expected = EventEnvelope.model_validate_json(raw)
        assert repr(event) == repr(expected.domain_event())
        for field in EventEnvelope.model_fields.keys() - {"payload"}:
            assert getattr(envelope, field) == getattr(expected, field), field
    reasons = [(body, kwargs["headers"]["dlq_reason"]) for body, kwargs in broker.published]
    assert reasons == [(malformed, "malformed_envelope"), (invalid, "invalid_payload")]
    assert broker.published[1][1]["headers"]["dlq_source"] == "chibo.events.v1/0/3"

    def outcome(name: str) -> float | None:
        return registry.get_sample_value(
            "chibo_consumed_events_total", {"consumer": "reports", "outcome": name}
        )

    assert outcome("applied") == 2
    assert outcome("ignored") == 1
    assert outcome("dead_lettered") == 2
    assert outcome("duplicate") == 0
    offset = registry.get_sample_value(
        "chibo_consumer_applied_offset",
        {"consumer": "reports", "topic": "chibo.events.v1", "partition": "0"},
    )
    assert offset == 4


def applied_lines(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    """What the consumer logs at info for one batch whose records are all applied."""

    consumer, *_ = recording_consumer("reports")
    with structlog.testing.capture_logs() as logs:
        asyncio.run(consumer._process(records))
    return [dict(line) for line in logs if line["log_level"] == "info"]


def test_a_batch_of_one_keeps_its_event_applied_line() -> None:
    raw = value(causation_id="1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e")

    lines = applied_lines([record(0, raw)])

    assert lines == [
        {
            "event": "event.applied",
            "log_level": "info",
            "consumer": "reports",
            "event_type": "MeetingScheduled",
            "event_id": "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
            "stream_id": "meeting-nam-ngan.to-01.2026-12",
            "stream_version": 1,
            "correlation_id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "causation_id": "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e",
        }
    ]


def test_a_batch_logs_its_event_ids_and_their_correlation_ids_in_one_line() -> None:
    events = [
        ("11111111-1111-4111-8111-111111111111", "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"),
        ("22222222-2222-4222-8222-222222222222", None),
        ("33333333-3333-4333-8333-333333333333", "cccccccc-cccc-4ccc-8ccc-cccccccccccc"),
    ]
    records = [
        record(i, value(event_id=e, correlation_id=c, stream_id=f"meeting-{i}"))
        for i, (e, c) in enumerate(events)
    ]

    lines = applied_lines(records)

    assert lines == [
        {
            "event": "events.batch_applied",
            "log_level": "info",
            "consumer": "reports",
            "events": 3,
            "duplicates": 0,
            "event_ids": [e for e, _ in events],
            "correlation_ids": [c for _, c in events],
        }
    ]


def test_after_start_up_the_youngest_generation_is_collected_less_often() -> None:
    # In a child process: freezing would move the test run's own objects.
    script = (
        "import gc\n"
        "from shared.consumer import GC_YOUNG_THRESHOLD, freeze_startup_objects\n"
        "_, older, oldest = gc.get_threshold()\n"
        "freeze_startup_objects()\n"
        "assert gc.get_freeze_count() > 0\n"
        "assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, older, oldest), gc.get_threshold()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])


def test_a_newer_schema_version_is_dead_lettered_and_parks_its_stream() -> None:
    """An event written by a newer contract cannot be read here: it is dead-lettered
    (reason newer_schema_version) instead of failing the batch for ever, its stream's
    next event follows it to the DLQ (stream_gap), and the other streams are applied."""
    consumer, broker, registry, applied = recording_consumer("notifications")
    newer = value(schema_version=3)
    after = value(stream_version=2, event_id="22222222-2222-4222-8222-222222222222")
    other = value(stream_id="meeting-other", event_id="33333333-3333-4333-8333-333333333333")

    asyncio.run(consumer._process([record(0, newer), record(1, after), record(2, other)]))

    assert [envelope.stream_id for envelope, _ in applied] == ["meeting-other"]
    published = [(body, kwargs["headers"]) for body, kwargs in broker.published]
    assert [(body, h["dlq_reason"]) for body, h in published] == [
        (newer, "newer_schema_version"),
        (after, "stream_gap"),
    ]
    assert "newer than this reader" in published[0][1]["dlq_detail"]
    assert "waiting for version 1" in published[1][1]["dlq_detail"]
    assert [h["dlq_source"] for _, h in published] == ["chibo.events.v1/0/0", "chibo.events.v1/0/1"]

    def sample(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, {"consumer": "notifications", **labels})

    assert sample("chibo_consumed_events_total", {"outcome": "dead_lettered"}) == 2
    assert sample("chibo_consumed_events_total", {"outcome": "applied"}) == 1
    assert sample("chibo_consumed_events_total", {"outcome": "failed"}) == 0
    assert sample("chibo_consumer_parked_total", {"reason": "newer_schema_version"}) == 1
    assert sample("chibo_consumer_parked_total", {"reason": "stream_gap"}) == 1


def test_read_record_says_why_a_version_cannot_be_read() -> None:
    newer = read_record(value(schema_version=3))
    assert newer.envelope is not None and newer.event is None
    assert newer.reason == "newer_schema_version"
    assert "upgrade this reader" in newer.detail
    # v0 has no upcaster: a reader's defect, not a newer writer.
    assert read_record(value(schema_version=0)).reason == "unsupported_schema_version"
    unknown = read_record(value(event_type="SomethingNew", payload={"x": 1}))
    assert unknown.envelope is not None and (unknown.event, unknown.reason) == (None, None)
    assert read_record(b"not json").reason == "malformed_envelope"


def test_in_stream_order_sorts_each_streams_events_in_their_places() -> None:
    def item(stream: str, version: int) -> tuple[Any, Any]:
        return SimpleNamespace(stream_id=stream, stream_version=version), f"{stream}{version}"

    fresh = [item("m", 3), item("n", 1), item("m", 2), item("n", 2)]

    ordered = in_stream_order(fresh)

    assert [event for _, event in ordered] == ["m2", "n1", "m3", "n2"]
