"""Property tests: arbitrary and malformed input at both doors never yields a 5xx,
a crash or a stalled partition."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.stack import Stack
from tests.integration.helpers import (
    eventually,
    fetch,
    inbound,
    registered_ward,
    schedule_body,
    ward_auth,
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["meeting_id", "ward_id", "cell_id", "kind", "scheduled_start", "agenda", "location", "x"]
)


@st.composite
def mutated_body(draw: st.DrawFn) -> dict[str, Any]:
    body = schedule_body(draw(st.sampled_from(["ward-fuzz", "Phường 1", "", "a" * 80])))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(field_names)
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    return body


def test_http_door_never_answers_5xx(running_stack: Stack) -> None:
    token = running_stack.issue_token("ward_official", "ward", "ward-fuzz", "fuzz")
    client = httpx.Client(base_url=running_stack.service_url("meetings"), timeout=10)

    @FUZZ
    @given(
        body=st.one_of(mutated_body(), json_values),
        raw=st.none() | st.binary(max_size=200),
        key=st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=250),
        authorised=st.booleans(),
    )
    def door(body: Any, raw: bytes | None, key: str | None, authorised: bool) -> None:
        headers = {"content-type": "application/json"}
        if authorised:
            headers["Authorization"] = f"Bearer {token}"
        if key is not None:
            headers["Idempotency-Key"] = key
        content = raw if raw is not None else json.dumps(body).encode()
        response = client.post("/v1/meetings", content=content, headers=headers)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            assert response.json()["code"]

    try:
        door()
    finally:
        client.close()


@st.composite
def hostile_record(draw: st.DrawFn) -> tuple[bytes, bytes | None, str | None]:
    """(value, key, idempotency key if it could be accepted)."""
    kind = draw(st.sampled_from(["bytes", "json", "envelope"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), draw(st.none() | st.binary(max_size=20)), None
    if kind == "json":
        return json.dumps(draw(json_values)).encode(), b"ward-fuzz", None
    body = draw(mutated_body())
    envelope = inbound(
        body,
        source=draw(st.sampled_from(["meeting-app", "checkin-kiosk", "stranger", "Bad Source"])),
    )
    for name in draw(st.lists(st.sampled_from(list(envelope)), max_size=2)):
        envelope[name] = draw(json_values)
    key = str(body.get("ward_id", "ward-fuzz")).encode(errors="replace")
    idem = f"kafka:{envelope.get('source')}:{envelope.get('message_id')}"
    return json.dumps(envelope).encode(), key, idem


def test_kafka_door_accounts_for_every_record_and_keeps_flowing(running_stack: Stack) -> None:
    generated: list[tuple[bytes, bytes | None, str | None]] = []

    @FUZZ
    @given(record=hostile_record())
    def collect(record: tuple[bytes, bytes | None, str | None]) -> None:
        generated.append(record)

    collect()
    asyncio.run(_publish_and_account(running_stack, generated))


async def _publish_and_account(
    stack: Stack, generated: list[tuple[bytes, bytes | None, str | None]]
) -> None:
    ward = await registered_ward(stack)
    sentinel = inbound(schedule_body(ward))
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    sent: dict[str, str | None] = {}
    try:
        for value, key, idem in generated:
            meta = await producer.send_and_wait("chibo.commands.v1", value, key=key)
            sent[f"chibo.commands.v1/{meta.partition}/{meta.offset}"] = idem
        await producer.send_and_wait(
            "chibo.commands.v1", json.dumps(sentinel).encode(), key=ward.encode()
        )
    finally:
        await producer.stop()

    # The valid command published after all the hostile ones is processed.
    async def sentinel_appended() -> list | None:
        return (
            await fetch(
                stack.database_url,
                "select 1 from meetings.events where ward_id = $1 and stream_id like 'meeting-%'",
                ward,
            )
            or None
        )

    await eventually(sentinel_appended, timeout_s=60, what="the sentinel after the fuzz")

    # Every hostile record was either accepted (its key is recorded) or dead-lettered.
    # Partitions flow independently, so both are read again until all are accounted for.
    dead_lettered: set[str] = set()
    keys = [k for k in sent.values() if k]
    consumer = AIOKafkaConsumer(
        "chibo.commands.dlq.v1",
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:

        async def unaccounted() -> set[str]:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                for record in batch:
                    dead_lettered.add(dict(record.headers).get("dlq_source", b"").decode())
            accepted = {
                r["idempotency_key"]
                for r in await fetch(
                    stack.database_url,
                    "select idempotency_key from meetings.idempotency_keys"
                    " where idempotency_key = any($1::text[])",
                    keys,
                )
            }
            return {
                source
                for source, idem in sent.items()
                if source not in dead_lettered and idem not in accepted
            }

        async def all_accounted_for() -> bool:
            return not await unaccounted()

        await eventually(all_accounted_for, timeout_s=60, what="every record accounted for")
    finally:
        await consumer.stop()

    async with httpx.AsyncClient() as client:
        ready = await client.get(f"{stack.service_url('meetings')}/ready")
    assert ready.status_code == 200


async def test_values_outside_the_contracts_years_get_a_4xx_with_the_reason(
    running_stack: Stack,
) -> None:
    """Each of these once passed the contract and then crashed the decision: a 500."""
    ward = await registered_ward(running_stack)
    far = "0001-01-01T06:00:00+07:00"
    commands = [
        ("IssueOrientation", {"orientation_id": f"{ward}.o", "ward_id": ward,
                              "month": "9999-12", "topics": ["x"]}, "month"),
        ("SubmitWardReport", {"ward_id": ward, "month": "0000-05", "submitted_by": "x"}, "month"),
        ("ScheduleMeeting", schedule_body(ward, scheduled_start=far), "scheduled_start"),
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=running_stack.service_url("meetings")) as client:
        for command_type, body, field in commands:
            response = await client.post(
                f"/v1/commands/{command_type}", json=body, headers=ward_auth(running_stack, ward)
            )
            assert response.status_code == 422, (command_type, response.text)
            answer = response.json()
            assert answer["code"] == "invalid_command" and answer["message_vi"]
            assert field in {str(p) for e in answer["details"]["errors"] for p in e["loc"]}
