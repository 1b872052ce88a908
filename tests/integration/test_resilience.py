"""The stack under trouble: the broker restarts mid-flow, and unreadable records arrive."""

from __future__ import annotations

import asyncio
import json

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ops.stack import SERVICES, Stack
from tests.integration.helpers import (
    daytime,
    eventually,
    fetch,
    mails_to,
    metric_value,
    registered_ward,
    schedule_body,
    ward_auth,
)

EVENTS_TOPIC = "chibo.events.v1"
EVENTS_DLQ_TOPIC = "chibo.events.dlq.v1"


async def test_broker_restart_mid_test_event_arrives_exactly_once(running_stack: Stack) -> None:
    with daytime(running_stack):  # quiet hours would hold the notice back
        stack = running_stack
        ward = await registered_ward(stack)
        body = schedule_body(ward)

        await asyncio.to_thread(stack.stop_kafka)
        try:
            async with httpx.AsyncClient(base_url=stack.service_url("meetings")) as client:
                # The write side needs only Postgres: the command is accepted with Kafka down.
                response = await client.post(
                    "/v1/meetings", json=body, headers=ward_auth(stack, ward)
                )
            assert response.status_code == 201, response.text
            stream_id = response.json()["stream_id"]

            async def relay_sees_backlog() -> float | None:
                lag = await metric_value(stack, "meetings", "chibo_relay_lag_events")
                return lag if lag and lag >= 1 else None

            await eventually(relay_sees_backlog, what="relay lag metric showing the stuck event")
        finally:
            await asyncio.to_thread(stack.start_kafka)

        async def in_view_once() -> list | None:
            async with httpx.AsyncClient(base_url=stack.service_url("reports")) as client:
                view = (
                    await client.get(f"/v1/wards/{ward}/meetings", headers=ward_auth(stack, ward))
                ).json()
            return view["meetings"] or None

        meetings = await eventually(
            in_view_once, timeout_s=90, what="meeting in view after restart"
        )
        assert [m["meeting_id"] for m in meetings] == [body["meeting_id"]]

        applied = await fetch(
            stack.database_url,
            "select version from reports.applied_streams where stream_id = $1",
            stream_id,
        )
        assert [r["version"] for r in applied] == [1]
        rows = await fetch(
            stack.database_url,
            "select count(*) as n from reports.meetings where ward_id = $1",
            ward,
        )
        assert rows[0]["n"] == 1

        recipient = f"chi-bo.{body['cell_id']}@chibo.local"

        async def mailed() -> list | None:
            return mails_to(stack.maildir, recipient) or None

        assert len(await eventually(mailed, timeout_s=60, what="e-mail after restart")) == 1

        # Every service reconnects by itself and reports ready again.
        async def all_ready() -> bool:
            async with httpx.AsyncClient() as client:
                codes = [
                    (await client.get(f"{stack.service_url(name)}/ready")).status_code
                    for name in SERVICES
                ]
            return all(code == 200 for code in codes)

        await eventually(all_ready, timeout_s=60, what="all services ready after broker restart")


async def test_unreadable_event_goes_to_dlq_and_the_partition_keeps_flowing(
    running_stack: Stack,
) -> None:
    stack = running_stack
    ward = await registered_ward(stack)
    poison = b'{"event_id": "not-a-uuid", "this is": "not an envelope"'
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        # Same key as the valid event below, so both land in one partition, poison first.
        await producer.send_and_wait(EVENTS_TOPIC, poison, key=ward.encode())
    finally:
        await producer.stop()

    body = schedule_body(ward)
    async with httpx.AsyncClient(base_url=stack.service_url("meetings")) as client:
        response = await client.post("/v1/meetings", json=body, headers=ward_auth(stack, ward))
        assert response.status_code == 201

    async def in_view() -> list | None:
        async with httpx.AsyncClient(base_url=stack.service_url("reports")) as client:
            response = await client.get(
                f"/v1/wards/{ward}/meetings", headers=ward_auth(stack, ward)
            )
            return response.json()["meetings"] or None

    await eventually(in_view, what="valid event after the poison one")

    consumer = AIOKafkaConsumer(
        EVENTS_DLQ_TOPIC,
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    seen: dict[str, dict[str, str]] = {}
    try:

        async def both_consumers_dead_lettered() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if record.value == poison:
                        headers = {k: v.decode() for k, v in record.headers}
                        seen[headers["dlq_consumer"]] = headers
            return {"reports", "notifications"} <= seen.keys()

        await eventually(both_consumers_dead_lettered, what="DLQ records from both consumers")
    finally:
        await consumer.stop()
    for headers in seen.values():
        assert headers["dlq_reason"] == "malformed_envelope"
        assert headers["dlq_source"].startswith(f"{EVENTS_TOPIC}/")
        assert json.loads(json.dumps(headers["dlq_detail"]))  # a readable reason is attached
