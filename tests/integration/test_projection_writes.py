"""A batch's writes, run set-based (one statement per kind and round), leave the rows
that the same writes leave one at a time, also when a batch names a key more than once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg

from ops.stack import Stack
from services.reports.adapters.projection_store import TABLES, apply_writes, statements
from services.reports.domain.projection import Write

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


def writes(p: str) -> list[Write]:
    ward, cell, meeting = f"{p}.w", f"{p}.w.c1", f"{p}.m1"
    opened = T0 + timedelta(days=2)
    return [
        Write("unit", (ward, "ward", "Phường A", None)),
        Write("unit", (ward, "ward", "Phường A (đổi tên)", f"{p}.d")),
        Write("cell", (cell, ward, "Chi bộ 1", 5, 1)),
        Write("member_admitted", (cell, "m1", 1, ward, False, T0)),
        Write("member_admitted", (cell, "m2", 2, ward, True, T0)),
        Write("member_left", (cell, "m1", 3, T0 + timedelta(days=2))),
        Write("member_admitted", (cell, "m1", 4, ward, False, T0 + timedelta(days=3))),
        Write("member_admitted", (cell, "m1", 4, ward, True, T0 + timedelta(days=9))),
        Write("member_left", (cell, "m1", 5, T0 + timedelta(days=5))),
        Write("exemption", (cell, "m2", date(2026, 10, 1), ward, None)),
        Write("exemption", (cell, "m2", date(2026, 10, 1), ward, date(2026, 10, 20))),
        Write(
            "meeting_scheduled",
            (meeting, ward, cell, "regular", ["Một"], T0),
        ),
        Write("meeting_rescheduled", (meeting, T0 + timedelta(days=1))),
        Write("meeting_rescheduled", (meeting, T0 + timedelta(days=2))),
        Write("meeting_opened", (meeting, opened, True, ["m1", "m2"], 2, 0, 0)),
        Write("meeting_closed", (meeting, opened + timedelta(hours=2), ["m2"], 1, True, None)),
        Write("meeting_scheduled", (f"{p}.m2", ward, cell, "thematic", [], T0)),
        Write("meeting_opened", (f"{p}.m2", opened, False, [], 0, 1, 1)),
        Write("meeting_closed", (f"{p}.m2", opened + timedelta(hours=1), None, 0, False, True)),
        Write("resolution", (f"{p}.r1", meeting, ward, cell, "Nghị quyết", T0)),
        Write("task", (f"{p}.r1", "t1", ward, date(2026, 10, 15))),
        Write("task", (f"{p}.r1", "t1", ward, date(2026, 10, 30))),
        Write("task_completed", (f"{p}.r1", "t1", date(2026, 10, 10))),
        Write("task_completed", (f"{p}.r1", "t1", date(2026, 10, 12))),
        Write(
            "petition",
            (f"{p}.p1", ward, cell, "other", "Ngõ 5", T0, "cell", cell, T0, False),
        ),
        *(
            Write(
                "petition_step",
                (f"{p}.p1", v, ward, T0, "acknowledged", "cell", None, None, None, None),
            )
            for v in (2, 2, 3)
        ),
        Write("submission", (ward, "2026-10", T0, T0, True, "a")),
        Write("submission", (ward, "2026-10", T0, T0, False, "b")),
        Write("orientation", (f"{p}.o1", ward, "2026-10", ["Chủ đề"], T0, True)),
    ]


async def _rows(conn: asyncpg.Connection, p: str) -> dict[str, list[str]]:
    out = {}
    for table in TABLES:
        if table == "applied_streams":
            continue
        rows = await conn.fetch(f"select * from reports.{table}")
        out[table] = sorted(
            json.dumps(dict(r), default=str)
            for r in rows
            if any(isinstance(v, str) and v.startswith(p) for v in dict(r).values())
        )
    return out


async def _applied(stack: Stack, batches: list[list[Write]], p: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            for batch in batches:
                await apply_writes(conn, batch)
            return await _rows(conn, p)
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def test_a_batch_leaves_the_rows_that_its_writes_one_by_one_leave(stack: Stack) -> None:
    p = f"pw{uuid.uuid4().hex[:8]}"
    one_by_one = await _applied(stack, [[w] for w in writes(p)], p)
    at_once = await _applied(stack, [writes(p)], p)
    assert at_once == one_by_one
    stays = sorted(
        (r["member_id"], r["admitted_version"], r["probationary"], r["left_at"] is not None)
        for r in map(json.loads, at_once["memberships"])
    )
    # m1's second stay: the first of its two admissions, ended by the later leave.
    assert stays == [("m1", 1, False, True), ("m1", 4, False, True), ("m2", 2, True, False)]


def test_a_key_named_twice_goes_in_a_second_round() -> None:
    rounds: dict[str, list[int]] = {}
    for sql, rows in statements(writes("x")):
        rounds.setdefault(sql.split()[2], []).append(len(json.loads(rows)))
    assert rounds["reports.units"] == [1, 1]
    assert rounds["reports.memberships"] == [3, 1]  # m1's version 4 twice
    assert rounds["reports.petition_steps"] == [2, 1]
