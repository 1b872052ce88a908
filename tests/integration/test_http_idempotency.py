"""The HTTP door's Idempotency-Key through the real service: each caller has its own keys,
a key names one command, and keys stored before they were per caller still answer the
caller who sent them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from ops.stack import Stack
from tests.integration.helpers import fetch, registered_ward, schedule_body, ward_auth


async def _post(
    stack: Stack, command: str, body: dict[str, Any], key: str | None, auth: dict[str, str]
) -> httpx.Response:
    headers = {**auth, **({"Idempotency-Key": key} if key else {})}
    async with httpx.AsyncClient(base_url=stack.service_url("meetings")) as client:
        return await client.post(f"/v1/commands/{command}", json=body, headers=headers)


async def _streams_of(stack: Stack, ward: str) -> list[str]:
    rows = await fetch(
        stack.database_url,
        "select stream_id from meetings.streams where ward_id = $1"
        " and stream_id like 'meeting-%' order by stream_id",
        ward,
    )
    return [r["stream_id"] for r in rows]


async def test_two_callers_with_the_same_key_each_get_their_own_command_carried_out(
    running_stack: Stack,
) -> None:
    """Ward B's official sends the key ward A's official used ("1", a local row id): B's
    meeting is scheduled, and B learns nothing of A's."""
    ward_a, ward_b = await registered_ward(running_stack), await registered_ward(running_stack)
    key = "1"
    body_a, body_b = schedule_body(ward_a), schedule_body(ward_b)
    a = await _post(running_stack, "ScheduleMeeting", body_a, key, ward_auth(running_stack, ward_a))
    b = await _post(running_stack, "ScheduleMeeting", body_b, key, ward_auth(running_stack, ward_b))

    assert a.status_code == b.status_code == 201, (a.text, b.text)
    assert a.json()["replayed"] is False and b.json()["replayed"] is False
    assert b.json()["stream_id"] == f"meeting-{body_b['meeting_id']}"
    assert set(b.json()["event_ids"]).isdisjoint(a.json()["event_ids"])
    assert await _streams_of(running_stack, ward_b) == [f"meeting-{body_b['meeting_id']}"]


async def test_a_key_sent_again_answers_the_same_command_and_refuses_another(
    running_stack: Stack,
) -> None:
    ward = await registered_ward(running_stack)
    auth = ward_auth(running_stack, ward)
    key = f"row-{uuid.uuid4().hex[:8]}"
    body = schedule_body(ward)
    first = await _post(running_stack, "ScheduleMeeting", body, key, auth)
    retry = await _post(running_stack, "ScheduleMeeting", body, key, auth)
    other_meeting = await _post(running_stack, "ScheduleMeeting", schedule_body(ward), key, auth)
    cancel = {
        "meeting_id": body["meeting_id"],
        "ward_id": ward,
        "cell_id": body["cell_id"],
        "reason": "Trùng lịch họp của phường",
    }
    other_type = await _post(running_stack, "CancelMeeting", cancel, key, auth)

    assert first.status_code == retry.status_code == 201, (first.text, retry.text)
    assert retry.json()["replayed"] is True
    assert retry.json()["event_ids"] == first.json()["event_ids"]
    for refused in (other_meeting, other_type):
        assert refused.status_code == 422, refused.text
        answer = refused.json()
        assert answer["code"] == "idempotency_key_reused"
        assert "đã được dùng cho một lệnh khác" in answer["message_vi"]
        assert answer["details"] == {
            "stream_id": first.json()["stream_id"],
            "command_type": "ScheduleMeeting",
        }
    # Neither refused command left anything: one meeting, scheduled and not cancelled.
    rows = await fetch(
        running_stack.database_url,
        "select stream_id, event_type from meetings.events"
        " where ward_id = $1 and stream_id like 'meeting-%'",
        ward,
    )
    assert [(r["stream_id"], r["event_type"]) for r in rows] == [
        (first.json()["stream_id"], "MeetingScheduled")
    ]


async def test_a_key_stored_before_keys_were_per_caller_answers_only_its_caller(
    running_stack: Stack,
) -> None:
    """A key the door stored as `http:<key>` (one namespace for everyone) keeps answering
    the retry of the caller whose events it names; for anyone else it does not exist."""
    ward_a, ward_b = await registered_ward(running_stack), await registered_ward(running_stack)
    auth_a = ward_auth(running_stack, ward_a)
    key = f"legacy-{uuid.uuid4().hex[:8]}"
    body_a = schedule_body(ward_a)
    sent = await _post(running_stack, "ScheduleMeeting", body_a, None, auth_a)
    assert sent.status_code == 201, sent.text
    # What the door stored for it before this change, had the key been sent.
    await fetch(
        running_stack.database_url,
        "insert into meetings.idempotency_keys"
        " (idempotency_key, stream_id, stream_version, event_count) values ($1, $2, 1, 1)",
        f"http:{key}",
        sent.json()["stream_id"],
    )

    retry = await _post(running_stack, "ScheduleMeeting", body_a, key, auth_a)
    body_b = schedule_body(ward_b)
    stranger = await _post(
        running_stack, "ScheduleMeeting", body_b, key, ward_auth(running_stack, ward_b)
    )
    reused = await _post(running_stack, "ScheduleMeeting", schedule_body(ward_a), key, auth_a)

    assert retry.status_code == 201 and retry.json()["replayed"] is True, retry.text
    assert retry.json()["event_ids"] == sent.json()["event_ids"]
    assert stranger.status_code == 201 and stranger.json()["replayed"] is False, stranger.text
    assert await _streams_of(running_stack, ward_b) == [f"meeting-{body_b['meeting_id']}"]
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
    assert await _streams_of(running_stack, ward_a) == [sent.json()["stream_id"]]
