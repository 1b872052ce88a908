"""Durable timers in Postgres: reminders, deadline warnings and the monthly checks.

Set and cancelled in the consumer's transaction (with the event that causes it); fired by
service_layer/scheduler.py, which claims due rows with ``for update skip locked`` and
fires each in the same transaction as the deliveries it makes, so a timer fires once,
whatever the number of replicas, and a restart loses none. A timer that fails waits for
``retry_at`` and, after too many attempts, is set aside as ``dead`` with its error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Timer:
    timer_id: int
    kind: str
    ref_id: str
    due_at: datetime
    payload: dict[str, Any]
    attempts: int = 0  # failed attempts so far


async def set_timer(
    conn: asyncpg.Connection, kind: str, ref_id: str, due_at: datetime, payload: dict[str, Any]
) -> bool:
    status = await conn.execute(
        "insert into notifications.timers (kind, ref_id, due_at, payload)"
        " values ($1, $2, $3, $4::jsonb) on conflict (kind, ref_id, due_at) do nothing",
        kind,
        ref_id,
        due_at,
        json.dumps(payload, default=str),
    )
    return status.endswith(" 1")


async def cancel_timers(conn: asyncpg.Connection, kind: str, ref_id: str) -> int:
    status = await conn.execute(
        "update notifications.timers set status = 'cancelled'"
        " where ref_id = $1 and kind = $2 and status = 'pending'",
        ref_id,
        kind,
    )
    return int(status.split()[-1])


async def take_due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Timer]:
    rows = await conn.fetch(
        "select timer_id, kind, ref_id, due_at, payload, attempts from notifications.timers"
        " where status = 'pending' and due_at <= $1 and (retry_at is null or retry_at <= $1)"
        " order by due_at, timer_id limit $2 for update skip locked",
        now,
        limit,
    )
    return [
        Timer(
            r["timer_id"],
            r["kind"],
            r["ref_id"],
            r["due_at"],
            json.loads(r["payload"]),
            r["attempts"],
        )
        for r in rows
    ]


async def mark_fired(conn: asyncpg.Connection, timer_ids: list[int], now: datetime) -> None:
    await conn.execute(
        "update notifications.timers set status = 'fired', fired_at = $2 where timer_id = any($1)",
        timer_ids,
        now,
    )


async def mark_failed(
    conn: asyncpg.Connection, timer_id: int, error: str, retry_at: datetime | None
) -> None:
    """Count a failed attempt: retried from ``retry_at``, or ``dead`` when it is None."""
    await conn.execute(
        "update notifications.timers set attempts = attempts + 1, last_error = $2,"
        " retry_at = $3, status = case when $3::timestamptz is null then 'dead' else status end"
        " where timer_id = $1",
        timer_id,
        error[:2000],
        retry_at,
    )


async def pending_stats(pool: asyncpg.Pool, now: datetime) -> tuple[int, float]:
    """(pending timers, seconds the oldest overdue one has waited; 0 when none is due)."""
    row = await pool.fetchrow(
        "select count(*) as n, min(due_at) filter (where due_at <= $1) as oldest"
        " from notifications.timers where status = 'pending'",
        now,
    )
    oldest = row["oldest"]
    return int(row["n"]), (now - oldest).total_seconds() if oldest else 0.0
