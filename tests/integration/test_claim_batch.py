"""``claim_batch`` against the real PostgreSQL: which events of a batch are new, with
duplicates inside the batch and from earlier batches, and when two transactions claim
the same streams at once (a rebalance overlap), each event is new in exactly one. Each
stream is applied contiguously: an event behind a gap (a dead-lettered predecessor) is
parked, and applied once its predecessor comes again (a redrive, in DLQ order)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest

from ops.stack import Stack
from shared.consumer import Claim, claim_batch
from tests.integration.helpers import close_pool, eventually

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Env:
    stream_id: str
    stream_version: int
    occurred_at: datetime = T0
    recorded_at: datetime = T0


def batch(*events: str) -> list[Env]:
    """``"a2"`` is stream a's version 2; ``"a2!"`` one that cannot be read."""
    return [Env(e[0], int(e[1:].rstrip("!"))) for e in events]


def readable(*events: str) -> list[bool]:
    return [not e.endswith("!") for e in events]


N, D, P = Claim.NEW, Claim.DUPLICATE, Claim.PARKED


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


async def claim(pool: asyncpg.Pool, name: str, *events: str) -> list[Claim]:
    async with pool.acquire() as conn, conn.transaction():
        claimed = await claim_batch(conn, name, batch(*events), readable(*events))
    return claimed.outcomes


async def versions(pool: asyncpg.Pool, name: str) -> dict[str, int]:
    rows = await pool.fetch(f'select stream_id, version from "{name}".applied_streams')
    return {r["stream_id"]: r["version"] for r in rows}


async def test_new_and_duplicate_events_of_a_batch(schema: tuple[asyncpg.Pool, str]) -> None:
    pool, name = schema
    assert await claim(pool, name, "a1", "a2", "b1") == [N, N, N]
    assert await versions(pool, name) == {"a": 2, "b": 1}

    got = await claim(pool, name, "a2", "a3", "b1", "c1", "c1", "a1", "c2")

    assert got == [D, N, D, N, D, D, N]
    assert await versions(pool, name) == {"a": 3, "b": 1, "c": 2}
    assert await claim(pool, name, "a3", "b1", "c2") == [D, D, D]
    assert await versions(pool, name) == {"a": 3, "b": 1, "c": 2}


async def claim_waiting(
    pool: asyncpg.Pool, second: asyncpg.Connection, name: str, *ids: str
) -> asyncio.Task[list[Claim]]:
    """``second`` claims ``ids`` in a transaction of its own; returns once that claim waits
    for a lock another transaction holds (its outcomes are the task's result)."""

    async def claim_second() -> list[Claim]:
        async with second.transaction():
            claimed = await claim_batch(second, name, batch(*ids))
            return claimed.outcomes

    waiting = asyncio.create_task(claim_second())
    pid = second.get_server_pid()

    async def blocked() -> bool:
        event = await pool.fetchval(
            "select wait_event_type from pg_stat_activity where pid = $1", pid
        )
        return event == "Lock"

    await eventually(blocked, what="the second claim waiting for the first")
    return waiting


@pytest.mark.parametrize("first_commits", [True, False])
async def test_a_concurrent_claim_waits_and_sees_what_the_other_applied(
    schema: tuple[asyncpg.Pool, str], first_commits: bool
) -> None:
    pool, name = schema
    assert await claim(pool, name, "e1") == [N]
    first = await pool.acquire()
    second = await pool.acquire()
    try:
        tx = first.transaction()
        await tx.start()
        claimed = await claim_batch(first, name, batch("d1", "d2", "e2"))
        assert claimed.outcomes == [N, N, N]

        waiting = await claim_waiting(pool, second, name, "d1", "d2", "d3", "e2", "f1")
        if first_commits:
            await tx.commit()
            assert await waiting == [D, D, N, D, N]
        else:
            await tx.rollback()
            assert await waiting == [N, N, N, N, N]
    finally:
        await pool.release(first)
        await pool.release(second)
    assert await versions(pool, name) == {"d": 3, "e": 2, "f": 1}


async def test_a_gap_within_a_batch_parks_the_rest_of_its_stream(
    schema: tuple[asyncpg.Pool, str],
) -> None:
    pool, name = schema
    assert await claim(pool, name, "a1", "a2", "a4", "b1", "a5") == [N, N, P, N, P]
    assert await versions(pool, name) == {"a": 2, "b": 1}


async def test_a_gap_across_batches_waits_for_the_missing_version(
    schema: tuple[asyncpg.Pool, str],
) -> None:
    pool, name = schema
    assert await claim(pool, name, "a1", "a2") == [N, N]
    assert await claim(pool, name, "a4", "a5", "b1") == [P, P, N]
    assert await versions(pool, name) == {"a": 2, "b": 1}

    assert await claim(pool, name, "a3", "a4", "a5") == [N, N, N]
    assert await versions(pool, name) == {"a": 5, "b": 1}


async def test_a_stream_first_seen_mid_way_is_applied_from_there(
    schema: tuple[asyncpg.Pool, str],
) -> None:
    pool, name = schema
    assert await claim(pool, name, "m7", "m8") == [N, N]
    assert await claim(pool, name, "m6", "m10") == [D, P]
    assert await versions(pool, name) == {"m": 8}


async def test_new_events_out_of_version_order_are_applied_in_order(
    schema: tuple[asyncpg.Pool, str],
) -> None:
    """Never from the relay or a redrive; a hand-made publish could."""
    pool, name = schema
    assert await claim(pool, name, "m1") == [N]
    async with pool.acquire() as conn, conn.transaction():
        claimed = await claim_batch(conn, name, batch("m3", "n1", "m2"))
    assert claimed.outcomes == [N, N, N] and claimed.out_of_order
    assert await versions(pool, name) == {"m": 3, "n": 1}


async def test_a_dead_lettered_event_parks_its_stream_and_its_redrive_applies_in_order(
    schema: tuple[asyncpg.Pool, str],
) -> None:
    """The regression of the silent redrive: a2 cannot be read (invalid payload, a newer
    schema version), so a3 and later a4 are parked behind it, not applied over it; the
    redrive of the DLQ in its order, with a2 readable now, applies all three."""
    pool, name = schema
    assert await claim(pool, name, "a1", "a2!", "a3", "b1") == [N, P, P, N]
    assert await claim(pool, name, "a4", "b2") == [P, N]
    assert await versions(pool, name) == {"a": 1, "b": 2}

    assert await claim(pool, name, "a2", "a3", "a4") == [N, N, N]
    assert await versions(pool, name) == {"a": 4, "b": 2}
    # The unreadable copy, redriven as well (e.g. --all): a duplicate now, not a dead letter.
    assert await claim(pool, name, "a2!", "a5") == [D, N]
    assert await versions(pool, name) == {"a": 5, "b": 2}


async def test_an_unreadable_first_event_records_its_stream_before_it(
    schema: tuple[asyncpg.Pool, str],
) -> None:
    pool, name = schema
    assert await claim(pool, name, "z1!") == [P]
    assert await versions(pool, name) == {"z": 0}
    assert await claim(pool, name, "z2") == [P]  # not taken for a first sight
    assert await claim(pool, name, "y3!", "y4") == [P, P]
    assert await versions(pool, name) == {"z": 0, "y": 2}

    assert await claim(pool, name, "z1", "z2", "y3", "y4") == [N, N, N, N]
    assert await versions(pool, name) == {"z": 2, "y": 4}


async def test_a_redelivered_range_whose_dead_letter_was_since_applied(
    schema: tuple[asyncpg.Pool, str],
) -> None:
    """The row stands past the batch's unreadable a2 (its fixed copy was applied): a3
    and a4 continue from it (the second statement)."""
    pool, name = schema
    assert await claim(pool, name, "a1", "a2") == [N, N]
    assert await claim(pool, name, "a1", "a2!", "a3", "a4", "a6") == [D, D, N, N, P]
    assert await versions(pool, name) == {"a": 4}


async def test_a_concurrent_claim_of_a_parked_stream_compares_with_the_committed_version(
    schema: tuple[asyncpg.Pool, str],
) -> None:
    pool, name = schema
    first = await pool.acquire()
    second = await pool.acquire()
    try:
        tx = first.transaction()
        await tx.start()
        claimed = await claim_batch(first, name, batch("g1", "g2", "h1"), [True, False, True])
        assert claimed.outcomes == [N, P, N]

        waiting = await claim_waiting(pool, second, name, "g2", "g3", "h3", "h2")
        await tx.commit()
        # g stood at 1 (g2 unreadable), h at 1: both continue from the committed rows.
        assert await waiting == [N, N, N, N]
    finally:
        await pool.release(first)
        await pool.release(second)
    assert await versions(pool, name) == {"g": 3, "h": 3}
