"""The Kafka intake's reading of a record: the one-parse path for a command's current
version reads exactly what the two-step reading (envelope, then payload) reads, and a
record it refuses is dead-lettered for the same reason as before."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from generator.build import generate
from generator.model import GeneratorConfig
from services.meetings.entrypoints.kafka_commands import DeadLetter, KafkaCommandIntake
from shared.clock import FrozenClock
from shared.contract.commands import COMMAND_TYPES
from shared.settings import KafkaSettings

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def intake() -> KafkaCommandIntake:
    settings = KafkaSettings()
    return KafkaCommandIntake(
        cast(Any, None),
        cast(Any, None),
        settings,
        frozenset({"chibo-demo"}),
        FrozenClock(NOW),
        KafkaCommandIntake.dlq_counter(settings, CollectorRegistry()),
    )


def record(value: bytes, key: bytes) -> ConsumerRecord:
    return ConsumerRecord("t", 0, 0, 0, 0, key, value, None, len(key), len(value), [])


def test_every_generated_command_reads_as_in_two_steps() -> None:
    door = intake()
    commands = generate(GeneratorConfig(seed=7, wards=3, cells=12), 2026, 10).commands
    assert {c.command.command_type for c in commands} >= {"ScheduleMeeting", "RaisePetition"}
    for c in commands:
        value = json.dumps(c.envelope_json(), ensure_ascii=False).encode()
        command, ctx, message_id = door._read(record(value, c.key.encode()))
        envelope, again = door._read_in_two_steps(value)
        assert command == again == c.command
        assert type(command) is COMMAND_TYPES[envelope.type]
        assert command.model_fields_set == again.model_fields_set
        assert message_id == envelope.message_id
        assert ctx.occurred_at == envelope.occurred_at
        assert ctx.idempotency_key == f"kafka:chibo-demo:{envelope.message_id}"


def envelope(**overrides: Any) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "type": "ScheduleMeeting",
        "version": 1,
        "occurred_at": "2026-10-31T12:00:00+00:00",
        "source": "chibo-demo",
        "payload": {
            "meeting_id": "w1.c1.m1",
            "ward_id": "w1",
            "cell_id": "w1.c1",
            "scheduled_start": "2026-11-03T12:30:00+00:00",
        },
        **overrides,
    }


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "malformed_envelope"),
        (json.dumps(envelope(message_id="")).encode(), "malformed_envelope"),
        (json.dumps(envelope(extra=1)).encode(), "malformed_envelope"),
        (json.dumps(envelope(source="nobody")).encode(), "unauthorised_source"),
        (json.dumps(envelope(type="NoSuchCommand")).encode(), "unknown_command"),
        (json.dumps(envelope(version=9)).encode(), "unknown_command"),
        (json.dumps(envelope(payload={"meeting_id": "m"})).encode(), "invalid_payload"),
        (
            json.dumps(envelope(occurred_at="2026-11-02T00:00:00+00:00")).encode(),
            "implausible_time",
        ),
    ],
)
def test_a_refused_record_keeps_its_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DeadLetter) as refused:
        intake()._read(record(value, b"w1"))
    assert refused.value.reason == reason


def test_a_wrong_key_is_refused() -> None:
    with pytest.raises(DeadLetter) as refused:
        intake()._read(record(json.dumps(envelope()).encode(), b"w2"))
    assert refused.value.reason == "wrong_key"
