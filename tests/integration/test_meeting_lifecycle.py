"""A cell's month on the real stack: the cell and its members, a meeting opened with the
first roll call, a resolution, the meeting closed with the second roll call."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx

from ops.stack import Stack
from shared.clock import LOCAL_TZ
from tests.integration.helpers import fetch, metric_value, unique_ward, ward_auth


async def test_a_meeting_from_schedule_to_close_through_http(running_stack: Stack) -> None:
    ward = unique_ward()
    cell = f"{ward}.to-01"
    meeting = f"{cell}.thang-11"
    ids = {"ward_id": ward, "cell_id": cell}
    start = (datetime.now(LOCAL_TZ) - timedelta(hours=3)).replace(microsecond=0)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("RegisterCell", {"name": "Chi bộ Tổ dân phố 1", "roll_calls": 2, **ids}),
        *(
            ("AdmitMember", {"member_id": f"{cell}.dv{n}", "full_name": name, **ids})
            for n, name in enumerate(["Nguyễn Văn An", "Trần Thị Bình", "Lê Văn Cường"], 1)
        ),
        (
            "ExemptMember",
            {"member_id": f"{cell}.dv3", "exempt_from": "2026-01-01", "reason": "Tuổi cao", **ids},
        ),
        (
            "ScheduleMeeting",
            {
                "meeting_id": meeting,
                "scheduled_start": start.isoformat(),
                "agenda": ["Nghị quyết"],
                **ids,
            },
        ),
        (
            "OpenMeeting",
            {
                "meeting_id": meeting,
                "opened_at": start.isoformat(),
                "roll_call": [
                    {"member_id": f"{cell}.dv1", "status": "present"},
                    {"member_id": f"{cell}.dv2", "status": "absent_excused", "reason": "Ốm"},
                ],
                "supervisor_present": True,
                **ids,
            },
        ),
        (
            "AdoptResolution",
            {
                "meeting_id": meeting,
                "resolution_id": "nq-1",
                "title": "Làm đường ngõ 5",
                "votes_for": 1,
                **ids,
            },
        ),
        (
            "CloseMeeting",
            {
                "meeting_id": meeting,
                "closed_at": (start + timedelta(minutes=95)).isoformat(),
                "second_roll_call": [
                    {"member_id": f"{cell}.dv1", "status": "present"},
                    {"member_id": f"{cell}.dv2", "status": "absent_excused", "reason": "Ốm"},
                ],
                "speakers": [f"{cell}.dv1"],
                **ids,
            },
        ),
    ]
    async with httpx.AsyncClient(
        base_url=running_stack.service_url("meetings"), headers=ward_auth(running_stack, ward)
    ) as client:
        for command_type, body in steps:
            response = await client.post(f"/v1/commands/{command_type}", json=body)
            assert response.status_code == 201, (command_type, response.text)
        stranger = await client.post(
            "/v1/commands/CloseMeeting",
            json={**steps[-1][1], "speakers": ["someone-else"]},
        )
    assert stranger.status_code == 409
    assert stranger.json()["code"] in ("already_closed", "speaker_not_present")

    rows = await fetch(
        running_stack.database_url,
        "select event_type, payload from meetings.events where ward_id = $1"
        " order by global_position",
        ward,
    )
    assert [r["event_type"] for r in rows] == [
        "CellRegistered",
        "MemberAdmitted",
        "MemberAdmitted",
        "MemberAdmitted",
        "MemberExempted",
        "MeetingScheduled",
        "MeetingOpened",
        "ResolutionAdopted",
        "MeetingClosed",
    ]
    held = await metric_value(
        running_stack, "meetings", "chibo_meetings_held_total", kind="regular"
    )
    assert held is not None and held >= 1
    opened = json.loads(rows[6]["payload"])
    assert [(e["member_id"][-3:], e["status"]) for e in opened["roll_call"]] == [
        ("dv1", "present"),
        ("dv2", "absent_excused"),
        ("dv3", "exempt"),  # listed although left out by the caller
    ]
