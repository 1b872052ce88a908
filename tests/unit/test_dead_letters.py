"""The dead-letter copy both Kafka doors publish: its headers, the cut of a value too
large to copy whole, and the empty copy when the DLQ topic still refuses it. The broker
is a stand-in; tests/integration (test_kafka_intake, test_stream_gaps) use the real one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from shared.clock import FrozenClock
from shared.dead_letters import (
    DLQ_DETAIL_MAX_CHARS,
    DLQ_MAX_VALUE_BYTES,
    DeadLetterPublisher,
    dead_letter_copy,
    without_value,
)

AT = datetime(2025, 3, 9, 12, 30, tzinfo=UTC)
KEY = b"ha-noi.ba-dinh.phuc-xa"


def record(value: bytes | None, offset: int = 41) -> ConsumerRecord:
    size = len(value) if value is not None else -1
    return ConsumerRecord("chibo.events.v1", 3, offset, 0, 0, KEY, value, None, 8, size, [])


def test_the_headers_say_why_where_from_and_when() -> None:
    copy = dead_letter_copy(
        record(b'{"x": 1}'),
        "invalid_payload",
        "d" * (DLQ_DETAIL_MAX_CHARS + 500),
        AT,
        {"dlq_consumer": "reports"},
    )
    assert copy.key == KEY
    assert copy.value == b'{"x": 1}'
    assert copy.headers == {
        "dlq_reason": "invalid_payload",
        "dlq_detail": "d" * DLQ_DETAIL_MAX_CHARS,
        "dlq_source": "chibo.events.v1/3/41",
        "dlq_at": "2025-03-09T12:30:00+00:00",
        "dlq_consumer": "reports",
    }
    assert copy.source == "chibo.events.v1/3/41"


def test_a_record_without_a_value_is_copied_empty_and_not_marked_cut() -> None:
    copy = dead_letter_copy(record(None), "malformed_envelope", "no value", AT)
    assert copy.value == b""
    assert "dlq_truncated" not in copy.headers


def test_a_value_at_the_limit_is_copied_whole() -> None:
    value = b"x" * DLQ_MAX_VALUE_BYTES
    copy = dead_letter_copy(record(value), "malformed_envelope", "", AT)
    assert copy.value == value
    assert "dlq_truncated" not in copy.headers and "dlq_original_bytes" not in copy.headers


def test_a_longer_value_is_cut_and_says_so() -> None:
    value = bytes(range(256)) * 4000  # 1,024,000 bytes
    copy = dead_letter_copy(
        record(value), "newer_schema_version", "", AT, {"dlq_message_id": "m-1"}
    )
    assert copy.value == value[:DLQ_MAX_VALUE_BYTES]
    assert copy.headers["dlq_truncated"] == "true"
    assert copy.headers["dlq_original_bytes"] == str(len(value))
    assert copy.headers["dlq_message_id"] == "m-1"


def test_the_cut_copy_with_every_header_at_its_longest_fits_the_producers_limit() -> None:
    """The cut is what keeps the copy publishable: with the detail at its longest and
    every header a door adds, it stays under the producer's default max_request_size."""
    copy = dead_letter_copy(
        record(b"x" * 1_048_576),
        "rejected_" + "r" * 60,
        "ệ" * (DLQ_DETAIL_MAX_CHARS + 1),  # 3 bytes a character in UTF-8
        AT,
        {"dlq_consumer": "notifications", "dlq_message_id": "m" * 200},
    )
    headers = [(k, v.encode()) for k, v in copy.headers.items()]
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(KEY * 8, copy.value, headers)
    assert size < 1_048_576


def test_without_value_keeps_the_reason_and_marks_the_copy_cut() -> None:
    copy = dead_letter_copy(record(b"abc"), "unstorable", "refused", AT)
    empty = without_value(copy, 3)
    assert empty.value == b"" and empty.key == KEY
    assert empty.headers == copy.headers | {"dlq_truncated": "true", "dlq_original_bytes": "3"}


class Broker:
    """Refuses the first ``refusals`` publishes with ``error``; keeps what it took."""

    def __init__(self, error: Exception, refusals: int = 1) -> None:
        self.error = error
        self.refusals = refusals
        self.published: list[tuple[bytes, dict[str, Any]]] = []

    async def publish(self, body: bytes, **kwargs: Any) -> None:
        if self.refusals:
            self.refusals -= 1
            raise self.error
        self.published.append((body, kwargs))


def test_a_copy_the_dlq_topic_refuses_as_too_large_goes_out_without_its_value() -> None:
    broker = Broker(MessageSizeTooLargeError())
    publisher = DeadLetterPublisher(broker, "chibo.commands.dlq.v1", FrozenClock(AT))  # type: ignore[arg-type]

    sent = asyncio.run(publisher.publish(record(b"y" * 5000), "invalid_payload", "bad"))

    [(body, kwargs)] = broker.published
    assert body == b"" == sent.value
    assert kwargs["topic"] == "chibo.commands.dlq.v1"
    assert kwargs["key"] == KEY
    assert kwargs["headers"] == sent.headers
    assert sent.headers["dlq_truncated"] == "true"
    assert sent.headers["dlq_original_bytes"] == "5000"
    assert sent.headers["dlq_at"] == AT.isoformat()


def test_any_other_failure_to_publish_is_raised_for_the_door_to_rewind() -> None:
    broker = Broker(KafkaTimeoutError())
    publisher = DeadLetterPublisher(broker, "chibo.events.dlq.v1")  # type: ignore[arg-type]

    with pytest.raises(KafkaTimeoutError):
        asyncio.run(publisher.publish(record(b"z"), "stream_gap", "waiting"))
    assert broker.published == []
