"""Resending dead-lettered deliveries (`chibo notifications resend`) by the rules a notice
meets when it is recorded and when it is sent: a non-urgent one waits for the end of
quiet hours, and a meeting notice that the meeting has made wrong or history (moved,
called off, begun), or a deadline warning whose petition has been resolved or escalated
since or whose deadline has passed, is not sent at all. It stays dead-lettered and is
reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.notifications.adapters import delivery_log
from services.notifications.domain.notices import Priority, QuietHours, send_not_before


@dataclass(frozen=True)
class Resent:
    not_before: dict[int, datetime] = field(default_factory=dict)  # back to pending, from
    outdated: dict[int, str] = field(default_factory=dict)  # left dead: stale, superseded


async def resend_dead(
    conn: asyncpg.Connection, ids: list[int] | None, now: datetime, quiet: QuietHours | None
) -> Resent:
    """Put the dead-lettered deliveries among ``ids`` (every one for None) back to pending,
    in one transaction; ids that are not dead-lettered are left out of the result."""
    async with conn.transaction():
        dead = await delivery_log.lock_dead(conn, ids)
        # The dispatcher's own send-time check (it makes it again when it claims them).
        outdated = await delivery_log.outdated_notices(
            conn, {r["delivery_id"]: r["trigger"] for r in dead}, now
        )
        not_before = {
            r["delivery_id"]: send_not_before(Priority(r["priority"]), now, quiet)
            for r in dead
            if r["delivery_id"] not in outdated
        }
        await delivery_log.requeue_dead(conn, not_before)
    return Resent(not_before=not_before, outdated=outdated)
