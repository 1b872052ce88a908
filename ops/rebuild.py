"""The reports projections' rebuild, run from the operator's CLI against a target."""

from __future__ import annotations

from ops.target import NotFound, Target, connect, kafka_kwargs
from services.reports.service_layer.rebuild import (
    EventsTopicMissing,
    Progress,
    RebuildResult,
    rebuild_from_topic,
)


async def rebuild_reports(target: Target, batch_size: int, progress: Progress) -> RebuildResult:
    topic = target.kafka.events_topic
    async with connect(target.database_url) as conn:
        try:
            return await rebuild_from_topic(
                conn, kafka_kwargs(target.kafka), topic, batch_size, progress
            )
        except EventsTopicMissing:
            raise NotFound(f"the events topic {topic} does not exist") from None
