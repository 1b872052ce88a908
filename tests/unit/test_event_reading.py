"""``read_record`` (one validation pass over the bytes, for an event of a known type at
its current version) gives what the envelope and ``domain_event()`` give, and its every
other outcome is theirs: the same refusal, as a dead-letter reason with their error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.consumer import read_record
from shared.contract import EventEnvelope, MeetingScheduled

PAYLOAD = {
    "meeting_id": "nam-ngan.to-01.2026-12",
    "ward_id": "nam-ngan",
    "cell_id": "nam-ngan.to-01",
    "kind": "thematic",
    "scheduled_start": "2026-12-03T19:30:00+07:00",
    "agenda": ['Học tập "Di chúc" của Chủ tịch Hồ Chí Minh'],
    "location": None,
}


def value(**overrides: Any) -> bytes:
    envelope = {
        "event_id": "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
        "event_type": "MeetingScheduled",
        "schema_version": 2,
        "stream_id": "meeting-nam-ngan.to-01.2026-12",
        "stream_version": 1,
        "global_position": 42,
        "ward_id": "nam-ngan",
        "occurred_at": "2026-11-22T10:00:00+00:00",
        "recorded_at": "2026-11-22T10:00:01.123456+00:00",
        "correlation_id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "causation_id": None,
        "actor": "ward_official:nguyen.van.a",
        "source": "http",
        "payload": PAYLOAD,
        **overrides,
    }
    return json.dumps(envelope, ensure_ascii=False).encode()


def slow(raw: bytes) -> tuple[EventEnvelope, Any]:
    envelope = EventEnvelope.model_validate_json(raw)
    return envelope, envelope.domain_event()


@pytest.mark.parametrize(
    "raw",
    [
        value(),
        value(schema_version=1, payload={k: v for k, v in PAYLOAD.items() if k != "location"}),
        value(correlation_id=None, actor="system:scheduler"),
    ],
    ids=["current", "v1-upcast", "no-correlation"],
)
def test_it_reads_what_the_envelope_and_domain_event_read(raw: bytes) -> None:
    envelope, event, reason, _ = read_record(raw)
    assert reason is None and envelope is not None
    expected_envelope, expected_event = slow(raw)
    assert isinstance(event, MeetingScheduled)
    assert repr(event) == repr(expected_event)  # the same values, down to each tzinfo
    for field in EventEnvelope.model_fields.keys() - {"event_type", "schema_version", "payload"}:
        assert repr(getattr(envelope, field)) == repr(getattr(expected_envelope, field))


def test_an_unknown_event_type_has_no_event_and_no_reason() -> None:
    read = read_record(value(event_type="SomethingNew", payload={"x": 1}))
    assert read.envelope is not None and read.event is None and read.reason is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "malformed_envelope"),
        (value(stream_version="one"), "malformed_envelope"),
        (value(extra_field=1), "malformed_envelope"),
        (value(payload={**PAYLOAD, "kind": "party"}), "invalid_payload"),
        (value(payload={**PAYLOAD, "unknown": 1}), "invalid_payload"),
        (value(occurred_at="2026-11-22T10:00:00"), "malformed_envelope"),  # naive
    ],
    ids=["not-json", "bad-envelope", "extra-envelope-field", "bad-enum", "extra-field", "naive"],
)
def test_what_the_envelope_or_event_refuses_it_refuses_the_same_way(
    raw: bytes, reason: str
) -> None:
    with pytest.raises(ValidationError) as expected:
        slow(raw)
    read = read_record(raw)
    assert read.event is None and read.reason == reason
    assert read.detail == str(expected.value)


def test_a_version_newer_than_the_reader_is_refused_with_its_reason() -> None:
    read = read_record(value(schema_version=3))
    assert read.event is None and read.reason == "newer_schema_version"
