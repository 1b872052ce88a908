"""``claim_batch`` against the real PostgreSQL: which events of a batch are new, with
duplicates inside the batch and from earlier batches, and when two transactions claim
the same streams at once (a rebalance overlap), each event is new in exactly one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest

from ops.stack import Stack
from shared.consumer import claim_batch
from tests.integration.helpers import close_pool, eventually

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Env:
    stream_id: str
    stream_version: int
    occurred_at: datetime = T0
    recorded_at: datetime = T0


def batch(*events: str) -> list[Env]:
    """``"a2"`` is stream a's version 2."""
    return [Env(e[0], int(e[1:])) for e in events]


@pytest.fixture()
async def schema(stack: Stack) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    name = f"claim_{uuid.uuid4().hex[:12]}"
    pool = await asyncpg.create_pool(stack.database_url, min_size=2, max_size=4)
    assert pool is not None
    await pool.execute(
        f'create schema "{name}"; create table "{name}".applied_streams ('
        " stream_id text primary key, version integer not null,"
        " applied_at timestamptz not null default now())"
    )
    try:
        yield pool, name
    finally:
        await pool.execute(f'drop schema "{name}" cascade')
        await close_pool(pool)


async def claim(pool: asyncpg.Pool, name: str, envelopes: list[Env]) -> list[bool]:
    async with pool.acquire() as conn, conn.transaction():
        return await claim_batch(conn, name, envelopes)


async def versions(pool: asyncpg.Pool, name: str) -> dict[str, int]:
    rows = await pool.fetch(f'select stream_id, version from "{name}".applied_streams')
    return {r["stream_id"]: r["version"] for r in rows}


async def test_new_and_duplicate_events_of_a_batch(schema: tuple[asyncpg.Pool, str]) -> None:
    pool, name = schema
    assert await claim(pool, name, batch("a1", "a2", "b1")) == [True, True, True]
    assert await versions(pool, name) == {"a": 2, "b": 1}

    got = await claim(pool, name, batch("a2", "a3", "b1", "c1", "c1", "a1", "c2"))

    assert got == [False, True, False, True, False, False, True]
    assert await versions(pool, name) == {"a": 3, "b": 1, "c": 2}
    assert await claim(pool, name, batch("a3", "b1", "c2")) == [False, False, False]
    assert await versions(pool, name) == {"a": 3, "b": 1, "c": 2}


@pytest.mark.parametrize("first_commits", [True, False])
async def test_a_concurrent_claim_waits_and_sees_what_the_other_applied(
    schema: tuple[asyncpg.Pool, str], first_commits: bool
) -> None:
    pool, name = schema
    assert await claim(pool, name, batch("e1")) == [True]
    first = await pool.acquire()
    second = await pool.acquire()
    try:
        tx = first.transaction()
        await tx.start()
        assert await claim_batch(first, name, batch("d1", "d2", "e2")) == [True, True, True]

        async def claim_second() -> list[bool]:
            async with second.transaction():
                return await claim_batch(second, name, batch("d1", "d2", "d3", "e2", "f1"))

        waiting = asyncio.create_task(claim_second())
        pid = second.get_server_pid()

        async def blocked() -> bool:
            event = await pool.fetchval(
                "select wait_event_type from pg_stat_activity where pid = $1", pid
            )
            return event == "Lock"

        await eventually(blocked, what="the second claim waiting for the first")
        if first_commits:
            await tx.commit()
            assert await waiting == [False, False, True, False, True]
        else:
            await tx.rollback()
            assert await waiting == [True, True, True, True, True]
    finally:
        await pool.release(first)
        await pool.release(second)
    assert await versions(pool, name) == {"d": 3, "e": 2, "f": 1}
