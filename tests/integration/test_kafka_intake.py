"""The Kafka door for upstream publishers, on the real broker and database."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer, ConsumerRecord
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from ops.stack import Stack
from services.meetings.adapters.event_store import PostgresEventStore
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.org_directory import OrgDirectory
from services.meetings.domain.petition import PetitionPolicy
from services.meetings.entrypoints.kafka_commands import KafkaCommandIntake
from services.meetings.service_layer.handlers import CommandBus, CommandContext
from shared.clock import SystemClock
from shared.contract.commands import Command
from shared.settings import KafkaSettings
from tests.integration.helpers import (
    close_pool,
    eventually,
    fetch,
    inbound,
    metric_value,
    read_topic,
    registered_ward,
    schedule_body,
    unique_ward,
)

COMMANDS = "chibo.commands.v1"
DLQ = "chibo.commands.dlq.v1"


async def _publish(stack: Stack, *records: tuple[bytes, str]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        sent = []
        for value, key in records:
            meta = await producer.send_and_wait(COMMANDS, value, key=key.encode())
            sent.append((meta.partition, meta.offset))
        return sent
    finally:
        await producer.stop()


async def _events_of(stack: Stack, ward: str) -> list:
    return await fetch(
        stack.database_url,
        "select stream_id, source, actor from meetings.events"
        " where ward_id = $1 and stream_id like 'meeting-%'",  # not the cells it registered
        ward,
    )


def _dlq_by_source(records: list) -> dict[str, dict[str, str]]:
    found = {}
    for record in records:
        headers = {k: v.decode() for k, v in record.headers}
        found[headers["dlq_source"]] = {**headers, "value": record.value}
    return found


async def test_poison_goes_to_the_dlq_and_the_records_after_it_are_processed(
    running_stack: Stack,
) -> None:
    ward = await registered_ward(running_stack)
    poison = b"\xff\xfe not json at all"
    invalid = json.dumps(inbound({**schedule_body(ward), "scheduled_start": "tomorrow"}))
    valid = inbound(schedule_body(ward))
    sent = await _publish(
        running_stack,
        (poison, ward),
        (invalid.encode(), ward),
        (json.dumps(valid).encode(), ward),
    )

    async def valid_one_appended() -> list | None:
        return await _events_of(running_stack, ward) or None

    events = await eventually(valid_one_appended, what="the valid command's event")
    assert len(events) == 1
    assert events[0]["source"] == "meeting-app"
    assert events[0]["actor"] == "system_publisher:meeting-app"

    wanted = {f"{COMMANDS}/{p}/{o}" for p, o in sent[:2]}
    records = await read_topic(
        running_stack.kafka_bootstrap,
        DLQ,
        until=lambda rs: wanted <= _dlq_by_source(rs).keys(),
    )
    dead = _dlq_by_source(records)
    poison_letter = dead[f"{COMMANDS}/{sent[0][0]}/{sent[0][1]}"]
    assert poison_letter["dlq_reason"] == "malformed_envelope"
    assert poison_letter["value"] == poison  # the original bytes, untouched
    invalid_letter = dead[f"{COMMANDS}/{sent[1][0]}/{sent[1][1]}"]
    assert invalid_letter["dlq_reason"] == "invalid_payload"
    assert "scheduled_start" in invalid_letter["dlq_detail"]
    assert invalid_letter["dlq_message_id"] == json.loads(invalid)["message_id"]

    async def dlq_size_shown() -> bool:
        held = await metric_value(
            running_stack, "meetings", "chibo_dlq_retained_records", topic=DLQ
        )
        return held is not None and held >= len(records)

    await eventually(dlq_size_shown, timeout_s=30, what="the DLQ's size on /metrics")


async def test_the_same_message_sent_twice_appends_once(running_stack: Stack) -> None:
    ward = await registered_ward(running_stack, cells=2)
    message = json.dumps(inbound(schedule_body(ward))).encode()
    marker = json.dumps(inbound(schedule_body(ward, cell_no=2))).encode()
    await _publish(running_stack, (message, ward), (message, ward), (marker, ward))

    async def marker_processed() -> list | None:
        events = await _events_of(running_stack, ward)
        return (
            events
            if any(
                e["stream_id"].endswith(".to-02", 0, -7) or ".to-02." in e["stream_id"]
                for e in events
            )
            else None
        )

    events = await eventually(marker_processed, what="the marker command, after the resend")
    assert len(events) == 2  # the resent message added nothing


async def test_sources_not_on_the_allow_list_and_wrong_keys_are_dead_lettered(
    running_stack: Stack,
) -> None:
    ward = unique_ward()
    stranger = inbound(schedule_body(ward), source="unknown-system")
    wrong_key = inbound(schedule_body(ward))
    sent = await _publish(
        running_stack,
        (json.dumps(stranger).encode(), ward),
        (json.dumps(wrong_key).encode(), "some-other-ward"),
    )
    wanted = {
        f"{COMMANDS}/{p}/{o}": reason
        for (p, o), reason in zip(sent, ("unauthorised_source", "wrong_key"), strict=True)
    }
    records = await read_topic(
        running_stack.kafka_bootstrap,
        DLQ,
        until=lambda rs: wanted.keys() <= _dlq_by_source(rs).keys(),
    )
    dead = _dlq_by_source(records)
    for source, reason in wanted.items():
        assert dead[source]["dlq_reason"] == reason
    assert await _events_of(running_stack, ward) == []


async def test_text_with_a_nul_character_is_refused_at_both_doors(running_stack: Stack) -> None:
    """PostgreSQL cannot store U+0000 in text or jsonb: such a command is refused with
    the reason (a 422 over HTTP, a dead letter on Kafka), and the next one is carried out."""
    ward = await registered_ward(running_stack)
    token = running_stack.issue_token("ward_official", "ward", ward, "nul-test")
    async with httpx.AsyncClient(base_url=running_stack.service_url("meetings")) as client:
        response = await client.post(
            "/v1/meetings",
            json=schedule_body(ward, agenda=["Quán triệt\x00 nghị quyết"]),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 422, response.text
    assert "NUL" in response.text

    with_nul = inbound(schedule_body(ward, location="Nhà văn hoá\x00"))
    valid = inbound(schedule_body(ward))
    sent = await _publish(
        running_stack, (json.dumps(with_nul).encode(), ward), (json.dumps(valid).encode(), ward)
    )

    async def valid_one_appended() -> list | None:
        return await _events_of(running_stack, ward) or None

    assert len(await eventually(valid_one_appended, what="the command after the NUL")) == 1
    source = f"{COMMANDS}/{sent[0][0]}/{sent[0][1]}"
    records = await read_topic(
        running_stack.kafka_bootstrap, DLQ, until=lambda rs: source in _dlq_by_source(rs)
    )
    letter = _dlq_by_source(records)[source]
    assert letter["dlq_reason"] == "invalid_payload"
    assert "NUL" in letter["dlq_detail"]


async def test_times_and_months_outside_the_contracts_years_are_dead_lettered_not_stalling(
    running_stack: Stack,
) -> None:
    """Values that once passed the contract and then crashed the decision or the write
    (so the batch was rewound forever and nothing behind it was written): each is now
    dead-lettered with its reason, and the valid command after them is carried out."""
    ward = await registered_ward(running_stack)
    far = "0001-01-01T06:00:00+07:00"
    poison = [
        inbound(
            {"orientation_id": f"{ward}.o", "ward_id": ward, "month": "9999-12", "topics": ["x"]},
            type="IssueOrientation",
        ),
        inbound(
            {"ward_id": ward, "month": "0000-05", "submitted_by": "Bí thư"},
            type="SubmitWardReport",
        ),
        inbound(schedule_body(ward, scheduled_start=far)),
        inbound(schedule_body(ward), occurred_at="0001-01-01T00:00:00+07:00"),
    ]
    valid = inbound(schedule_body(ward))
    sent = await _publish(
        running_stack,
        *((json.dumps(p).encode(), ward) for p in poison),
        (json.dumps(valid).encode(), ward),
    )

    async def valid_one_appended() -> list | None:
        return await _events_of(running_stack, ward) or None

    [event] = await eventually(valid_one_appended, what="the valid command after the poison")
    assert event["stream_id"] == f"meeting-{valid['payload']['meeting_id']}"
    wanted = {f"{COMMANDS}/{p}/{o}" for p, o in sent[:4]}
    records = await read_topic(
        running_stack.kafka_bootstrap,
        DLQ,
        until=lambda rs: wanted <= _dlq_by_source(rs).keys(),
    )
    dead = _dlq_by_source(records)
    letters = [dead[f"{COMMANDS}/{p}/{o}"] for p, o in sent[:4]]
    assert [(x["dlq_reason"], x.get("dlq_message_id")) for x in letters] == [
        ("invalid_payload", poison[0]["message_id"]),
        ("invalid_payload", poison[1]["message_id"]),
        ("invalid_payload", poison[2]["message_id"]),
        ("malformed_envelope", None),  # the envelope itself is refused: no message id read
    ]
    assert "month" in letters[0]["dlq_detail"] and "month" in letters[1]["dlq_detail"]
    assert "scheduled_start" in letters[2]["dlq_detail"]
    assert "occurred_at" in letters[3]["dlq_detail"]


async def test_a_record_near_the_size_limit_is_dead_lettered_cut_and_the_partition_flows(
    running_stack: Stack,
) -> None:
    """A record as large as the broker takes cannot be copied to the DLQ with its dlq_*
    headers added (the producer refuses more than max_request_size): its copy is cut and
    says so, instead of failing the publish and rewinding the batch forever."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    ward = await registered_ward(running_stack)
    key = ward.encode()
    limit = 1_048_576  # the producer's default max_request_size, ours and the test's
    size = limit - DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"", []) - 8  # varints
    huge = b"x" * size  # not JSON: dead-lettered as malformed_envelope
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(key, huge, []) <= limit
    valid = inbound(schedule_body(ward))
    sent = await _publish(running_stack, (huge, ward), (json.dumps(valid).encode(), ward))

    async def valid_one_appended() -> list | None:
        return await _events_of(running_stack, ward) or None

    await eventually(valid_one_appended, what="the command after the huge record")
    source = f"{COMMANDS}/{sent[0][0]}/{sent[0][1]}"
    records = await read_topic(
        running_stack.kafka_bootstrap, DLQ, until=lambda rs: source in _dlq_by_source(rs)
    )
    letter = _dlq_by_source(records)[source]
    assert letter["dlq_reason"] == "malformed_envelope"
    assert letter["dlq_truncated"] == "true"
    assert letter["dlq_original_bytes"] == str(size)
    assert 0 < len(letter["value"]) < size and huge.startswith(letter["value"])


class _GapInTheContract(KafkaCommandIntake):
    """The intake as if the contract had let through a time PostgreSQL cannot store (as
    it once did: an envelope's occurred_at in year 1), for the messages marked so."""

    def _read(self, record: ConsumerRecord) -> tuple[Command, CommandContext, str]:
        command, ctx, message_id = super()._read(record)
        if message_id.startswith("unstorable:"):
            year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=7)))
            ctx = dataclasses.replace(ctx, occurred_at=year_one)
        return command, ctx, message_id


class _Batch:
    """What FastStream hands the intake: a batch's records, acknowledged or rewound."""

    def __init__(self, records: list[ConsumerRecord]) -> None:
        self.raw_message = tuple(records)
        self.consumer = self
        self.acked = False
        self.seeks: list[tuple[Any, int]] = []

    def seek(self, partition: Any, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def ack(self) -> None:
        self.acked = True


async def test_a_batch_write_the_database_refuses_dead_letters_only_the_offender(
    running_stack: Stack,
) -> None:
    """A DataError on a batch's write is not a passing outage: retrying the batch fails
    the same way forever. The intake carries its commands out one by one, dead-letters
    the one PostgreSQL refuses (``unstorable``), and acknowledges the batch."""
    pool = await asyncpg.create_pool(running_stack.database_url, min_size=1, max_size=2)
    assert pool is not None
    broker = KafkaBroker(running_stack.kafka_bootstrap)
    await broker.start()
    try:
        metrics = MeetingsMetrics(CollectorRegistry())
        policy = PetitionPolicy.parse("cell:7,ward:15,district:30,province:45", 180)
        bus = CommandBus(
            PostgresEventStore(pool, metrics), OrgDirectory(pool), SystemClock(), metrics, policy
        )
        settings = KafkaSettings()
        intake = _GapInTheContract(
            bus,
            broker,
            settings,
            frozenset({"meeting-app"}),
            SystemClock(),
            KafkaCommandIntake.dlq_counter(settings, CollectorRegistry()),
        )
        ward = await registered_ward(running_stack, cells=2)
        topic = f"test.unstorable.{uuid.uuid4().hex[:8]}"  # names this test's DLQ records
        before = inbound(schedule_body(ward, cell_no=1))
        bad = inbound(schedule_body(ward, cell_no=2), message_id=f"unstorable:{uuid.uuid4()}")
        after = inbound(schedule_body(ward, cell_no=2))
        key = ward.encode()
        values = [json.dumps(e).encode() for e in (before, bad, after)]
        batch = _Batch(
            [
                ConsumerRecord(topic, 0, n, 0, 0, key, v, None, len(key), len(v), [])
                for n, v in enumerate(values)
            ]
        )
        await intake(cast(Any, batch))
        assert batch.acked and batch.seeks == []

        stored = {e["stream_id"] for e in await _events_of(running_stack, ward)}
        assert stored == {
            f"meeting-{before['payload']['meeting_id']}",
            f"meeting-{after['payload']['meeting_id']}",
        }
        source = f"{topic}/0/1"
        records = await read_topic(
            running_stack.kafka_bootstrap, DLQ, until=lambda rs: source in _dlq_by_source(rs)
        )
        letter = _dlq_by_source(records)[source]
        assert letter["dlq_reason"] == "unstorable"
        assert "DataError" in letter["dlq_detail"]
        assert letter["dlq_message_id"] == bad["message_id"]
        assert letter["value"] == json.dumps(bad).encode()
        assert intake.dead_lettered.labels(DLQ, "unstorable")._value.get() == 1
    finally:
        await broker.stop()
        await close_pool(pool)
