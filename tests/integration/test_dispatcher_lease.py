"""A dispatcher starts no send in the second half of its claim's lease: a send that
outlived the lease could go out twice, once here and once by whoever claims the expired
row. The rows it did not start go back to ``pending`` and are sent by the next round."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import CollectorRegistry

from ops.stack import Stack
from services.notifications.adapters.channels import Outgoing, Recorded
from services.notifications.adapters.contacts import ContactsClient
from services.notifications.adapters.metrics import NotificationsMetrics
from services.notifications.bootstrap import MIGRATIONS
from services.notifications.service_layer.dispatcher import Dispatcher
from shared.clock import FrozenClock
from shared.postgres import migrate
from tests.integration.helpers import close_pool


class SlowLogChannel:
    """Each send takes two seconds of the frozen clock."""

    name = "log"

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.sent: list[int] = []

    async def send(self, message: Outgoing, recorded: Recorded | None = None) -> None:
        self.sent.append(message.delivery_id)
        self.clock.advance(timedelta(seconds=2))

    async def close(self) -> None:
        return None


async def test_no_send_starts_in_the_second_half_of_the_lease(stack: Stack) -> None:
    # A database of its own: with the clock ten years ahead, every pending row and every
    # lease in the stack's database is due, and the live notifications service's rows
    # would be claimed here (and this test's rows there).
    database = f"lease_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'create database "{database}"')
    pool = await asyncpg.create_pool(
        stack.database_url.rsplit("/", 1)[0] + f"/{database}", min_size=1, max_size=4
    )
    try:
        await migrate(pool, "notifications", MIGRATIONS)
        clock = FrozenClock(datetime.now(UTC) + timedelta(days=3650))
        ref = f"lease-{uuid.uuid4().hex}"
        await pool.execute(
            """
            insert into notifications.deliveries
                (trigger_event_id, trigger, recipient, channel, subject, body_text,
                 body_html, priority, next_attempt_at, trigger_ref)
            select gen_random_uuid(), 'meeting_scheduled', 'p' || i, 'log', 'Thông báo',
                   'Nội dung', '<p>Nội dung</p>', 'urgent', $2, $1
            from generate_series(1, 6) i
            """,
            ref,
            clock.now() - timedelta(days=3650),
        )
        channel = SlowLogChannel(clock)
        dispatcher = Dispatcher(
            pool,
            {"log": channel},
            ContactsClient("http://127.0.0.1:9", token=lambda: "unused"),  # log: no look-up
            NotificationsMetrics(CollectorRegistry()),
            clock,
            asyncio.Event(),
            batch=10,  # more than there are: no batch is claimed ahead
            concurrency=1,
            lease_s=10,
        )

        async def rows() -> list[asyncpg.Record]:
            return await pool.fetch(
                "select delivery_id, status, attempts from notifications.deliveries"
                " where trigger_ref = $1 order by delivery_id",
                ref,
            )

        ids = [r["delivery_id"] for r in await rows()]
        # Sends start at 0, 2 and 4 s; at 6 s more than half of the 10 s lease is gone.
        assert await dispatcher.dispatch_once() == 6
        assert channel.sent == ids[:3]
        first = await rows()
        assert [r["status"] for r in first] == ["sent"] * 3 + ["pending"] * 3
        assert [r["attempts"] for r in first[3:]] == [0, 0, 0]  # a release is no attempt

        assert await dispatcher.dispatch_once() == 3
        assert channel.sent == ids  # each exactly once
        assert [r["status"] for r in await rows()] == ["sent"] * 6
        await dispatcher.stop()
    finally:
        await close_pool(pool)
        await admin.execute(f'drop database "{database}"')
        await admin.close()
