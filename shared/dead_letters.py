"""The one way a Kafka door dead-letters a record: a copy of it, with its key and the
``dlq_*`` headers that say why and where it came from, on a dead-letter topic.

Both doors use it: the meetings command intake (``chibo.commands.dlq.v1``) and the event
consumers of the reports and notifications services (``chibo.events.dlq.v1``). The
header names are read by ``chibo dlq`` (ops/dlq.py), the runbooks (docs/operations.md)
and the contract (docs/contract.md): they do not change.

A dead letter must always be publishable, or the batch that holds its record is rewound
and read again for ever (the partition stalls): its whole record must stay under the
producer's ``max_request_size`` and the broker's ``message.max.bytes`` (both about
1 MiB by default) with the headers added to a record that may itself have been close to
the limit. So a value over ``DLQ_MAX_VALUE_BYTES`` is cut to it, and a copy the DLQ
topic still refuses (a lower ``max.message.bytes`` there) is sent with an empty value;
either says so (``dlq_truncated``, ``dlq_original_bytes``), and ``dlq_source`` names the
original, which holds the whole record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from aiokafka import ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError
from faststream.kafka import KafkaBroker

from shared.clock import Clock, SystemClock

# Room left under 1 MiB for the key, the record's own headers, the dlq_* headers (the
# detail at its longest) and the batch's framing.
DLQ_MAX_VALUE_BYTES = 900_000
DLQ_DETAIL_MAX_CHARS = 2000


@dataclass(frozen=True)
class DeadLetterCopy:
    """What goes to the DLQ topic for one record."""

    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def source(self) -> str:
        return self.headers["dlq_source"]


def source_of(record: ConsumerRecord) -> str:
    """``topic/partition/offset``, as ``dlq_source`` names a record."""
    return f"{record.topic}/{record.partition}/{record.offset}"


def dead_letter_copy(
    record: ConsumerRecord,
    reason: str,
    detail: str,
    at: datetime,
    extra: Mapping[str, str] | None = None,
    max_value_bytes: int = DLQ_MAX_VALUE_BYTES,
) -> DeadLetterCopy:
    """The copy of ``record`` to dead-letter: its key, its value (cut to
    ``max_value_bytes``, and marked so), and the headers ``dlq_reason``, ``dlq_detail``
    (cut to ``DLQ_DETAIL_MAX_CHARS``), ``dlq_source``, ``dlq_at`` and the door's own
    ``extra`` ones (``dlq_consumer``, ``dlq_message_id``)."""
    headers = {
        "dlq_reason": reason,
        "dlq_detail": detail[:DLQ_DETAIL_MAX_CHARS],
        "dlq_source": source_of(record),
        "dlq_at": at.isoformat(),
    }
    if extra:
        headers |= extra
    value = record.value or b""
    if len(value) > max_value_bytes:
        headers |= _cut(len(value))
        value = value[:max_value_bytes]
    return DeadLetterCopy(record.key, value, headers)


def without_value(copy: DeadLetterCopy, original_bytes: int) -> DeadLetterCopy:
    """The copy with no value, for a DLQ topic that refused even the cut one: the reason
    and where the original is still go out."""
    return replace(copy, value=b"", headers=copy.headers | _cut(original_bytes))


def _cut(original_bytes: int) -> dict[str, str]:
    return {"dlq_truncated": "true", "dlq_original_bytes": str(original_bytes)}


class DeadLetterPublisher:
    """Publishes dead letters to one DLQ topic through the service's FastStream broker.
    The door keeps its own metrics and log lines; this only builds and sends the copy."""

    def __init__(self, broker: KafkaBroker, topic: str, clock: Clock | None = None) -> None:
        self._broker = broker
        self.topic = topic
        self._clock = clock or SystemClock()

    async def publish(
        self,
        record: ConsumerRecord,
        reason: str,
        detail: str,
        extra: Mapping[str, str] | None = None,
    ) -> DeadLetterCopy:
        """Send ``record``'s dead letter; returns what was sent. Raises what the broker
        raises for anything but a record too large (the door rewinds its batch)."""
        copy = dead_letter_copy(record, reason, detail, self._clock.now(), extra)
        try:
            await self._send(copy)
        except MessageSizeTooLargeError:
            copy = without_value(copy, len(record.value or b""))
            await self._send(copy)
        return copy

    async def _send(self, copy: DeadLetterCopy) -> None:
        await self._broker.publish(copy.value, topic=self.topic, key=copy.key, headers=copy.headers)
