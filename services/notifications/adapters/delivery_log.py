"""The delivery log in Postgres: the outbox of rendered notices and their outcome."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from services.notifications.adapters.templating import RenderedMessage
from services.notifications.domain.notices import Notice


@dataclass(frozen=True)
class PendingDelivery:
    delivery_id: int
    trigger_event_id: UUID
    trigger: str
    recipient: str
    channel: str
    subject: str
    body_text: str
    body_html: str
    attempts: int


async def record(conn: asyncpg.Connection, notice: Notice, message: RenderedMessage) -> bool:
    """Add a pending delivery; False when this (trigger, recipient, channel) exists already."""
    status = await conn.execute(
        """
        insert into notifications.deliveries
            (trigger_event_id, trigger, recipient, channel, subject, body_text, body_html)
        values ($1, $2, $3, $4, $5, $6, $7)
        on conflict (trigger_event_id, recipient, channel) do nothing
        """,
        notice.trigger_event_id,
        notice.trigger,
        notice.recipient,
        notice.channel,
        message.subject,
        message.text,
        message.html,
    )
    return status.endswith(" 1")


async def take_pending(conn: asyncpg.Connection, limit: int) -> list[PendingDelivery]:
    """Pending deliveries, locked for this transaction so that replicas never share one."""
    rows = await conn.fetch(
        """
        select delivery_id, trigger_event_id, trigger, recipient, channel, subject, body_text,
               body_html, attempts
        from notifications.deliveries
        where status = 'pending' and next_attempt_at <= now()
        order by next_attempt_at, delivery_id limit $1 for update skip locked
        """,
        limit,
    )
    return [PendingDelivery(**dict(r)) for r in rows]


async def mark_sent(conn: asyncpg.Connection, delivery_id: int) -> None:
    await conn.execute(
        "update notifications.deliveries set status = 'sent', sent_at = now(),"
        " attempts = attempts + 1, last_error = null where delivery_id = $1",
        delivery_id,
    )


async def mark_attempt_failed(
    conn: asyncpg.Connection, delivery_id: int, error: str, give_up: bool, retry_in_s: float
) -> None:
    await conn.execute(
        "update notifications.deliveries set attempts = attempts + 1, last_error = $2,"
        " status = case when $3 then 'failed' else status end,"
        " next_attempt_at = now() + make_interval(secs => $4) where delivery_id = $1",
        delivery_id,
        error[:2000],
        give_up,
        retry_in_s,
    )


async def pending_count(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            "select count(*) from notifications.deliveries where status = 'pending'"
        )
    )
