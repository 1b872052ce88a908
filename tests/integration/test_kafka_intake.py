"""The Kafka door for upstream publishers, on the real broker and database."""

from __future__ import annotations

import json

import httpx
from aiokafka import AIOKafkaProducer

from ops.stack import Stack
from tests.integration.helpers import (
    eventually,
    fetch,
    inbound,
    read_topic,
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
        "select stream_id, source, actor from meetings.events where ward_id = $1",
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
    ward = unique_ward()
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


async def test_the_same_message_sent_twice_appends_once(running_stack: Stack) -> None:
    ward = unique_ward()
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
    ward = unique_ward()
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
