"""HTTP callers act only inside their token's scope."""

from __future__ import annotations

import json
from datetime import datetime

import httpx
import pytest

from ops.stack import Stack
from shared.clock import LOCAL_TZ
from tests.integration.helpers import (
    UnitLadder,
    fetch,
    registered_ward,
    schedule_body,
    unique_ward,
    ward_auth,
)


async def _post(stack: Stack, body: dict, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=stack.service_url("meetings")) as client:
        return await client.post("/v1/meetings", json=body, headers=headers)


async def test_missing_or_forged_tokens_are_401(running_stack: Stack) -> None:
    body = schedule_body(unique_ward())
    missing = await _post(running_stack, body, None)
    forged = await _post(running_stack, body, "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl")
    for response in (missing, forged):
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"
        assert "xác thực" in response.json()["message_vi"]


@pytest.mark.parametrize(
    ("role", "level", "unit_of", "status", "code"),
    [
        ("ward_official", "ward", "same_ward", 201, None),
        ("ward_official", "ward", "other_ward", 403, "forbidden_scope"),
        ("cell_secretary", "cell", "same_cell", 201, None),
        ("cell_secretary", "cell", "other_cell", 403, "forbidden_scope"),
        ("member", "ward", "same_ward", 403, "forbidden_role"),
        ("district_official", "district", "parent_district", 201, None),
        ("district_official", "district", "other_district", 403, "forbidden_scope"),
        ("province_official", "province", "grandparent_province", 201, None),
    ],
)
async def test_tokens_act_only_inside_their_scope(
    running_stack: Stack, role: str, level: str, unit_of: str, status: int, code: str | None
) -> None:
    ward = await registered_ward(running_stack)
    district, province = f"{ward}-district", f"{ward}-province"
    conn_url = running_stack.database_url
    await fetch(
        conn_url,
        "insert into meetings.org_units (unit_id, parent_id, level, name) values"
        " ($1, null, 'province', 'Tỉnh thử'), ($2, $1, 'district', 'Huyện thử'),"
        " ($3, $2, 'ward', 'Phường thử')",
        province,
        district,
        ward,
    )
    body = schedule_body(ward)
    unit = {
        "same_ward": ward,
        "other_ward": unique_ward(),
        "same_cell": body["cell_id"],
        "other_cell": f"{ward}.to-99",
        "parent_district": district,
        "other_district": "some-other-district",
        "grandparent_province": province,
    }[unit_of]
    token = running_stack.issue_token(role, level, unit, "test-official")
    response = await _post(running_stack, body, token)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["code"] == code
    stored = await fetch(
        conn_url,
        "select actor from meetings.events where ward_id = $1 and stream_id like 'meeting-%'",
        ward,
    )
    assert [r["actor"] for r in stored] == ([f"{role}:test-official"] if status == 201 else [])


async def test_tokens_never_reach_the_logs(running_stack: Stack) -> None:
    ward = await registered_ward(running_stack)
    token = running_stack.issue_token("ward_official", "ward", ward, "log-check")
    assert (await _post(running_stack, schedule_body(ward), token)).status_code == 201
    assert (await _post(running_stack, schedule_body(ward), token + "x")).status_code == 401
    for name in ("meetings", "reports", "notifications"):
        log_text = running_stack.log_path(name).read_text(encoding="utf-8", errors="replace")
        assert token.split(".")[2] not in log_text, f"{name} logged a token"


async def test_openapi_documents_the_command_and_its_security(running_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=running_stack.service_url("meetings")) as client:
        spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/meetings"]["post"]
    assert {"401", "403", "409", "422"} <= operation["responses"].keys()
    assert operation["security"] == [{"HTTPBearer": []}]
    assert "ScheduleMeeting" in spec["components"]["schemas"]


async def test_a_ward_cannot_act_for_another_wards_cell_nor_learn_its_roll(
    running_stack: Stack,
) -> None:
    """A ward official's token covers the commands naming their ward; the cell named must
    be that ward's too, or meetings and petitions of another ward's cell get recorded."""
    own, other = await registered_ward(running_stack), await registered_ward(running_stack)
    theirs = f"{other}.to-01"
    member = {"member_id": f"{theirs}.dv1", "full_name": "Nguyễn Văn An"}
    headers = ward_auth(running_stack, own)
    other_headers = ward_auth(running_stack, other)
    start = datetime.now(LOCAL_TZ).replace(microsecond=0)
    async with httpx.AsyncClient(base_url=running_stack.service_url("meetings")) as client:

        async def send(command_type: str, body: dict, auth: dict) -> httpx.Response:
            return await client.post(f"/v1/commands/{command_type}", json=body, headers=auth)

        admitted = await send("AdmitMember", {**member, "cell_id": theirs, "ward_id": other},
                              other_headers)  # fmt: skip
        assert admitted.status_code == 201, admitted.text
        # Their own meeting, which the other ward schedules for its own cell.
        mine = schedule_body(other, scheduled_start=start.isoformat())
        assert (await send("ScheduleMeeting", mine, other_headers)).status_code == 201

        foreign = schedule_body(own, scheduled_start=start.isoformat(), cell_id=theirs)
        unknown = schedule_body(own, cell_id=f"{own}.to-99")
        petition = {
            "petition_id": f"{own}.kn-1", "ward_id": own, "cell_id": theirs,
            "category": "roads_infrastructure", "place": "Ngõ 5", "raised_by": "Ông Hùng",
            "text": "Đường ngõ xuống cấp.",
        }  # fmt: skip
        opening = {"meeting_id": mine["meeting_id"], "ward_id": own, "cell_id": theirs,
                   "opened_at": start.isoformat(), "roll_call": []}  # fmt: skip
        answers = {
            "schedule_foreign": await send("ScheduleMeeting", foreign, headers),
            "schedule_unknown": await send("ScheduleMeeting", unknown, headers),
            "raise_foreign": await send("RaisePetition", petition, headers),
            "open_foreign": await send("OpenMeeting", opening, headers),
        }
    codes = {name: (r.status_code, r.json()["code"]) for name, r in answers.items()}
    assert codes == {
        "schedule_foreign": (409, "wrong_ward"),
        "schedule_unknown": (409, "unknown_cell"),
        "raise_foreign": (409, "wrong_ward"),
        "open_foreign": (409, "wrong_cell"),  # the meeting is the other ward's
    }
    for response in answers.values():
        assert member["member_id"] not in response.text  # their roll is not disclosed
    stored = await fetch(
        running_stack.database_url, "select stream_id from meetings.events where ward_id = $1", own
    )
    assert [r["stream_id"] for r in stored] == [f"cell-{own}.to-01"]  # only its own cell


async def test_a_petition_is_acted_on_by_the_unit_holding_it_or_one_above(
    running_stack: Stack,
) -> None:
    """A cell resolves what it can: its secretary acts on what the cell holds (the petition
    commands name no cell, so the holder decides). Once a petition went up, the unit
    holding it answers for it (Quy định 11): the ward cannot close what the district
    holds, the district can."""
    org = UnitLadder(running_stack)
    await org.register()
    cells = [f"{org.ward}.to-0{n}" for n in (1, 2)]
    for cell in cells:
        await org.send("RegisterCell", {"cell_id": cell, "ward_id": org.ward, "name": cell})
    tokens = {
        "secretary": running_stack.issue_token("cell_secretary", "cell", cells[0], "bt-to-01"),
        "other_secretary": running_stack.issue_token("cell_secretary", "cell", cells[1], "bt"),
        "ward": running_stack.issue_token("ward_official", "ward", org.ward, "phuong"),
        "district": running_stack.issue_token("district_official", "district", org.district, "h"),
    }
    async with httpx.AsyncClient(base_url=running_stack.service_url("meetings")) as client:

        async def send(command_type: str, who: str, petition_id: str, **body: str) -> int:
            response = await client.post(
                f"/v1/commands/{command_type}",
                json={"petition_id": petition_id, "ward_id": org.ward, **body},
                headers={"Authorization": f"Bearer {tokens[who]}"},
            )
            if response.status_code == 403:
                assert response.json()["code"] == "forbidden_scope", response.text
                assert "không có quyền" in response.json()["message_vi"]
            return response.status_code

        async def raised(n: int) -> str:
            petition_id = f"{org.ward}.kn-{n}"
            raising = {
                "cell_id": cells[0],
                "category": "roads_infrastructure",
                "place": f"Ngõ {n}",
                "raised_by": "Ông Hùng",
                "text": "Đường hỏng.",
            }
            assert await send("RaisePetition", "secretary", petition_id, **raising) == 201
            return petition_id

        at_cell = await raised(1)
        assert await send("AcknowledgePetition", "other_secretary", at_cell) == 403
        assert await send("AcknowledgePetition", "secretary", at_cell) == 201
        assert await send("ResolvePetition", "secretary", at_cell, response="Đã sửa.") == 201
        assert await send("ReopenPetition", "secretary", at_cell, reason="Chưa xong.") == 201

        climbing = await raised(2)
        assert await send("EscalatePetition", "secretary", climbing, note="Vượt thẩm quyền") == 201
        assert await send("ResolvePetition", "secretary", climbing, response="x") == 403
        assert await send("AcknowledgePetition", "ward", climbing) == 201
        assert await send("EscalatePetition", "ward", climbing, note="Cần huyện") == 201
        for command, body in (
            ("AcknowledgePetition", {}),
            ("ResolvePetition", {"response": "Phường đã trả lời."}),
            ("EscalatePetition", {"note": "Lên tỉnh"}),
        ):
            assert await send(command, "ward", climbing, **body) == 403, command
        assert await send("ResolvePetition", "district", climbing, response="Huyện xử lý.") == 201
    stored = await fetch(
        running_stack.database_url,
        "select event_type, actor, payload from meetings.events where stream_id = $1"
        " order by stream_version",
        f"petition-{climbing}",
    )
    assert [(r["event_type"], r["actor"]) for r in stored] == [
        ("PetitionRaised", "cell_secretary:bt-to-01"),
        ("PetitionEscalated", "cell_secretary:bt-to-01"),
        ("PetitionAcknowledged", "ward_official:phuong"),
        ("PetitionEscalated", "ward_official:phuong"),
        ("PetitionResolved", "district_official:h"),
    ]
    escalated = [json.loads(r["payload"]) for r in stored if r["event_type"] == "PetitionEscalated"]
    assert [(e["to_level"], e["to_holder_id"]) for e in escalated] == [
        ("ward", org.ward),
        ("district", org.district),
    ]
