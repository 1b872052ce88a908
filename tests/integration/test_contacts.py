"""Contact details are correctable and erasable, and never in the immutable log."""

from __future__ import annotations

import httpx

from ops.stack import Stack
from tests.integration.helpers import fetch, unique_ward, ward_auth


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
