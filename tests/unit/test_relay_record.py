"""The relay's hand-built Kafka value reads back as the contract's EventEnvelope; a relayed
batch goes to each key's partition in relay order."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.relay import EventRelay, kafka_record
from shared.contract import EventEnvelope, MeetingScheduled
from shared.settings import KafkaSettings

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


def test_the_relayed_value_is_json_dumps_of_the_head_then_the_stored_payload() -> None:
    """The hand-formatted value is byte for byte what json.dumps made of the row."""
    for text in ('say "hi"\\ \n\t', "Việt Nam \u2028 😀", "\x00"):
        stored = row(actor=text, source=text, stream_id=f"meeting-{text}", ward_id=text)
        for overrides in (
            {},
            {"event_id": str(stored["event_id"]), "correlation_id": None},
            {"recorded_at": datetime(2026, 11, 22, 10, 0, tzinfo=UTC)},  # no microseconds
        ):
            stored = {**stored, **overrides}
            head = {k: stored[k] for k in HEAD_FIELDS}
            for k in ("event_id", "correlation_id", "causation_id"):
                head[k] = str(head[k]) if head[k] else None
            for k in ("occurred_at", "recorded_at"):
                head[k] = head[k].isoformat()  # type: ignore[attr-defined]
            expected = json.dumps(head, ensure_ascii=False)[:-1]
            expected += f', "payload": {stored["payload"]}}}'
            assert kafka_record(stored)["value"] == expected.encode()


HEAD_FIELDS = (
    "event_id", "event_type", "schema_version", "stream_id", "stream_version",
    "global_position", "ward_id", "occurred_at", "recorded_at", "correlation_id",
    "causation_id", "actor", "source",
)  # fmt: skip


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.records: list[dict[str, object]] = []
        self._capacity = capacity

    def append(self, *, timestamp: None, **record: object) -> object | None:
        if len(self.records) >= self._capacity:
            return None
        self.records.append(record)
        return object()


class _Producer:
    """Records what the relay hands over, per partition, in order."""

    def __init__(self, capacity: int) -> None:
        self.sent: list[tuple[int, list[dict[str, object]]]] = []
        self._capacity = capacity

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(6))

    def create_batch(self) -> _Batch:
        return _Batch(self._capacity)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future:
        self.sent.append((partition, batch.records))
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Pool:
    def __init__(self, rows: list[dict[str, object]]) -> None:
        self.rows = rows
        self.checkpoints: list[tuple[object, ...]] = []

    async def fetch(self, *_args: object) -> list[dict[str, object]]:
        return self.rows

    async def execute(self, _sql: str, *args: object) -> None:
        self.checkpoints.append(args)


async def test_a_batch_goes_out_per_partition_in_relay_order_with_the_keys_partition() -> None:
    wards = ["nam-ngan", "ben-nghe", "da-kao", "tan-dinh", "hang-bac", "cua-nam", "an-hoa"]
    rows = [
        row(ward_id=wards[i % len(wards)], global_position=i, stream_version=i + 1, txid=7)
        for i in range(50)
    ]
    pool, producer = _Pool(rows), _Producer(capacity=3)  # small batches: some fill up
    relay = EventRelay(pool, "", KafkaSettings(), MeetingsMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    assert await relay._publish_batch(producer) == 50  # type: ignore[arg-type]

    by_partition: dict[int, list[int]] = {}
    for partition, records in producer.sent:
        assert 0 < len(records) <= 3
        for record in records:
            key = record["key"]
            assert isinstance(key, bytes)
            assert partition == DefaultPartitioner()(key, list(range(6)), list(range(6)))
            value = json.loads(record["value"])  # type: ignore[arg-type]
            by_partition.setdefault(partition, []).append(value["global_position"])
    assert sorted(p for positions in by_partition.values() for p in positions) == list(range(50))
    for positions in by_partition.values():
        assert positions == sorted(positions)  # relay order within each partition
    assert pool.checkpoints[-1][1:] == ("7", 49)  # moved past the last row, after the acks
