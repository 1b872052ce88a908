"""The operator CLI (`chibo stream`, `chibo dlq`, `chibo lag`) against the real stack,
pointed at it the way an operator points it at a deployment: KAFKA_BOOTSTRAP_SERVERS and
DATABASE_URL."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from ops.cli import app
from ops.stack import Stack, free_port
from tests.integration.helpers import (
    eventually,
    fetch,
    inbound,
    read_topic,
    registered_ward,
    schedule_body,
    unique_ward,
    ward_auth,
)

COMMANDS = "chibo.commands.v1"
DLQ = "chibo.commands.dlq.v1"


def _env(stack: Stack) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "DATABASE_URL": stack.database_url,
        "COLUMNS": "200",
    }


def chibo(stack: Stack, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env or _env(stack))


async def _produce(
    stack: Stack, topic: str, value: bytes, key: str, headers: list[tuple[str, bytes]] | None = None
) -> tuple[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
        return meta.partition, meta.offset
    finally:
        await producer.stop()


async def _events_of(stack: Stack, ward: str) -> list:
    return await fetch(
        stack.database_url,
        "select stream_id, stream_version, source from meetings.events"
        " where ward_id = $1 and stream_id like 'meeting-%'",  # not the cell it registered
        ward,
    )


def _dlq_json(stack: Stack, *args: str) -> dict[str, Any]:
    result = chibo(stack, "dlq", "list", "--json", "--limit", "0", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_stream_show_prints_a_meeting_scheduled_over_http(running_stack: Stack) -> None:
    ward = await registered_ward(running_stack)
    body = schedule_body(ward, location="Nhà văn hóa khu phố 3")
    async with httpx.AsyncClient(base_url=running_stack.service_url("meetings")) as client:
        response = await client.post(
            "/v1/meetings", json=body, headers=ward_auth(running_stack, ward)
        )
    assert response.status_code == 201, response.text
    stream_id = response.json()["stream_id"]

    shown = chibo(running_stack, "stream", "show", stream_id)
    assert shown.exit_code == 0, shown.output
    assert "MeetingScheduled" in shown.stdout
    assert "Nhà văn hóa khu phố 3" in shown.stdout  # Vietnamese intact
    assert "Quán triệt nghị quyết" in shown.stdout
    assert "+07:00" in shown.stdout  # displayed in Asia/Ho_Chi_Minh
    assert f"ward_official:test.{ward}" in shown.stdout

    as_json = json.loads(chibo(running_stack, "stream", "show", stream_id, "--json").stdout)
    [event] = as_json["events"]
    assert event["stream_version"] == 1
    assert event["event_type"] == "MeetingScheduled"
    assert event["payload"]["meeting_id"] == body["meeting_id"]
    assert event["payload"]["location"] == "Nhà văn hóa khu phố 3"
    assert event["occurred_at"].endswith("+07:00")

    listed = json.loads(chibo(running_stack, "stream", "list", "--ward", ward, "--json").stdout)
    assert [(s["stream_id"], s["version"]) for s in listed["streams"]] == [
        (f"cell-{body['cell_id']}", 1),
        (stream_id, 1),
    ]

    missing = chibo(running_stack, "stream", "show", "meeting-does-not-exist")
    assert missing.exit_code == 3
    assert "no stream 'meeting-does-not-exist'" in missing.output
    assert chibo(running_stack, "stream", "list", "--ward", unique_ward()).exit_code == 3


async def test_dlq_list_shows_a_poison_record(running_stack: Stack) -> None:
    ward = unique_ward()
    partition, offset = await _produce(running_stack, COMMANDS, b"\xff\xfe not json", ward)
    source = f"{COMMANDS}/{partition}/{offset}"

    async def listed() -> dict[str, Any] | None:
        found = [r for r in _dlq_json(running_stack)["records"] if r["source"] == source]
        return found[0] if found else None

    record = await eventually(listed, what="the poison record in `dlq list`")
    assert record["reason"] == "malformed_envelope"
    assert record["key"] == ward
    assert record["size"] == len(b"\xff\xfe not json")
    assert record["dlq_position"].startswith(f"{DLQ}/")

    only = _dlq_json(running_stack, "--reason", "malformed_envelope")
    assert only["by_reason"].keys() == {"malformed_envelope"}
    assert only["matching"] >= 1

    table = chibo(running_stack, "dlq", "list", "--reason", "malformed_envelope")
    assert table.exit_code == 0, table.output
    assert "malformed_envelope" in table.stdout
    assert "by reason" in table.stdout


async def test_redrive_carries_out_a_dead_lettered_command_once(running_stack: Stack) -> None:
    # A valid command dead-lettered while a rule was wrong (here: put on the DLQ directly,
    # as the meetings service would have, with its headers).
    ward = await registered_ward(running_stack)
    command = inbound(schedule_body(ward))
    partition, offset = await _produce(
        running_stack,
        DLQ,
        json.dumps(command, ensure_ascii=False).encode(),
        ward,
        headers=[
            ("dlq_reason", b"unauthorised_source"),
            ("dlq_detail", b"source 'meeting-app' is not allow-listed"),
            ("dlq_source", f"{COMMANDS}/0/999999".encode()),
            ("dlq_at", b"2026-01-05T01:00:00+00:00"),
            ("dlq_message_id", command["message_id"].encode()),
        ],
    )
    position = f"{DLQ}/{partition}/{offset}"

    dry = chibo(running_stack, "dlq", "redrive", "--source", position, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would be re-sent" in dry.stdout
    assert await _events_of(running_stack, ward) == []

    first = chibo(running_stack, "dlq", "redrive", "--source", position, "--yes")
    assert first.exit_code == 0, first.output
    assert "re-sent 1 record(s) to chibo.commands.v1" in first.stdout

    async def appended() -> list | None:
        return await _events_of(running_stack, ward) or None

    [event] = await eventually(appended, what="the re-driven command's event")
    assert event["source"] == "meeting-app"

    # Again: the same message id, so no second effect (and no new DLQ record for it).
    again = chibo(running_stack, "dlq", "redrive", "--source", f"{partition}/{offset}", "--yes")
    assert again.exit_code == 0, again.output
    marker = inbound(schedule_body(ward))  # a later command on the same partition
    await _produce(running_stack, COMMANDS, json.dumps(marker).encode(), ward)

    async def marker_appended() -> list | None:
        events = await _events_of(running_stack, ward)
        return events if len(events) >= 2 else None

    events = await eventually(marker_appended, what="the command after the second re-drive")
    assert len(events) == 2  # the re-driven command once, and the marker
    same_id = [
        r["dlq_position"]
        for r in _dlq_json(running_stack)["records"]
        if r["message_id"] == command["message_id"]
    ]
    assert same_id == [position]  # only the record we re-drove: neither re-drive was refused


async def test_redrive_of_a_copy_cut_short_sends_the_whole_original(running_stack: Stack) -> None:
    """A dead letter cut short (dlq_truncated) holds only the start of its record: the
    redrive sends the whole record, read from its dlq_source, not the cut bytes; and
    sends nothing when the original is no longer there."""
    ward = await registered_ward(running_stack)
    whole = json.dumps(inbound(schedule_body(ward)), ensure_ascii=False).encode()
    origin = "{}/{}/{}".format(COMMANDS, *await _produce(running_stack, COMMANDS, whole, ward))

    async def cut_copy(source: str) -> str:
        partition, offset = await _produce(
            running_stack,
            DLQ,
            whole[:40],
            ward,
            headers=[
                ("dlq_reason", b"unauthorised_source"),
                ("dlq_detail", b"source 'meeting-app' is not allow-listed"),
                ("dlq_source", source.encode()),
                ("dlq_at", b"2026-01-05T01:00:00+00:00"),
                ("dlq_truncated", b"true"),
                ("dlq_original_bytes", str(len(whole)).encode()),
            ],
        )
        return f"{DLQ}/{partition}/{offset}"

    gone = await cut_copy(f"{COMMANDS}/0/99999999")
    refused = chibo(running_stack, "dlq", "redrive", "--source", gone, "--yes")
    assert refused.exit_code == 3, refused.output
    assert f"not at its dlq_source: {gone}; nothing was re-sent" in refused.output

    position = await cut_copy(origin)
    redriven = chibo(running_stack, "dlq", "redrive", "--source", position, "--yes")
    assert redriven.exit_code == 0, redriven.output
    assert "re-sent 1 record(s) to chibo.commands.v1" in redriven.stdout

    def sent_from(records: list[Any], dlq_position: str) -> list[bytes]:
        return [
            r.value for r in records if ("redriven_from", dlq_position.encode()) in list(r.headers)
        ]

    records = await read_topic(
        running_stack.kafka_bootstrap, COMMANDS, lambda rs: bool(sent_from(rs, position))
    )
    assert sent_from(records, position) == [whole]
    assert sent_from(records, gone) == []


async def test_redrive_needs_a_selection_and_a_known_record(running_stack: Stack) -> None:
    assert chibo(running_stack, "dlq", "redrive", "--yes").exit_code == 2
    assert chibo(running_stack, "dlq", "redrive", "--source", "nonsense").exit_code == 2
    unknown = chibo(running_stack, "dlq", "redrive", "--source", f"{DLQ}/0/99999999", "--yes")
    assert unknown.exit_code == 3
    assert "not in chibo.commands.dlq.v1" in unknown.output


async def test_lag_reports_groups_relay_and_dlqs(running_stack: Stack) -> None:
    result = chibo(running_stack, "lag", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    groups = {g["group"]: g for g in report["consumer_groups"]}
    assert groups.keys() == {"chibo-meetings-intake", "chibo-reports", "chibo-notifications"}
    assert {p["topic"] for p in groups["chibo-reports"]["partitions"]} == {"chibo.events.v1"}
    assert len(groups["chibo-meetings-intake"]["partitions"]) == 6
    [relay] = report["relay"]
    assert relay["relay"] == "kafka-events"
    assert relay["pending_events"] >= 0
    assert {d["topic"] for d in report["dlq"]} == {"chibo.commands.dlq.v1", "chibo.events.dlq.v1"}

    table = chibo(running_stack, "lag")
    assert table.exit_code == 0, table.output
    for name in ("chibo-meetings-intake", "chibo-reports", "chibo-notifications", "relay"):
        assert name in table.stdout


def test_unreachable_kafka_exits_3_quickly(stack: Stack) -> None:
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = chibo(stack, "lag", env={**_env(stack), "KAFKA_BOOTSTRAP_SERVERS": closed})
    assert result.exit_code == 3, result.output
    assert time.monotonic() - started < 15
    assert "Kafka is unreachable at" in result.output
    assert closed in result.output

    listed = chibo(stack, "dlq", "list", env={**_env(stack), "KAFKA_BOOTSTRAP_SERVERS": closed})
    assert listed.exit_code == 3, listed.output
    assert closed in listed.output


def test_unreachable_postgres_exits_3(stack: Stack) -> None:
    closed = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/chibo"
    result = chibo(stack, "stream", "show", "anything", env={**_env(stack), "DATABASE_URL": closed})
    assert result.exit_code == 3, result.output
    assert "PostgreSQL is unreachable at" in result.output
    assert "secret" not in result.output  # the password is not printed
