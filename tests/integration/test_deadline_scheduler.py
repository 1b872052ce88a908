"""The deadline scheduler on the real stack, with the meetings service's clock moved
forward through its offset file (no test waits for real days to pass)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from ops.stack import Stack, free_port
from services.meetings.bootstrap import MeetingsSettings
from services.meetings.domain.petition import PetitionPolicy
from services.meetings.service_layer.deadline_scheduler import units_off_the_ladder
from tests.integration.helpers import UnitLadder, eventually, fetch, metric_at, metric_value

DAY = 86_400.0


@pytest.fixture()
def clock(running_stack: Stack) -> Iterator[Any]:
    """Moves the services' clock forward; puts it back after the test."""
    path = running_stack.settings.clock_offset_file
    assert path is not None

    def move(days: float) -> None:
        current = float(path.read_text() or 0) if path.exists() else 0.0
        path.write_text(str(current + days * DAY))

    yield move
    path.write_text("0")


class Ward(UnitLadder):
    """A ward in a district in a province, with a token that may act on all of it; with
    ``two_tier`` the ward right under the province, no district (since 1 July 2025)."""

    def __init__(self, stack: Stack, two_tier: bool = False) -> None:
        super().__init__(stack)
        self.two_tier = two_tier

    async def register(self) -> None:
        if not self.two_tier:
            return await super().register()
        for unit, parent, level, name in (
            (self.province, None, "province", "Đảng bộ tỉnh Thanh Hóa"),
            (self.ward, self.province, "ward", "Đảng bộ phường thử"),
        ):
            await self.send(
                "RegisterUnit",
                {"unit_id": unit, "parent_id": parent, "level": level, "name": name},
            )

    async def raise_petition(self, n: int = 1, url: str | None = None) -> str:
        petition_id = f"{self.ward}.kn-{n}-{uuid.uuid4().hex[:6]}"
        await self.send(
            "RaisePetition",
            {
                "petition_id": petition_id,
                "ward_id": self.ward,
                "cell_id": f"{self.ward}.to-01",
                "category": "roads_infrastructure",
                "place": f"Ngõ {n}, đường Lê Lai",
                "raised_by": "Ông Trần Văn Hùng",
                "text": "Đường ngõ xuống cấp, đề nghị sửa chữa.",
            },
            url,
        )
        return petition_id

    async def resolve(self, petition_id: str) -> None:
        await self.send(
            "ResolvePetition",
            {"petition_id": petition_id, "ward_id": self.ward, "response": "Đã sửa xong."},
        )


async def new_ward(stack: Stack, two_tier: bool = False) -> Ward:
    ward = Ward(stack, two_tier)
    await ward.register()
    cell = {"cell_id": f"{ward.ward}.to-01", "ward_id": ward.ward, "name": "Chi bộ Tổ dân phố 1"}
    await ward.send("RegisterCell", cell)  # the cell its petitions are raised in
    return ward


async def petition_events(stack: Stack, petition_id: str) -> list[tuple[str, dict]]:
    rows = await fetch(
        stack.database_url,
        "select event_type, payload from meetings.events where stream_id = $1"
        " order by stream_version",
        f"petition-{petition_id}",
    )
    return [(r["event_type"], json.loads(r["payload"])) for r in rows]


async def escalations(stack: Stack, petition_id: str, at_least: int) -> list[dict]:
    async def enough() -> list[dict] | None:
        found = [
            p for t, p in await petition_events(stack, petition_id) if t == "PetitionEscalated"
        ]
        return found if len(found) >= at_least else None

    return await eventually(enough, timeout_s=30, what=f"{at_least} escalation(s)")


async def scheduler_runs(url: str) -> float:
    runs = await metric_at(url, "chibo_deadline_scheduler_runs_total")
    assert runs is not None
    return runs


async def test_a_petition_escalates_twice_on_a_moved_clock(running_stack: Stack, clock) -> None:  # type: ignore[no-untyped-def]
    ward = await new_ward(running_stack)
    petition = await ward.raise_petition()
    clock(8)  # past the cell's 7 days
    first = await escalations(running_stack, petition, 1)
    assert (first[0]["to_level"], first[0]["to_holder_id"]) == ("ward", ward.ward)
    clock(16)  # past the ward's 15 days
    both = await escalations(running_stack, petition, 2)
    assert (both[1]["to_level"], both[1]["to_holder_id"]) == ("district", ward.district)
    assert [e["reason"] for e in both] == ["deadline", "deadline"]

    async def counted_at_district() -> bool:
        open_there = await metric_value(
            running_stack, "meetings", "chibo_petitions_open", level="district"
        )
        return open_there is not None and open_there >= 1

    await eventually(counted_at_district, timeout_s=30, what="open petitions by level")
    assert both[1]["missed_deadline_at"] == both[0]["deadline_at"]


async def test_on_a_two_tier_tree_the_ward_escalates_to_the_province_not_a_district(
    running_stack: Stack,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    """The default ladder (cell, ward, district, province) on a tree with no district: the
    district rung is passed over, the province holds the petition under its own deadline,
    and at the province's deadline it is the top (design invariant 9)."""
    ward = await new_ward(running_stack, two_tier=True)
    petition = await ward.raise_petition()
    clock(8)  # past the cell's 7 days
    await escalations(running_stack, petition, 1)
    clock(16)  # past the ward's 15 days
    both = await escalations(running_stack, petition, 2)
    assert [(e["to_level"], e["to_holder_id"]) for e in both] == [
        ("ward", ward.ward),
        ("province", ward.province),
    ]
    assert both[1]["from_level"] == "ward"
    deadline = datetime.fromisoformat(both[1]["deadline_at"])
    assert deadline - datetime.fromisoformat(both[1]["escalated_at"]) == timedelta(days=45)
    clock(46)  # past the province's 45 days: nowhere left to go

    async def marked() -> list[dict] | None:
        found = [
            p for t, p in await petition_events(running_stack, petition)
            if t == "PetitionMarkedOverdue"
        ]  # fmt: skip
        return found or None

    [overdue] = await eventually(marked, timeout_s=30, what="marked overdue at the province")
    assert overdue["level"] == "province"


async def test_a_resolution_committed_first_wins_the_race(running_stack: Stack, clock) -> None:  # type: ignore[no-untyped-def]
    ward = await new_ward(running_stack)
    petition = await ward.raise_petition()
    await ward.resolve(petition)
    url = running_stack.service_url("meetings")
    before = await scheduler_runs(url)
    clock(8)

    async def scanned_past_the_deadline() -> bool:
        return await scheduler_runs(url) >= before + 3

    await eventually(scanned_past_the_deadline, what="scheduler scans after the deadline")
    types = [t for t, _ in await petition_events(running_stack, petition)]
    assert types == ["PetitionRaised", "PetitionResolved"]
    due = await fetch(
        running_stack.database_url,
        "select 1 from meetings.petition_deadlines where petition_id = $1",
        petition,
    )
    assert due == []


async def test_an_escalation_committed_first_wins_and_the_ward_resolves(
    running_stack: Stack,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    ward = await new_ward(running_stack)
    petition = await ward.raise_petition()
    clock(8)
    await escalations(running_stack, petition, 1)
    await ward.resolve(petition)
    events = await petition_events(running_stack, petition)
    assert [t for t, _ in events] == ["PetitionRaised", "PetitionEscalated", "PetitionResolved"]
    assert events[-1][1]["level"] == "ward"  # resolved where it is held now


async def test_the_scheduler_killed_while_a_deadline_passes_escalates_after_restart(
    running_stack: Stack,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    ward = await new_ward(running_stack)
    petition = await ward.raise_petition()
    await asyncio.to_thread(running_stack.stop_part, "meetings", kill=True)  # kill -9
    clock(8)  # the deadline passes while no scheduler runs
    await asyncio.to_thread(running_stack.start_service, "meetings")
    found = await escalations(running_stack, petition, 1)
    assert len(found) == 1


async def test_two_scheduler_replicas_give_one_escalation_each(
    running_stack: Stack,
    clock,  # type: ignore[no-untyped-def]
) -> None:
    port = free_port()
    await asyncio.to_thread(
        running_stack.start_service,
        "meetings",
        {"HTTP_PORT": str(port), "SCHEDULER_BATCH": "5"},
        "meetings-b",
    )
    try:
        ward = await new_ward(running_stack)
        petitions = [await ward.raise_petition(n) for n in range(40)]
        clock(8)
        for petition in petitions:
            assert len(await escalations(running_stack, petition, 1)) >= 1
        replica_url = f"http://{running_stack.settings.host}:{port}"
        assert await scheduler_runs(replica_url) > 0
        # Read again now that both replicas have had every chance to double up.
        for petition in petitions:
            escalated = [t for t, _ in await petition_events(running_stack, petition)]
            assert escalated == ["PetitionRaised", "PetitionEscalated"], petition
    finally:
        await asyncio.to_thread(running_stack.stop_part, "meetings-b")


async def test_a_unit_above_the_ward_with_a_level_no_rung_has_is_counted(
    running_stack: Stack,
) -> None:
    """A tree registered with its own level names (here "quan" for the district) leaves
    those units out of escalation: the scheduler's gauge counts them, and the start-up
    check names them by level."""

    async def gauge() -> float:
        value = await metric_value(running_stack, "meetings", "chibo_org_units_off_the_ladder")
        assert value is not None
        return value

    before = await gauge()
    ward = Ward(running_stack)
    for unit, parent, level, name in (
        (ward.province, None, "province", "Đảng bộ tỉnh Thanh Hóa"),
        (ward.district, ward.province, "quan", "Quận ủy thử"),
        (ward.ward, ward.district, "ward", "Đảng bộ phường thử"),
    ):
        await ward.send(
            "RegisterUnit", {"unit_id": unit, "parent_id": parent, "level": level, "name": name}
        )

    async def counted() -> bool:
        return await gauge() >= before + 1

    await eventually(counted, timeout_s=30, what="the unit off the ladder counted")
    pool = await asyncpg.create_pool(running_stack.database_url, min_size=1, max_size=1)
    try:
        ladder = PetitionPolicy.parse(MeetingsSettings().petition_ladder, 180)
        off = await units_off_the_ladder(pool, ladder)
        assert off.get("quan", 0) >= 1
        assert "ward" not in off and "district" not in off
    finally:
        await pool.close()
