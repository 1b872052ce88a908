"""``read_event`` (one validation pass over the bytes) gives what the envelope and
``domain_event()`` give, and its every other outcome is theirs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.contract import EventEnvelope, MeetingScheduled
from shared.contract.envelope import read_event

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
    read = read_event(raw)
    assert read is not None
    envelope, event = read
    expected_envelope, expected_event = slow(raw)
    assert isinstance(event, MeetingScheduled)
    assert repr(event) == repr(expected_event)  # the same values, down to each tzinfo
    for field in EventEnvelope.model_fields.keys() - {"event_type", "schema_version", "payload"}:
        assert repr(getattr(envelope, field)) == repr(getattr(expected_envelope, field))


def test_an_unknown_event_type_is_none() -> None:
    assert read_event(value(event_type="SomethingNew", payload={"x": 1})) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        value(stream_version="one"),
        value(extra_field=1),
        value(payload={**PAYLOAD, "kind": "party"}),
        value(payload={**PAYLOAD, "unknown": 1}),
        value(occurred_at="2026-11-22T10:00:00"),  # naive
    ],
    ids=["not-json", "bad-envelope", "extra-envelope-field", "bad-enum", "extra-field", "naive"],
)
def test_what_the_envelope_or_event_refuses_it_refuses_the_same_way(raw: bytes) -> None:
    with pytest.raises(ValidationError) as expected:
        slow(raw)
    with pytest.raises(ValidationError) as got:
        read_event(raw)
    assert got.value.title == expected.value.title
    assert got.value.errors() == expected.value.errors()


def test_a_version_newer_than_the_reader_is_refused_as_before() -> None:
    with pytest.raises(LookupError):
        read_event(value(schema_version=3))
