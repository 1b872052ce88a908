"""The start-up version check against the test stack's real PostgreSQL (18): it passes,
and the pool every service starts with comes up through it."""

from __future__ import annotations

import asyncpg

from ops.stack import Stack
from ops.target import connect
from shared.postgres import REQUIRED_SERVER_VERSION_NUM, check_server_version, create_pool


async def test_the_stacks_postgres_passes_the_check(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        version_num = await check_server_version(conn)
        assert version_num == int(await conn.fetchval("show server_version_num"))
    finally:
        await conn.close()
    assert version_num >= REQUIRED_SERVER_VERSION_NUM


async def test_a_service_pool_and_the_cli_connection_come_up(stack: Stack) -> None:
    pool = await create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        assert await pool.fetchval("select 1") == 1
    finally:
        await pool.close()
    async with connect(stack.database_url) as conn:
        assert await conn.fetchval("select 1") == 1
