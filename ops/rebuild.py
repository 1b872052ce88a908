"""The reports projections' rebuild, run from the operator's CLI against a target."""

from __future__ import annotations

import asyncpg

from ops.target import NotFound, Target, Unreachable, connect, kafka_kwargs, redact_url
from services.reports.bootstrap import MIGRATIONS
from services.reports.service_layer.rebuild import (
    EventsTopicMissing,
    Progress,
    RebuildResult,
    rebuild_from_topic,
)
from shared.postgres import migrate


async def rebuild_reports(
    target: Target,
    batch_size: int,
    progress: Progress,
    *,
    if_outdated: bool = False,
    allow_downgrade: bool = False,
    run_migrations: bool = False,
) -> tuple[list[str], RebuildResult]:
    """The migrations applied, and the rebuild's result. ``run_migrations``: apply the
    reports schema's migrations first, as a replica does at start (the same advisory
    lock), so that a rebuild run before a rolling update finds the tables the new
    projection code writes."""
    topic = target.kafka.events_topic
    migrations = await _migrate(target.database_url) if run_migrations else []
    async with connect(target.database_url) as conn:
        try:
            return migrations, await rebuild_from_topic(
                conn,
                kafka_kwargs(target.kafka),
                topic,
                batch_size,
                progress,
                only_if_outdated=if_outdated,
                allow_downgrade=allow_downgrade,
            )
        except EventsTopicMissing:
            raise NotFound(f"the events topic {topic} does not exist") from None


async def _migrate(database_url: str) -> list[str]:
    try:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, timeout=5)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        reason = str(exc) or type(exc).__name__
        raise Unreachable("PostgreSQL", redact_url(database_url), reason) from exc
    try:
        return await migrate(pool, "reports", MIGRATIONS)
    finally:
        await pool.close()
