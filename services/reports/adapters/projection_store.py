"""Reads and writes of the reports schema."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from operator import itemgetter
from typing import Any

import asyncpg

from services.reports.domain import facts
from services.reports.domain.projection import STATEMENTS, Write
from shared.clock import LOCAL_TZ
from shared.postgres import json_rows, rows_of

# Each statement, reading its rows from {rows}; the rows' columns; and the columns that
# name the row it writes (its key). A set of rows goes in one statement, as one JSON
# document (``shared.postgres.json_rows``).
_STATEMENTS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "unit": (
        """
        insert into reports.units (unit_id, level, name, parent_id)
        select * from {rows} u
        on conflict (unit_id) do update
        set level = excluded.level, name = excluded.name, parent_id = excluded.parent_id""",
        "unit_id text, level text, name text, parent_id text",
        (0,),
    ),
    "cell": (
        """
        insert into reports.cells (cell_id, ward_id, name, meeting_day, roll_calls)
        select * from {rows} u
        on conflict (cell_id) do update
        set ward_id = excluded.ward_id, name = excluded.name,
            meeting_day = excluded.meeting_day, roll_calls = excluded.roll_calls""",
        "id text, ward text, name text, day int, roll_calls int",
        (0,),
    ),
    "member_admitted": (
        """
        insert into reports.memberships
            (cell_id, member_id, admitted_version, ward_id, probationary, admitted_at)
        select * from {rows} u
        on conflict do nothing""",
        "cell text, member text, version int, ward text, probationary bool, at timestamptz",
        (0, 1, 2),
    ),
    "member_left": (
        """
        update reports.memberships m set left_at = u.left_at
        from {rows} u
        where m.cell_id = u.cell_id and m.member_id = u.member_id
            and m.admitted_version < u.version and m.left_at is null""",
        "cell_id text, member_id text, version int, left_at timestamptz",
        (0, 1),
    ),
    "exemption": (
        """
        insert into reports.exemptions (cell_id, member_id, exempt_from, ward_id, exempt_until)
        select * from {rows} u
        on conflict (cell_id, member_id, exempt_from) do update
        set exempt_until = excluded.exempt_until""",
        "cell text, member text, since date, ward text, until date",
        (0, 1, 2),
    ),
    "meeting_scheduled": (
        """
        insert into reports.meetings
            (meeting_id, ward_id, cell_id, kind, agenda, first_scheduled_start, scheduled_start)
        select id, ward, cell, kind, agenda, start, start
        from {rows} u
        on conflict do nothing""",
        "id text, ward text, cell text, kind text, agenda jsonb, start timestamptz",
        (0,),
    ),
    "meeting_rescheduled": (
        """
        update reports.meetings m
        set scheduled_start = u.start, reschedules = m.reschedules + 1
        from {rows} u
        where m.meeting_id = u.id""",
        "id text, start timestamptz",
        (0,),
    ),
    "meeting_cancelled": (
        """
        update reports.meetings m set cancelled_reason = u.reason
        from {rows} u
        where m.meeting_id = u.id""",
        "id text, reason text",
        (0,),
    ),
    "meeting_opened": (
        """
        update reports.meetings m
        set opened_at = u.opened_at, supervisor_present = u.supervisor_present,
            first_present_ids = array(select jsonb_array_elements_text(u.present)),
            present_first = u.present_first, absent_excused = u.excused,
            absent_unexcused = u.unexcused
        from {rows} u
        where m.meeting_id = u.id""",
        "id text, opened_at timestamptz, supervisor_present bool, present jsonb, "
        "present_first int, excused int, unexcused int",
        (0,),
    ),
    "meeting_closed": (
        """
        update reports.meetings m
        set closed_at = u.closed_at,
            present_second = jsonb_array_length(u.second),
            present_both = case when u.second is not null then
                (select count(*) from jsonb_array_elements_text(u.second) as s(id)
                 where s.id = any(m.first_present_ids)) end,
            speakers = u.speakers, minutes_recorded = u.minutes,
            previous_resolution_carried_out = u.carried_out
        from {rows} u
        where m.meeting_id = u.id""",
        "id text, closed_at timestamptz, second jsonb, speakers int, minutes bool, "
        "carried_out bool",
        (0,),
    ),
    "resolution": (
        """
        insert into reports.resolutions
            (resolution_id, meeting_id, ward_id, cell_id, title, adopted_at)
        select * from {rows} u
        on conflict do nothing""",
        "id text, meeting text, ward text, cell text, title text, adopted_at timestamptz",
        (0,),
    ),
    "task": (
        """
        insert into reports.tasks (resolution_id, task_id, ward_id, due_on)
        select * from {rows} u
        on conflict do nothing""",
        "resolution text, task text, ward text, due_on date",
        (0, 1),
    ),
    "task_completed": (
        """
        update reports.tasks t set completed_on = u.completed_on
        from {rows} u
        where t.resolution_id = u.resolution_id and t.task_id = u.task_id""",
        "resolution_id text, task_id text, completed_on date",
        (0, 1),
    ),
    "petition": (
        """
        insert into reports.petitions
            (petition_id, ward_id, cell_id, category, place, raised_at, level, holder_id,
             deadline_at, recurring)
        select * from {rows} u
        on conflict do nothing""",
        "id text, ward text, cell text, category text, place text, raised_at timestamptz, "
        "level text, holder text, deadline_at timestamptz, recurring bool",
        (0,),
    ),
    "petition_step": (
        """
        insert into reports.petition_steps
            (petition_id, version, ward_id, at, kind, level, to_level, to_holder_id, reason,
             deadline_at)
        select * from {rows} u
        on conflict do nothing""",
        "id text, version int, ward text, at timestamptz, kind text, level text, "
        "to_level text, to_holder text, reason text, deadline_at timestamptz",
        (0, 1),
    ),
    "submission": (
        """
        insert into reports.submissions
            (ward_id, month, submitted_at, due_at, on_time, submitted_by)
        select * from {rows} u
        on conflict do nothing""",
        "ward text, month text, submitted_at timestamptz, due_at timestamptz, on_time bool, "
        "submitted_by text",
        (0, 1),
    ),
    "orientation": (
        """
        insert into reports.orientations
            (orientation_id, ward_id, month, topics, issued_at, on_time)
        select * from {rows} u
        on conflict do nothing""",
        "id text, ward text, month text, topics jsonb, issued_at timestamptz, on_time bool",
        (0,),
    ),
}
SQL: dict[str, tuple[str, tuple[int, ...]]] = {
    name: (sql.format(rows=rows_of(columns)), key)
    for name, (sql, columns, key) in _STATEMENTS.items()
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


# (sql, its one parameter: the rows as a JSON document, ``json_rows``).
Statement = tuple[str, str]


def statements(writes: list[Write]) -> list[Statement]:
    """The statements of a batch's writes, in the projection's fixed order. Pure.

    Rows of one kind go in one statement; rows that name the same key go in successive
    ones (rounds), in their order, so the effect is that of running them one by one."""
    grouped: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for write in writes:
        grouped[write.statement].append(write.args)
    out: list[Statement] = []
    for statement in STATEMENTS:
        if not (rows := grouped.get(statement)):
            continue
        sql, key = SQL[statement]
        out.extend((sql, json_rows(part)) for part in _rounds(rows, key))
    return out


def _rounds(rows: list[tuple[Any, ...]], key: tuple[int, ...]) -> list[list[tuple[Any, ...]]]:
    """The n-th row of each key goes in the n-th round."""
    of = itemgetter(*key)
    if len(set(map(of, rows))) == len(rows):
        return [rows]  # the usual batch: every key once, one round (the check runs in C)
    seen: dict[Any, int] = {}
    rounds: list[list[tuple[Any, ...]]] = []
    for row in rows:
        k = of(row)
        n = seen[k] = seen.get(k, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(row)
    return rounds


async def run(conn: asyncpg.Connection, prepared: list[Statement]) -> None:
    for sql, rows in prepared:
        await conn.execute(sql, rows)


async def apply_writes(conn: asyncpg.Connection, writes: list[Write]) -> None:
    """One statement per kind of write (and round), in the projection's fixed order."""
    await run(conn, statements(writes))


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
