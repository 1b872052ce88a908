"""The delivery log in Postgres: the outbox of rendered notices and their outcome.

States: ``pending`` (waiting, maybe until quiet hours end or a retry is due) → ``sending``
(claimed by a dispatcher, with a lease) → ``sent``; or ``dead`` (permanent failure, or
attempts exhausted: the dead-letter state, resent by `chibo notifications resend`), or
``suppressed`` (not to be sent: ``no_contact``, nobody to send to on that channel;
``no_channel``, the channel is not configured here; ``superseded``, a meeting notice the
meeting's later change made wrong, or a deadline warning whose petition no longer has
that deadline open; ``stale``, a meeting notice whose meeting had begun, or a deadline
warning whose deadline had passed, when it came to be sent).

A claim is identified by its ``claimed_until``: a later claim of the same row (after the
lease ran out) always sets a later one. Every mark but ``sent`` applies only while the row
is still ``sending`` under that claim, so a dispatcher whose lease ran out cannot put back
or settle a row another one has claimed (or sent) since."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from services.notifications.adapters.templating import RenderedMessage
from services.notifications.domain.notices import (
    CHECKED_AT_SEND,
    MEETING_NOTICES,
    SUPERSEDED_BY_PETITION_CHANGE,
    Notice,
    outdated_reason,
)

_CHECKED_AT_SEND = frozenset(t.value for t in CHECKED_AT_SEND)


@dataclass(frozen=True)
class Delivery:
    delivery_id: int
    trigger_event_id: UUID
    trigger: str
    recipient: str  # a person id
    channel: str
    subject: str
    body_text: str
    body_html: str
    attempts: int
    created_at: datetime
    claimed_until: datetime  # this claim's identity (and the end of its lease)
    first_attempt_at: datetime  # retries stop RETRY_GIVE_UP_S after it


_COLUMNS = (
    "delivery_id, trigger_event_id, trigger, recipient, channel, subject, body_text,"
    " body_html, attempts, created_at, claimed_until, first_attempt_at"
)


async def record(
    conn: asyncpg.Connection,
    notice: Notice,
    message: RenderedMessage,
    pairs: list[tuple[str, str]],
    not_before: datetime,
    status: str = "pending",
) -> list[tuple[str, str]]:
    """Add a pending delivery per (person, channel); returns the pairs that existed already."""
    if not pairs:
        return []
    rows = await conn.fetch(
        """
        insert into notifications.deliveries
            (trigger_event_id, trigger, recipient, channel, subject, body_text, body_html,
             priority, next_attempt_at, trigger_ref, status, about_at, about_start)
        select $1, $2, r.recipient, r.channel, $5, $6, $7, $8, $9, $10, $11, $12, $12
        from unnest($3::text[], $4::text[]) as r(recipient, channel)
        on conflict (trigger_event_id, recipient, channel) do nothing
        returning recipient, channel
        """,
        notice.trigger_id,
        notice.trigger.value,
        [p for p, _ in pairs],
        [c for _, c in pairs],
        message.subject,
        message.text,
        message.html,
        notice.priority.value,
        not_before,
        notice.ref,
        status,
        notice.about_at,
    )
    inserted = {(r["recipient"], r["channel"]) for r in rows}
    return [pair for pair in pairs if pair not in inserted]


async def withdraw_waiting(
    conn: asyncpg.Connection, ref: str, triggers: tuple[str, ...], reason: str
) -> list[tuple[str, str]]:
    """Settle the still-pending deliveries of these triggers about ``ref`` as
    ``suppressed`` with ``reason``; returns their (channel, trigger). Rows being sent are
    left alone: the dispatcher checks them again before a retry goes out."""
    rows = await conn.fetch(
        "update notifications.deliveries set status = 'suppressed', reason = $3"
        " where trigger_ref = $1 and status = 'pending' and trigger = any($2)"
        " returning channel, trigger",
        ref,
        list(triggers),
        reason,
    )
    return [(r["channel"], r["trigger"]) for r in rows]


async def outdated_notices(
    db: asyncpg.Pool | asyncpg.Connection, triggers: dict[int, str], now: datetime
) -> dict[int, str]:
    """Of deliveries about to be sent (claimed, or resent), given as id → trigger: the
    meeting notices and deadline warnings that the meeting or petition has made wrong or
    history since (``outdated_reason``: ``superseded`` or ``stale``), each with its reason."""
    checked = [i for i, trigger in triggers.items() if trigger in _CHECKED_AT_SEND]
    if not checked:
        return {}
    # Each row is joined with what it is about: a meeting notice with the meeting, a
    # deadline warning with the petition (both named by trigger_ref).
    rows = await db.fetch(
        "select d.delivery_id, d.trigger, coalesce(d.about_at, d.about_start) as about_at,"
        " coalesce(m.status, p.status) as status,"
        " coalesce(m.scheduled_start, p.deadline_at) as current_at"
        " from notifications.deliveries d"
        " left join notifications.meetings m"
        "  on d.trigger = any($2) and m.meeting_id = d.trigger_ref"
        " left join notifications.petitions p"
        "  on d.trigger = any($3) and p.petition_id = d.trigger_ref"
        " where d.delivery_id = any($1)",
        checked,
        [t.value for t in MEETING_NOTICES],
        [t.value for t in SUPERSEDED_BY_PETITION_CHANGE],
    )
    reasons: dict[int, str] = {}
    for row in rows:
        reason = outdated_reason(
            row["trigger"], row["about_at"], row["status"], row["current_at"], now
        )
        if reason is not None:
            reasons[row["delivery_id"]] = reason
    return reasons


async def withdraw_claimed(pool: asyncpg.Pool, reasons: dict[int, str]) -> list[int]:
    """Settle claimed rows as ``suppressed`` with each one's reason, instead of sending
    them; returns the ids settled (those still ``sending``)."""
    rows = await pool.fetch(
        "update notifications.deliveries d set status = 'suppressed', reason = r.reason,"
        " claimed_until = null"
        " from unnest($1::bigint[], $2::text[]) as r(delivery_id, reason)"
        " where d.delivery_id = r.delivery_id and d.status = 'sending'"
        " returning d.delivery_id",
        list(reasons),
        list(reasons.values()),
    )
    return [r["delivery_id"] for r in rows]


async def claim(pool: asyncpg.Pool, now: datetime, limit: int, lease: timedelta) -> list[Delivery]:
    """Claim due deliveries for this dispatcher: pending ones whose time has come, and
    ``sending`` ones whose lease ran out (their dispatcher died: resent, see
    docs/notifications.md). ``skip locked`` keeps replicas from sharing one."""
    rows = await pool.fetch(
        f"""
        update notifications.deliveries d set status = 'sending', claimed_until = $3,
               attempts = d.attempts + 1, first_attempt_at = coalesce(d.first_attempt_at, $1)
        where d.delivery_id in (
            select delivery_id from notifications.deliveries
            where (status = 'pending' and next_attempt_at <= $1)
               or (status = 'sending' and claimed_until < $1)
            order by next_attempt_at, delivery_id limit $2
            for update skip locked)
        returning {_COLUMNS}
        """,
        now,
        limit,
        now + lease,
    )
    return sorted((Delivery(**dict(r)) for r in rows), key=lambda d: d.delivery_id)


async def mark_sent(pool: asyncpg.Pool, delivery_ids: list[int], now: datetime) -> None:
    await pool.execute(
        "update notifications.deliveries set status = 'sent', sent_at = $2, last_error = null,"
        " claimed_until = null where delivery_id = any($1) and status = 'sending'",
        delivery_ids,
        now,
    )


async def release(pool: asyncpg.Pool, claims: list[Delivery]) -> int:
    """Give back claimed rows that were never handed to a channel: pending again, the
    attempt not counted. Returns how many were still this claim's."""
    status = await pool.execute(
        "update notifications.deliveries d set status = 'pending', claimed_until = null,"
        " attempts = d.attempts - 1"
        " from unnest($1::bigint[], $2::timestamptz[]) as c(delivery_id, claimed_until)"
        " where d.delivery_id = c.delivery_id and d.status = 'sending'"
        " and d.claimed_until = c.claimed_until",
        [d.delivery_id for d in claims],
        [d.claimed_until for d in claims],
    )
    return int(status.split()[-1])


async def mark_retry(pool: asyncpg.Pool, claim: Delivery, error: str, at: datetime) -> bool:
    """Pending again from ``at``; False if the row is no longer this claim's."""
    status = await pool.execute(
        "update notifications.deliveries set status = 'pending', last_error = $3,"
        " next_attempt_at = $4, claimed_until = null"
        " where delivery_id = $1 and status = 'sending' and claimed_until = $2",
        claim.delivery_id,
        claim.claimed_until,
        error[:2000],
        at,
    )
    return status.endswith(" 1")


async def mark_final(
    pool: asyncpg.Pool, claim: Delivery, status: str, reason: str, error: str | None
) -> bool:
    """``dead`` (the dead-letter state) or ``suppressed``, with a machine-readable reason;
    False if the row is no longer this claim's."""
    result = await pool.execute(
        "update notifications.deliveries set status = $3, reason = $4, last_error = $5,"
        " claimed_until = null"
        " where delivery_id = $1 and status = 'sending' and claimed_until = $2",
        claim.delivery_id,
        claim.claimed_until,
        status,
        reason,
        error[:2000] if error else None,
    )
    return result.endswith(" 1")


async def lock_dead(conn: asyncpg.Connection, ids: list[int] | None) -> list[asyncpg.Record]:
    """The dead-lettered deliveries among ``ids`` (every one for None), locked for this
    transaction: id, trigger and priority."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "select delivery_id, trigger, priority from notifications.deliveries"
        " where status = 'dead' and ($1::bigint[] is null or delivery_id = any($1))"
        " order by delivery_id for update",
        ids,
    )
    return rows


async def requeue_dead(conn: asyncpg.Connection, not_before: dict[int, datetime]) -> None:
    """Dead-lettered deliveries back to pending, each from its time, with fresh attempts."""
    await conn.execute(
        "update notifications.deliveries d set status = 'pending', attempts = 0,"
        " first_attempt_at = null, reason = null, next_attempt_at = r.at, claimed_until = null"
        " from unnest($1::bigint[], $2::timestamptz[]) as r(delivery_id, at)"
        " where d.delivery_id = r.delivery_id and d.status = 'dead'",
        list(not_before),
        list(not_before.values()),
    )


async def release_digests(pool: asyncpg.Pool, not_before: datetime) -> int:
    """With the digest turned off, low notices still waiting for one become ordinary
    pending deliveries (sent from ``not_before`` at the latest: quiet hours still hold)."""
    status = await pool.execute(
        "update notifications.deliveries set status = 'pending',"
        " next_attempt_at = least(next_attempt_at, $1) where status = 'digest'",
        not_before,
    )
    return int(status.split()[-1])


async def backlog(pool: asyncpg.Pool, now: datetime) -> tuple[int, float]:
    """(deliveries not yet sent and not final, age in seconds of the oldest that is due).

    Each part reads one partial index, so the cost follows the backlog, not the history
    of sent rows."""
    row = await pool.fetchrow(
        "select (select count(*) from notifications.deliveries where status = 'pending')"
        " + (select count(*) from notifications.deliveries where status = 'sending') as n,"
        " (select min(next_attempt_at) from notifications.deliveries"
        "  where status = 'pending' and next_attempt_at <= $1) as oldest",
        now,
    )
    oldest = row["oldest"]
    return int(row["n"]), max((now - oldest).total_seconds(), 0.0) if oldest else 0.0


async def pending_count(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            "select count(*) from notifications.deliveries where status in ('pending', 'sending')"
        )
    )


async def take_digest_items(conn: asyncpg.Connection, now: datetime) -> list[asyncpg.Record]:
    """Low notices whose digest time has come, locked for this transaction."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "select delivery_id, recipient, channel, trigger, subject, body_text, next_attempt_at"
        " from notifications.deliveries where status = 'digest' and next_attempt_at <= $1"
        " order by recipient, channel, delivery_id for update skip locked",
        now,
    )
    return rows


async def mark_digested(conn: asyncpg.Connection, ids: list[int], digest_ref: str) -> None:
    await conn.execute(
        "update notifications.deliveries set status = 'digested', reason = $2"
        " where delivery_id = any($1)",
        ids,
        digest_ref,
    )
