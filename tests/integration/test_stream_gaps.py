"""A stream with an event the consumers cannot read in its middle (a newer schema
version, as when the writer is upgraded before the readers): the event and its stream's
later events are parked on the events DLQ in order, the other streams of the partition
keep flowing, and once the event is fixed a redrive of the DLQ records (`chibo dlq
redrive`) applies them all, in order. Real Kafka, PostgreSQL, reports and notifications."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from ops.stack import Stack
from shared.clock import LOCAL_TZ
from tests.integration.helpers import eventually, fetch, metric_value, read_topic, unique_ward
from tests.integration.test_ops_cli import chibo

EVENTS_TOPIC = "chibo.events.v1"
EVENTS_DLQ_TOPIC = "chibo.events.dlq.v1"
CONSUMERS = ("reports", "notifications")


def envelope(
    ward: str, stream_id: str, version: int, event_type: str, payload: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    now = datetime.now(LOCAL_TZ).isoformat()
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "stream_id": stream_id,
        "stream_version": version,
        "global_position": 0,
        "ward_id": ward,
        "occurred_at": now,
        "recorded_at": now,
        "actor": "ward_official:test",
        "source": "http",
        "payload": payload,
        **extra,
    }


def meeting(ward: str) -> tuple[str, dict[str, Any], datetime]:
    meeting_id = f"{ward}.to-01.m{uuid.uuid4().hex[:6]}"
    start = (datetime.now(LOCAL_TZ) + timedelta(days=10)).replace(
        hour=19, minute=30, second=0, microsecond=0
    )
    body = {
        "meeting_id": meeting_id,
        "ward_id": ward,
        "cell_id": f"{ward}.to-01",
        "kind": "regular",
        "scheduled_start": start.isoformat(),
        "agenda": ["Quán triệt nghị quyết"],
        "location": None,
    }
    return meeting_id, body, start


async def publish(stack: Stack, ward: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for event in events:  # one key: one partition, in this order
            await producer.send_and_wait(
                EVENTS_TOPIC, json.dumps(event, ensure_ascii=False).encode(), key=ward.encode()
            )
    finally:
        await producer.stop()


async def applied(stack: Stack, consumer: str, stream_id: str) -> int | None:
    rows = await fetch(
        stack.database_url,
        f"select version from {consumer}.applied_streams where stream_id = $1",
        stream_id,
    )
    return rows[0]["version"] if rows else None


async def test_a_stream_parked_behind_a_newer_version_is_applied_in_order_after_a_redrive(
    running_stack: Stack,
) -> None:
    stack = running_stack
    ward = unique_ward()
    meeting_id, scheduled, start = meeting(ward)
    stream = f"meeting-{meeting_id}"
    where = {k: scheduled[k] for k in ("meeting_id", "ward_id", "cell_id")}
    first_move = {**where, "scheduled_start": (start + timedelta(days=1)).isoformat()}
    second_move = {**where, "scheduled_start": (start + timedelta(days=2)).isoformat()}
    v1 = envelope(ward, stream, 1, "MeetingScheduled", scheduled, schema_version=2)
    # Written by a contract newer than the readers' (MeetingRescheduled is at v1 here).
    v2_newer = envelope(
        ward,
        stream,
        2,
        "MeetingRescheduled",
        {**first_move, "reason": "Trùng lịch", "moved_by": "x"},
        schema_version=2,
    )
    v3 = envelope(ward, stream, 3, "MeetingRescheduled", {**second_move, "reason": "Mưa bão"})
    v4 = envelope(ward, stream, 4, "MeetingCancelled", {**where, "reason": "Hoãn sang tháng"})
    other_id, other_scheduled, _ = meeting(ward)
    other = envelope(
        ward, f"meeting-{other_id}", 1, "MeetingScheduled", other_scheduled, schema_version=2
    )
    parked_ids = {v2_newer["event_id"]: 2, v3["event_id"]: 3, v4["event_id"]: 4}

    await publish(stack, ward, [v1, v2_newer, v3, v4, other])

    # The partition keeps flowing: the other stream, after the parked ones, is applied.
    for consumer in CONSUMERS:

        async def other_applied(consumer: str = consumer) -> bool:
            return await applied(stack, consumer, f"meeting-{other_id}") == 1

        await eventually(other_applied, timeout_s=60, what=f"{consumer}: the other stream")

    def parked(records: list[Any]) -> dict[tuple[str, int], dict[str, str]]:
        found = {}
        for record in records:
            try:  # other tests leave records on the DLQ that are not JSON objects
                event_id = json.loads(record.value).get("event_id")
            except (ValueError, AttributeError):
                continue
            if event_id in parked_ids:
                headers = {k: v.decode() for k, v in record.headers}
                found[(headers["dlq_consumer"], parked_ids[event_id])] = {
                    **headers,
                    "position": f"{record.topic}/{record.partition}/{record.offset}",
                }
        return found

    records = await read_topic(
        stack.kafka_bootstrap,
        EVENTS_DLQ_TOPIC,
        lambda rs: len(parked(rs)) == 2 * len(parked_ids),
        timeout_s=60,
    )
    dead = parked(records)
    for consumer in CONSUMERS:
        assert dead[(consumer, 2)]["dlq_reason"] == "newer_schema_version"
        assert "newer than this reader" in dead[(consumer, 2)]["dlq_detail"]
        for version in (3, 4):
            assert dead[(consumer, version)]["dlq_reason"] == "stream_gap"
            assert "waiting for version 2" in dead[(consumer, version)]["dlq_detail"]
        # In the stream's order on the DLQ (one key, one partition).
        offsets = [int(dead[(consumer, v)]["position"].rsplit("/", 1)[1]) for v in (2, 3, 4)]
        assert offsets == sorted(offsets)
        assert await applied(stack, consumer, stream) == 1
    [row] = await fetch(
        stack.database_url,
        "select reschedules, cancelled_reason from reports.meetings where meeting_id = $1",
        meeting_id,
    )
    assert (row["reschedules"], row["cancelled_reason"]) == (0, None)

    # The cause fixed: version 2 as this contract reads it, then the DLQ records redriven
    # (the unreadable copy too: a duplicate now).
    v2_fixed = {
        **v2_newer,
        "schema_version": 1,
        "payload": {**first_move, "reason": "Trùng lịch"},
    }
    await publish(stack, ward, [v2_fixed])
    sources = [arg for d in dead.values() for arg in ("--source", d["position"])]
    redriven = chibo(stack, "dlq", "redrive", "--topic", "events", *sources, "--yes")
    assert redriven.exit_code == 0, redriven.output
    assert f"re-sent {len(dead)} record(s) to {EVENTS_TOPIC}" in redriven.stdout

    for consumer in CONSUMERS:

        async def all_applied(consumer: str = consumer) -> bool:
            return await applied(stack, consumer, stream) == 4

        await eventually(all_applied, timeout_s=60, what=f"{consumer}: the redriven stream")
    [row] = await fetch(
        stack.database_url,
        "select scheduled_start, reschedules, cancelled_reason from reports.meetings"
        " where meeting_id = $1",
        meeting_id,
    )
    assert row["reschedules"] == 2
    assert row["scheduled_start"] == start + timedelta(days=2)
    assert row["cancelled_reason"] == "Hoãn sang tháng"


async def test_an_event_near_the_size_limit_is_dead_lettered_cut_and_the_partition_flows(
    running_stack: Stack,
) -> None:
    """An unreadable event as large as the broker takes cannot be copied to the events
    DLQ with its dlq_* headers added (the producer refuses more than max_request_size):
    its copy is cut and says so, instead of failing the publish and rewinding the batch
    for ever, and the partition's later events are applied."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    stack = running_stack
    ward = unique_ward()
    key = ward.encode()
    meeting_id, scheduled, _ = meeting(ward)
    stream = f"meeting-{meeting_id}"
    # Written by a contract newer than the readers': dead-lettered newer_schema_version.
    newer = envelope(
        ward, stream, 1, "MeetingScheduled", {**scheduled, "padding": ""}, schema_version=99
    )
    limit = 1_048_576  # the producer's default max_request_size, the services' and this one's
    size = limit - DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"", []) - 8  # varints
    short = json.dumps(newer).encode()
    newer["payload"]["padding"] = "x" * (size - len(short))
    huge = json.dumps(newer).encode()
    assert len(huge) == size
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(key, huge, []) <= limit
    other_id, other_scheduled, _ = meeting(ward)
    other = envelope(
        ward, f"meeting-{other_id}", 1, "MeetingScheduled", other_scheduled, schema_version=2
    )

    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:  # one key: one partition, the huge event first
        sent = await producer.send_and_wait(EVENTS_TOPIC, huge, key=key)
        await producer.send_and_wait(EVENTS_TOPIC, json.dumps(other).encode(), key=key)
    finally:
        await producer.stop()

    for consumer in CONSUMERS:

        async def other_applied(consumer: str = consumer) -> bool:
            return await applied(stack, consumer, f"meeting-{other_id}") == 1

        await eventually(other_applied, timeout_s=60, what=f"{consumer}: the event after it")

    source = f"{EVENTS_TOPIC}/{sent.partition}/{sent.offset}"

    def letters(records: list[Any]) -> dict[str, dict[str, Any]]:
        found = {}
        for record in records:
            headers = {k: v.decode() for k, v in record.headers}
            if headers.get("dlq_source") == source:
                found[headers["dlq_consumer"]] = {**headers, "value": record.value}
        return found

    records = await read_topic(
        stack.kafka_bootstrap,
        EVENTS_DLQ_TOPIC,
        lambda rs: letters(rs).keys() == set(CONSUMERS),
        timeout_s=60,
    )
    for consumer, letter in letters(records).items():
        assert letter["dlq_reason"] == "newer_schema_version", consumer
        assert letter["dlq_truncated"] == "true"
        assert letter["dlq_original_bytes"] == str(size)
        assert 0 < len(letter["value"]) < size and huge.startswith(letter["value"])
        assert await applied(stack, consumer, stream) == 0  # parked before its version 1

    # Each consumer's service shows how many records the events DLQ holds.
    for consumer in CONSUMERS:

        async def dlq_size_shown(consumer: str = consumer) -> bool:
            held = await metric_value(
                stack, consumer, "chibo_dlq_retained_records", topic=EVENTS_DLQ_TOPIC
            )
            return held is not None and held >= len(records)

        await eventually(dlq_size_shown, timeout_s=30, what=f"{consumer}: the DLQ's size")
