"""PostgreSQL wiring shared by the services: the pool, a small migration runner, and
sets of rows sent as one JSON document."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from shared.logs import get_logger

log = get_logger(__name__)


# The consumers' claim (shared/consumer.py, ``returning ... old.version, new.version``)
# is PostgreSQL 18 syntax. The migrations run on older servers, so without this check a
# service on one starts, reports ready, and then fails every batch for ever.
REQUIRED_SERVER_VERSION_NUM = 180000
REQUIRED_SERVER_VERSION = "18"


class UnsupportedPostgres(RuntimeError):
    """The server is older than PostgreSQL 18: a service refuses to start on it."""

    def __init__(self, version_num: int, version: str) -> None:
        super().__init__(
            f"PostgreSQL {version} (server_version_num {version_num}) is not supported:"
            f" chibo needs PostgreSQL {REQUIRED_SERVER_VERSION} or newer"
            " (RETURNING old/new in the consumers' claim)"
        )
        self.version_num = version_num
        self.version = version


def require_supported_server(version_num: int, version: str | None = None) -> None:
    """`UnsupportedPostgres` unless ``version_num`` (``server_version_num``) is 18 or newer."""
    if version_num < REQUIRED_SERVER_VERSION_NUM:
        major, minor = divmod(version_num, 10000)
        raise UnsupportedPostgres(version_num, version or f"{major}.{minor}")


async def check_server_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The server's ``server_version_num``, or `UnsupportedPostgres` when it is too old."""
    row = await conn.fetchrow(
        "select current_setting('server_version_num')::int as num,"
        " current_setting('server_version') as version"
    )
    assert row is not None
    require_supported_server(row["num"], row["version"])
    return int(row["num"])


async def create_pool(
    dsn: str, min_size: int = 1, max_size: int = 10, *, reset_session: bool = True
) -> asyncpg.Pool:
    """``reset_session=False`` is for a service whose pooled connections never leave session
    state behind (no SET, LISTEN, held cursor or advisory lock outlives its use): a released
    connection then skips asyncpg's reset query (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN
    *, RESET ALL), a round trip per release. A transaction left open is still rolled back.

    Raises `UnsupportedPostgres` on a server older than PostgreSQL 18, so that a service
    refuses to start there rather than report ready and fail every batch."""
    reset = None if reset_session else _keep_session
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, reset=reset)
    assert pool is not None
    try:
        await check_server_version(pool)
    except UnsupportedPostgres as exc:
        log.error(
            "postgres.unsupported_version",
            version=exc.version,
            version_num=exc.version_num,
            required=REQUIRED_SERVER_VERSION,
        )
        await pool.close()
        raise
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset when the session has nothing to reset: asyncpg has already rolled
    back a transaction left open before it calls this."""


# A set of rows goes to PostgreSQL as one parameter: a JSON array of rows, each an array
# of its columns. asyncpg encodes an array parameter value by value, with an ABC check
# on each (about 0.5 us a value on this machine); orjson writes the whole set for about a
# tenth of that, and PostgreSQL reads it once with jsonb_array_elements.


def json_rows(rows: Sequence[Sequence[Any]]) -> str:
    """The parameter for ``rows_of``. Datetimes keep their offset (a naive one is UTC, as
    asyncpg takes it)."""
    return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()


def rows_of(columns: str) -> str:
    """A FROM item reading parameter ``$1`` (``json_rows``) as a table of ``columns``
    (``"name type, ..."``, as in a table's definition); a ``jsonb`` column stays JSON.

    ``rows_of("id text, at timestamptz")`` is ``(select (r->>0)::text as id,
    (r->>1)::timestamptz as at from jsonb_array_elements($1::jsonb) as j(r))``."""
    readers = []
    for i, column in enumerate(columns.split(",")):
        name, type_ = column.split()
        # JSON null is SQL null in every column, a jsonb one too.
        read = f"nullif(r->{i}, 'null')" if type_ == "jsonb" else f"(r->>{i})::{type_}"
        readers.append(f"{read} as {name}")
    return f"(select {', '.join(readers)} from jsonb_array_elements($1::jsonb) as j(r))"


async def migrate(pool: asyncpg.Pool, schema: str, migrations_dir: Path) -> list[str]:
    """Apply the numbered ``*.sql`` files of one service's schema, each exactly once.

    An advisory lock serialises replicas that start together; each file runs in its
    own transaction with its bookkeeping row, so a failed migration leaves no trace.
    """
    migrations = await asyncio.to_thread(_read_migrations, migrations_dir)
    lock_key = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True)
    applied: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("select pg_advisory_lock($1)", lock_key)
        try:
            await conn.execute(f'create schema if not exists "{schema}"')
            await conn.execute(
                f'create table if not exists "{schema}".schema_migrations ('
                " name text primary key, applied_at timestamptz not null default now())"
            )
            done = {
                r["name"]
                for r in await conn.fetch(f'select name from "{schema}".schema_migrations')
            }
            for name, sql in migrations:
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        f'insert into "{schema}".schema_migrations(name) values ($1)', name
                    )
                applied.append(name)
                log.info("postgres.migration_applied", schema=schema, migration=name)
        finally:
            await conn.execute("select pg_advisory_unlock($1)", lock_key)
    return applied


def _read_migrations(folder: Path) -> list[tuple[str, str]]:
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.sql"))]
