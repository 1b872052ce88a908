"""The walking skeleton on the real stack: HTTP command → Postgres event store → relay →
Kafka → reports view and an e-mail through a real SMTP server."""

from __future__ import annotations

import json
import uuid

import httpx
from aiokafka import AIOKafkaConsumer

from ops.stack import Stack
from tests.integration.helpers import (
    daytime,
    eventually,
    fetch,
    mails_to,
    registered_ward,
    schedule_body,
    unique_ward,
    ward_auth,
)

EVENTS_TOPIC = "chibo.events.v1"


async def _schedule(stack: Stack, body: dict, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.service_url("meetings")) as client:
        auth = ward_auth(stack, body["ward_id"])
        return await client.post("/v1/meetings", json=body, headers={**auth, **headers})


async def _ward_view(stack: Stack, ward_id: str) -> dict:
    async with httpx.AsyncClient(base_url=stack.service_url("reports")) as client:
        response = await client.get(
            f"/v1/wards/{ward_id}/meetings", headers=ward_auth(stack, ward_id)
        )
        response.raise_for_status()
        return response.json()


async def test_command_reaches_event_store_report_view_and_mailbox(running_stack: Stack) -> None:
    with daytime(running_stack):  # quiet hours would hold the notice back
        ward = await registered_ward(running_stack)
        body = schedule_body(ward)
        response = await _schedule(running_stack, body)
        assert response.status_code == 201, response.text
        result = response.json()
        assert result["stream_version"] == 1 and not result["replayed"]

        rows = await fetch(
            running_stack.database_url,
            "select event_type, ward_id, stream_version, payload, actor, source, occurred_at,"
            " recorded_at from meetings.events where stream_id = $1",
            result["stream_id"],
        )
        assert len(rows) == 1
        row = rows[0]
        assert (row["event_type"], row["ward_id"], row["stream_version"]) == (
            "MeetingScheduled",
            ward,
            1,
        )
        assert json.loads(row["payload"])["cell_id"] == body["cell_id"]
        assert row["occurred_at"].tzinfo is not None and row["recorded_at"].tzinfo is not None

        async def view_has_meeting() -> dict | None:
            view = await _ward_view(running_stack, ward)
            return view if view["meetings_scheduled"] == 1 else None

        view = await eventually(view_has_meeting, what="meeting visible in the report view")
        meeting = view["meetings"][0]
        assert meeting["meeting_id"] == body["meeting_id"]
        assert meeting["scheduled_start"].endswith("+07:00")  # shown in Asia/Ho_Chi_Minh time
        assert meeting["agenda"] == body["agenda"]

        recipient = f"chi-bo.{body['cell_id']}@chibo.local"

        async def mail_arrived() -> list | None:
            return mails_to(running_stack.maildir, recipient) or None

        mails = await eventually(mail_arrived, what="e-mail in the SMTP sink")
        assert len(mails) == 1
        mail = mails[0]
        # The cell by its registered name (tests/integration/helpers.py), not its id.
        assert mail["Subject"].startswith("[Chi bộ Tổ dân phố 1] Thông báo lịch sinh hoạt")
        text = mail.get_body(("plain",)).get_content()
        html = mail.get_body(("html",)).get_content()
        assert "Kính gửi các đồng chí đảng viên" in text
        assert "lúc 19:30" in text
        assert "Kiến nghị của cử tri về đường giao thông" in text
        assert "<li>Quán triệt nghị quyết</li>" in html


async def test_relayed_event_is_read_back_with_a_plain_aiokafka_consumer(
    running_stack: Stack,
) -> None:
    ward = await registered_ward(running_stack)
    response = await _schedule(running_stack, schedule_body(ward))
    assert response.status_code == 201
    event_id = response.json()["event_ids"][0]

    # Not the services' code: a bare aiokafka consumer with no group, reading every partition.
    consumer = AIOKafkaConsumer(
        EVENTS_TOPIC,
        bootstrap_servers=running_stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:

        async def find_record():  # type: ignore[no-untyped-def]
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        found = json.loads(record.value).get("event_id") == event_id
                    except ValueError:
                        continue  # another test's deliberately unreadable record
                    if found:
                        return record
            return None

        record = await eventually(find_record, what="relayed event on the Kafka topic")
    finally:
        await consumer.stop()

    assert record.key == ward.encode()  # key = ward id keeps a ward's events in order
    envelope = json.loads(record.value)
    assert envelope["event_type"] == "MeetingScheduled"
    assert envelope["ward_id"] == ward
    assert envelope["stream_version"] == 1
    assert envelope["schema_version"] == 2  # MeetingScheduled v2 added the location
    assert envelope["payload"]["ward_id"] == ward
    headers = dict(record.headers)
    assert headers["event_type"] == b"MeetingScheduled"
    assert headers["event_id"] == event_id.encode()


async def test_idempotent_resend_and_duplicate_schedule(running_stack: Stack) -> None:
    body = schedule_body(await registered_ward(running_stack))
    key = f"test:{uuid.uuid4()}"
    first = await _schedule(running_stack, body, **{"Idempotency-Key": key})
    again = await _schedule(running_stack, body, **{"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.json()["event_ids"] == first.json()["event_ids"]
    assert again.json()["replayed"] is True

    other = await _schedule(running_stack, body)  # same meeting, no key: a rule violation
    assert other.status_code == 409
    assert other.json()["code"] == "already_exists"
    assert "đã được lên lịch" in other.json()["message_vi"]

    rows = await fetch(
        running_stack.database_url,
        "select count(*) as n from meetings.events where stream_id = $1",
        first.json()["stream_id"],
    )
    assert rows[0]["n"] == 1


async def test_malformed_commands_get_a_machine_readable_4xx(running_stack: Stack) -> None:
    auth = ward_auth(running_stack, "any-ward")
    async with httpx.AsyncClient(
        base_url=running_stack.service_url("meetings"), headers=auth
    ) as client:
        broken = await client.post(
            "/v1/meetings", content=b"{not json", headers={"content-type": "application/json"}
        )
        naive_time = await client.post(
            "/v1/meetings",
            json=schedule_body(unique_ward(), scheduled_start="2026-12-03T19:30:00"),
        )
        bad_id = await client.post(
            "/v1/meetings", json={**schedule_body(unique_ward()), "ward_id": "Phường 1; DROP"}
        )
    for response in (broken, naive_time, bad_id):
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_command"
        assert response.json()["message_vi"]
    assert naive_time.json()["details"]["errors"][0]["type"] == "timezone_aware"


async def test_every_service_exposes_health_readiness_and_metrics(running_stack: Stack) -> None:
    expected_series = {
        "meetings": ["chibo_commands_total", "chibo_relay_lag_events", "chibo_relay_is_leader"],
        "reports": ["faststream_received_messages_total", "chibo_consumed_events_total"],
        "notifications": ["chibo_notifications_sent_total", "chibo_notifications_pending"],
    }
    async with httpx.AsyncClient() as client:
        for name, series in expected_series.items():
            base = running_stack.service_url(name)
            assert (await client.get(f"{base}/health")).json() == {"status": "ok"}
            ready = await client.get(f"{base}/ready")
            assert ready.status_code == 200, ready.text
            assert set(ready.json()["checks"].values()) == {"ok"}
            metrics = (await client.get(f"{base}/metrics")).text
            for metric in series:
                assert metric in metrics, f"{name} does not expose {metric}"
