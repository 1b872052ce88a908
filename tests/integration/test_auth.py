"""HTTP callers act only inside their token's scope."""

from __future__ import annotations

import httpx
import pytest

from ops.stack import Stack
from tests.integration.helpers import fetch, schedule_body, unique_ward


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
    ward = unique_ward()
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
    stored = await fetch(conn_url, "select actor from meetings.events where ward_id = $1", ward)
    assert [r["actor"] for r in stored] == ([f"{role}:test-official"] if status == 201 else [])


async def test_tokens_never_reach_the_logs(running_stack: Stack) -> None:
    ward = unique_ward()
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
