"""Reads and writes of the reports schema."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

import asyncpg

from services.reports.domain import facts
from services.reports.domain.projection import STATEMENTS, Write
from shared.clock import LOCAL_TZ

SQL: dict[str, str] = {
    "unit": """
        insert into reports.units (unit_id, level, name, parent_id) values ($1, $2, $3, $4)
        on conflict (unit_id) do update
        set level = excluded.level, name = excluded.name, parent_id = excluded.parent_id""",
    "cell": """
        insert into reports.cells (cell_id, ward_id, name, meeting_day, roll_calls)
        values ($1, $2, $3, $4, $5)
        on conflict (cell_id) do update
        set ward_id = excluded.ward_id, name = excluded.name,
            meeting_day = excluded.meeting_day, roll_calls = excluded.roll_calls""",
    "member_admitted": """
        insert into reports.memberships
            (cell_id, member_id, admitted_version, ward_id, probationary, admitted_at)
        values ($1, $2, $3, $4, $5, $6) on conflict do nothing""",
    "member_left": """
        update reports.memberships set left_at = $4
        where cell_id = $1 and member_id = $2 and admitted_version < $3 and left_at is null""",
    "exemption": """
        insert into reports.exemptions (cell_id, member_id, exempt_from, ward_id, exempt_until)
        values ($1, $2, $3, $4, $5)
        on conflict (cell_id, member_id, exempt_from) do update
        set exempt_until = excluded.exempt_until""",
    "meeting_scheduled": """
        insert into reports.meetings
            (meeting_id, ward_id, cell_id, kind, agenda, first_scheduled_start, scheduled_start)
        values ($1, $2, $3, $4, $5::jsonb, $6, $6) on conflict do nothing""",
    "meeting_rescheduled": """
        update reports.meetings set scheduled_start = $2, reschedules = reschedules + 1
        where meeting_id = $1""",
    "meeting_cancelled": "update reports.meetings set cancelled_reason = $2 where meeting_id = $1",
    "meeting_opened": """
        update reports.meetings
        set opened_at = $2, supervisor_present = $3, first_present_ids = $4::text[],
            present_first = $5, absent_excused = $6, absent_unexcused = $7
        where meeting_id = $1""",
    "meeting_closed": """
        update reports.meetings
        set closed_at = $2,
            present_second = cardinality($3::text[]),
            present_both = case when $3::text[] is not null then
                (select count(*) from unnest($3::text[]) as s(id)
                 where s.id = any(first_present_ids)) end,
            speakers = $4, minutes_recorded = $5, previous_resolution_carried_out = $6
        where meeting_id = $1""",
    "resolution": """
        insert into reports.resolutions
            (resolution_id, meeting_id, ward_id, cell_id, title, adopted_at)
        values ($1, $2, $3, $4, $5, $6) on conflict do nothing""",
    "task": """
        insert into reports.tasks (resolution_id, task_id, ward_id, due_on)
        values ($1, $2, $3, $4) on conflict do nothing""",
    "task_completed": """
        update reports.tasks set completed_on = $3 where resolution_id = $1 and task_id = $2""",
    "petition": """
        insert into reports.petitions
            (petition_id, ward_id, cell_id, category, place, raised_at, level, holder_id,
             deadline_at, recurring)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict do nothing""",
    "petition_step": """
        insert into reports.petition_steps
            (petition_id, version, ward_id, at, kind, level, to_level, to_holder_id, reason,
             deadline_at)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) on conflict do nothing""",
    "submission": """
        insert into reports.submissions
            (ward_id, month, submitted_at, due_at, on_time, submitted_by)
        values ($1, $2, $3, $4, $5, $6) on conflict do nothing""",
    "orientation": """
        insert into reports.orientations
            (orientation_id, ward_id, month, topics, issued_at, on_time)
        values ($1, $2, $3, $4::jsonb, $5, $6) on conflict do nothing""",
}
assert set(SQL) == set(STATEMENTS)

# Every table the projections own, in an order that a delete can follow.
TABLES = (
    "petition_steps",
    "petitions",
    "tasks",
    "resolutions",
    "meetings",
    "exemptions",
    "memberships",
    "cells",
    "units",
    "submissions",
    "orientations",
    "applied_streams",
)


async def apply_writes(conn: asyncpg.Connection, writes: list[Write]) -> None:
    """One pipelined statement per kind of write, in the projection's fixed order."""
    grouped: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for write in writes:
        grouped[write.statement].append(write.args)
    for statement in STATEMENTS:
        if rows := grouped.get(statement):
            await conn.executemany(SQL[statement], rows)


async def clear(conn: asyncpg.Connection) -> None:
    """Empty every projection table (inside the caller's transaction)."""
    for table in TABLES:
        await conn.execute(f"delete from reports.{table}")


# -- reads ---------------------------------------------------------------------------------


async def units(pool: asyncpg.Pool | asyncpg.Connection) -> dict[str, facts.Unit]:
    rows = await pool.fetch("select unit_id, level, name, parent_id from reports.units")
    return {r["unit_id"]: facts.Unit(**dict(r)) for r in rows}


async def ward_facts(
    conn: asyncpg.Connection,
    wards: list[facts.Unit],
    month_start: datetime,
    month_end: datetime,
    quarter_start: datetime,
) -> list[facts.WardFacts]:
    """The facts of each ward's report for a month, read in one snapshot."""
    ids = [w.unit_id for w in wards]
    month = f"{month_start.astimezone(LOCAL_TZ):%Y-%m}"
    cells = await conn.fetch(
        "select cell_id, ward_id, name, meeting_day, roll_calls from reports.cells"
        " where ward_id = any($1)",
        ids,
    )
    members = await conn.fetch(
        "select cell_id, member_id, ward_id, probationary, admitted_at, left_at"
        " from reports.memberships where ward_id = any($1) and admitted_at < $2"
        " and (left_at is null or left_at >= $2)",
        ids,
        month_end,
    )
    exemptions = await conn.fetch(
        "select cell_id, member_id, exempt_from, exempt_until from reports.exemptions"
        " where ward_id = any($1)",
        ids,
    )
    meetings = await conn.fetch(
        "select * from reports.meetings where ward_id = any($1)"
        " and first_scheduled_start < $3"
        " and (first_scheduled_start >= $2 or (kind = 'thematic' and opened_at >= $4))",
        ids,
        month_start,
        month_end,
        quarter_start,
    )
    resolutions = await conn.fetch(
        "select r.resolution_id, r.meeting_id, r.cell_id, r.title, r.ward_id,"
        " coalesce(array_agg(array[t.task_id, t.due_on::text, t.completed_on::text])"
        "   filter (where t.task_id is not null), '{}') as tasks"
        " from reports.resolutions r left join reports.tasks t using (resolution_id)"
        " where r.ward_id = any($1) and r.meeting_id = any($2)"
        " group by r.resolution_id",
        ids,
        [m["meeting_id"] for m in meetings],
    )
    petitions = await conn.fetch(
        "select * from reports.petitions where ward_id = any($1) and raised_at < $2",
        ids,
        month_end,
    )
    steps = await conn.fetch(
        "select * from reports.petition_steps where ward_id = any($1)"
        " and petition_id = any($2) order by petition_id, version",
        ids,
        [p["petition_id"] for p in petitions],
    )
    submissions = await conn.fetch(
        "select * from reports.submissions where ward_id = any($1) and month = $2", ids, month
    )
    return _assemble(
        wards, cells, members, exemptions, meetings, resolutions, petitions, steps, submissions
    )


def _assemble(
    wards: list[facts.Unit],
    cells: list[asyncpg.Record],
    members: list[asyncpg.Record],
    exemptions: list[asyncpg.Record],
    meetings: list[asyncpg.Record],
    resolutions: list[asyncpg.Record],
    petitions: list[asyncpg.Record],
    steps: list[asyncpg.Record],
    submissions: list[asyncpg.Record],
) -> list[facts.WardFacts]:
    exempt: dict[tuple[str, str], list[facts.Exemption]] = defaultdict(list)
    for e in exemptions:
        exempt[(e["cell_id"], e["member_id"])].append(
            facts.Exemption(e["exempt_from"], e["exempt_until"])
        )
    petition_steps: dict[str, list[facts.PetitionStep]] = defaultdict(list)
    for s in steps:
        petition_steps[s["petition_id"]].append(
            facts.PetitionStep(
                at=s["at"],
                kind=s["kind"],
                level=s["level"],
                to_level=s["to_level"],
                to_holder_id=s["to_holder_id"],
                reason=s["reason"],
                deadline_at=s["deadline_at"],
            )
        )
    by_ward: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        by_ward[c["ward_id"]]["cells"].append(
            facts.Cell(c["cell_id"], c["ward_id"], c["name"], c["meeting_day"], c["roll_calls"])
        )
    for m in members:
        by_ward[m["ward_id"]]["memberships"].append(
            facts.Membership(
                member_id=m["member_id"],
                cell_id=m["cell_id"],
                probationary=m["probationary"],
                admitted_at=m["admitted_at"],
                left_at=m["left_at"],
                exemptions=tuple(exempt.get((m["cell_id"], m["member_id"]), ())),
            )
        )
    for m in meetings:
        by_ward[m["ward_id"]]["meetings"].append(
            facts.Meeting(
                meeting_id=m["meeting_id"],
                ward_id=m["ward_id"],
                cell_id=m["cell_id"],
                kind=m["kind"],
                first_scheduled_start=m["first_scheduled_start"],
                scheduled_start=m["scheduled_start"],
                reschedules=m["reschedules"],
                cancelled_reason=m["cancelled_reason"],
                opened_at=m["opened_at"],
                closed_at=m["closed_at"],
                supervisor_present=m["supervisor_present"],
                present_first=m["present_first"],
                absent_excused=m["absent_excused"],
                absent_unexcused=m["absent_unexcused"],
                present_second=m["present_second"],
                present_both=m["present_both"],
                speakers=m["speakers"],
                minutes_recorded=m["minutes_recorded"],
                previous_resolution_carried_out=m["previous_resolution_carried_out"],
            )
        )
    for r in resolutions:
        by_ward[r["ward_id"]]["resolutions"].append(
            facts.Resolution(
                resolution_id=r["resolution_id"],
                meeting_id=r["meeting_id"],
                cell_id=r["cell_id"],
                title=r["title"],
                tasks=tuple(
                    facts.Task(
                        task_id,
                        datetime.fromisoformat(due).date(),
                        datetime.fromisoformat(done).date() if done else None,
                    )
                    for task_id, due, done in r["tasks"]
                ),
            )
        )
    for p in petitions:
        by_ward[p["ward_id"]]["petitions"].append(
            facts.Petition(
                petition_id=p["petition_id"],
                ward_id=p["ward_id"],
                cell_id=p["cell_id"],
                category=p["category"],
                place=p["place"],
                raised_at=p["raised_at"],
                level=p["level"],
                holder_id=p["holder_id"],
                deadline_at=p["deadline_at"],
                recurring=p["recurring"],
                steps=tuple(petition_steps.get(p["petition_id"], ())),
            )
        )
    submitted = {
        s["ward_id"]: facts.Submission(
            ward_id=s["ward_id"],
            month=s["month"],
            submitted_at=s["submitted_at"],
            due_at=s["due_at"],
            on_time=s["on_time"],
            submitted_by=s["submitted_by"],
        )
        for s in submissions
    }
    return [
        facts.WardFacts(
            ward=w,
            cells=by_ward[w.unit_id]["cells"],
            memberships=by_ward[w.unit_id]["memberships"],
            meetings=by_ward[w.unit_id]["meetings"],
            resolutions=by_ward[w.unit_id]["resolutions"],
            petitions=by_ward[w.unit_id]["petitions"],
            submission=submitted.get(w.unit_id),
        )
        for w in wards
    ]


async def applied_versions(pool: asyncpg.Pool, stream_ids: list[str]) -> dict[str, int]:
    rows = await pool.fetch(
        "select stream_id, version from reports.applied_streams where stream_id = any($1)",
        stream_ids,
    )
    return {r["stream_id"]: r["version"] for r in rows}


# -- the walking skeleton's views ----------------------------------------------------------


async def ward_meetings(pool: asyncpg.Pool, ward_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "select meeting_id, cell_id, kind, scheduled_start, agenda from reports.meetings"
        " where ward_id = $1 order by scheduled_start, meeting_id",
        ward_id,
    )
    return [
        {
            "meeting_id": r["meeting_id"],
            "cell_id": r["cell_id"],
            "kind": r["kind"],
            "scheduled_start": r["scheduled_start"].astimezone(LOCAL_TZ).isoformat(),
            "agenda": json.loads(r["agenda"]),
        }
        for r in rows
    ]


async def wards(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "select ward_id, count(*) as meetings from reports.meetings"
        " group by ward_id order by ward_id"
    )
    return [{"ward_id": r["ward_id"], "meetings_scheduled": r["meetings"]} for r in rows]
