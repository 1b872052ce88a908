"""Contact details are correctable and erasable, and never in the immutable log."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from ops.stack import Stack
from services.meetings.adapters.event_store import (
    ConcurrencyConflict,
    EventMetadata,
    PostgresEventStore,
)
from services.meetings.adapters.metrics import MeetingsMetrics
from shared.clock import SystemClock
from shared.contract.events import ContactDetailsChanged
from tests.integration.helpers import (
    close_pool,
    eventually,
    fetch,
    inbound,
    metric_value,
    read_topic,
    registered_ward,
    unique_ward,
    ward_auth,
)

COMMANDS = "chibo.commands.v1"
DLQ = "chibo.commands.dlq.v1"


async def test_contact_details_are_stored_apart_corrected_and_erased(running_stack: Stack) -> None:
    ward = unique_ward()
    person = f"{ward}.dv1"
    phone, email = "+84 912 345 678", "tran.thi.lan@example.vn"
    async with httpx.AsyncClient(
        base_url=running_stack.service_url("meetings"), headers=ward_auth(running_stack, ward)
    ) as client:
        for body in (
            {"person_id": person, "ward_id": ward, "phone": phone, "email": "old@example.vn"},
            {"person_id": person, "ward_id": ward, "email": email},  # a correction
        ):
            response = await client.post("/v1/commands/SetContactDetails", json=body)
            assert response.status_code == 201, response.text
        stored = await fetch(
            running_stack.database_url,
            "select phone, email from meetings.contacts where person_id = $1",
            person,
        )
        assert [(r["phone"], r["email"]) for r in stored] == [(phone, email)]
        erase = await client.post(
            "/v1/commands/EraseContactDetails", json={"person_id": person, "ward_id": ward}
        )
        assert erase.status_code == 201, erase.text
    assert (
        await fetch(
            running_stack.database_url,
            "select 1 from meetings.contacts where person_id = $1",
            person,
        )
        == []
    )
    log = await fetch(
        running_stack.database_url,
        "select event_type, payload::text as payload from meetings.events where ward_id = $1"
        " order by global_position",
        ward,
    )
    assert [r["event_type"] for r in log] == [
        "ContactDetailsChanged",
        "ContactDetailsChanged",
        "ContactDetailsErased",
    ]
    for row in log:
        assert "912" not in row["payload"] and "example.vn" not in row["payload"]


async def _post(stack: Stack, ward: str, command: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url=stack.service_url("meetings"), headers=ward_auth(stack, ward)
    ) as client:
        return await client.post(f"/v1/commands/{command}", json=body)


async def _redone_batches(stack: Stack) -> float:
    return await metric_value(stack, "meetings", "chibo_command_batches_redone_total") or 0.0


async def _move(stack: Stack, person: str, old_ward: str, new_ward: str) -> None:
    """``person`` joins the old ward's cell, then transfers to the new ward's."""
    old_cell, new_cell = f"{old_ward}.to-01", f"{new_ward}.to-01"
    member = {"member_id": person, "full_name": "Trần Thị Lan", "status": "full"}
    steps: list[tuple[str, str, dict[str, Any]]] = [
        (old_ward, "AdmitMember", {"cell_id": old_cell, "ward_id": old_ward, **member}),
        (old_ward, "SetContactDetails", {"person_id": person, "ward_id": old_ward,
                                         "phone": "+84 912 000 111"}),
        (old_ward, "TransferMember", {"cell_id": old_cell, "ward_id": old_ward,
                                      "member_id": person, "to_cell_id": new_cell}),
        (new_ward, "AdmitMember", {"cell_id": new_cell, "ward_id": new_ward, **member,
                                   "transferred_from_cell_id": old_cell}),
    ]  # fmt: skip
    for ward, command, body in steps:
        response = await _post(stack, ward, command, body)
        assert response.status_code == 201, (command, response.text)


async def test_a_member_who_moved_ward_has_their_details_corrected_and_erased_by_the_new_ward(
    running_stack: Stack,
) -> None:
    """Review item 6: from the new ward, a correction and an erasure were refused as a
    concurrency conflict (expected == actual version) forever, and each forced a redo."""
    old_ward, new_ward = await registered_ward(running_stack), await registered_ward(running_stack)
    person = f"{old_ward}.dv-lan"
    await _move(running_stack, person, old_ward, new_ward)
    url = running_stack.database_url
    row = "select ward_id, phone, email from meetings.contacts where person_id = $1"
    # The contact row followed the member to the new ward.
    assert [tuple(r) for r in await fetch(url, row, person)] == [
        (new_ward, "+84 912 000 111", None)
    ]
    redone_before = await _redone_batches(running_stack)

    corrected = await _post(
        running_stack, new_ward, "SetContactDetails",
        {"person_id": person, "ward_id": new_ward, "email": "lan@example.vn"},
    )  # fmt: skip
    assert corrected.status_code == 201, corrected.text
    assert corrected.json()["stream_version"] == 2
    assert [tuple(r) for r in await fetch(url, row, person)] == [
        (new_ward, "+84 912 000 111", "lan@example.vn")
    ]
    # The old ward may no longer: a clear refusal of its own, not "reload and retry".
    for command, body in (
        ("SetContactDetails", {"person_id": person, "ward_id": old_ward, "phone": "0912999888"}),
        ("EraseContactDetails", {"person_id": person, "ward_id": old_ward}),
    ):
        refused = await _post(running_stack, old_ward, command, body)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "wrong_ward"
        assert "không thuộc đảng bộ" in refused.json()["message_vi"]
    assert [tuple(r) for r in await fetch(url, row, person)] == [
        (new_ward, "+84 912 000 111", "lan@example.vn")
    ]

    erased = await _post(
        running_stack, new_ward, "EraseContactDetails", {"person_id": person, "ward_id": new_ward}
    )
    assert erased.status_code == 201, erased.text
    assert await fetch(url, row, person) == []
    assert await _redone_batches(running_stack) == redone_before  # no bogus conflict

    # The stream keeps the ward that created it as its events' ward, which is their Kafka
    # key: one partition, so consumers get them in order. The payload names who acted.
    log = await fetch(
        url,
        "select stream_version, ward_id, payload ->> 'ward_id' as acting, payload::text as p"
        " from meetings.events where stream_id = $1 order by stream_version",
        f"person-{person}",
    )
    assert [(r["stream_version"], r["ward_id"], r["acting"]) for r in log] == [
        (1, old_ward, old_ward),
        (2, old_ward, new_ward),
        (3, old_ward, new_ward),
    ]
    assert all("912" not in r["p"] and "example.vn" not in r["p"] for r in log)
    assert [tuple(r) for r in await fetch(
        url, "select ward_id, version from meetings.streams where stream_id = $1",
        f"person-{person}",
    )] == [(old_ward, 3)]  # fmt: skip


async def test_a_real_conflict_on_a_persons_stream_is_still_a_conflict(
    running_stack: Stack,
) -> None:
    """The stream's ward no longer refuses the write; its version still does."""
    old_ward, new_ward = await registered_ward(running_stack), await registered_ward(running_stack)
    person = f"{old_ward}.dv-hoa"
    await _move(running_stack, person, old_ward, new_ward)
    pool = await asyncpg.create_pool(running_stack.database_url, min_size=1, max_size=2)
    try:
        store = PostgresEventStore(pool, MeetingsMetrics(CollectorRegistry()))
        meta = EventMetadata(actor="test", source="test", occurred_at=SystemClock().now())
        event = ContactDetailsChanged(person_id=person, ward_id=new_ward, changed=["email"])
        async with store.transaction() as conn:
            with pytest.raises(ConcurrencyConflict) as caught:
                # A writer that loaded version 0 while version 1 was written meanwhile.
                await store.append(conn, f"person-{person}", old_ward, 0, [event], meta)
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        # From the version it is at, the same write goes through.
        async with store.transaction() as conn:
            done = await store.append(conn, f"person-{person}", old_ward, 1, [event], meta)
        assert done.stream_version == 2
    finally:
        await close_pool(pool)


async def test_the_kafka_door_takes_the_new_wards_erasure_and_dead_letters_the_old_wards(
    running_stack: Stack,
) -> None:
    old_ward, new_ward = await registered_ward(running_stack), await registered_ward(running_stack)
    person = f"{old_ward}.dv-minh"
    await _move(running_stack, person, old_ward, new_ward)
    redone_before = await _redone_batches(running_stack)
    stale = inbound(
        {"person_id": person, "ward_id": old_ward, "email": "minh@example.vn"},
        type="SetContactDetails",
    )
    erase = inbound({"person_id": person, "ward_id": new_ward}, type="EraseContactDetails")
    producer = AIOKafkaProducer(bootstrap_servers=running_stack.kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            COMMANDS, json.dumps(stale).encode(), key=old_ward.encode()
        )
        await producer.send_and_wait(COMMANDS, json.dumps(erase).encode(), key=new_ward.encode())
    finally:
        await producer.stop()

    async def erased() -> bool:
        rows = await fetch(
            running_stack.database_url,
            "select 1 from meetings.contacts where person_id = $1",
            person,
        )
        return not rows

    await eventually(erased, what="the new ward's erasure")
    source = f"{COMMANDS}/{sent.partition}/{sent.offset}"

    def letters(records: list[Any]) -> dict[str, dict[str, str]]:
        found = {}
        for record in records:
            headers = {k: v.decode() for k, v in record.headers}
            found[headers.get("dlq_source", "")] = headers
        return found

    records = await read_topic(
        running_stack.kafka_bootstrap, DLQ, until=lambda rs: source in letters(rs)
    )
    assert letters(records)[source]["dlq_reason"] == "rejected_wrong_ward"
    assert await _redone_batches(running_stack) == redone_before
