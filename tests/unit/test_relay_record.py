"""The relay's hand-built Kafka value reads back as the contract's EventEnvelope."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from services.meetings.adapters.relay import kafka_record
from shared.contract import EventEnvelope, MeetingScheduled

PAYLOAD = {
    "meeting_id": "nam-ngan.to-01.2026-12",
    "ward_id": "nam-ngan",
    "cell_id": "nam-ngan.to-01",
    "kind": "thematic",
    "scheduled_start": "2026-12-03T12:30:00+00:00",
    "agenda": ['Học tập "Di chúc" của Chủ tịch Hồ Chí Minh', "Kiến nghị: đường\\ngõ 5"],
    "location": None,
}


def row(**overrides: object) -> dict[str, object]:
    return {
        "event_id": uuid.uuid4(),
        "event_type": "MeetingScheduled",
        "schema_version": 2,
        "stream_id": "meeting-nam-ngan.to-01.2026-12",
        "stream_version": 1,
        "global_position": 42,
        "ward_id": "nam-ngan",
        "payload": json.dumps(PAYLOAD, ensure_ascii=False),  # jsonb comes back as text
        "occurred_at": datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
        "recorded_at": datetime(2026, 11, 22, 10, 0, 1, 123456, tzinfo=UTC),
        "correlation_id": uuid.uuid4(),
        "causation_id": None,
        "actor": "ward_official:nguyen.van.a",
        "source": "http",
        **overrides,
    }


def test_the_relayed_value_is_a_valid_envelope_with_the_stored_payload() -> None:
    stored = row()
    record = kafka_record(stored)
    envelope = EventEnvelope.model_validate_json(record["value"])
    assert envelope.event_id == stored["event_id"]
    assert envelope.recorded_at == stored["recorded_at"]
    assert envelope.correlation_id == stored["correlation_id"]
    assert envelope.causation_id is None
    assert envelope.payload == PAYLOAD
    assert isinstance(envelope.domain_event(), MeetingScheduled)
    assert record["key"] == b"nam-ngan"
    assert dict(record["headers"])["event_type"] == b"MeetingScheduled"
