"""The reports projections' rebuild, run from the operator's CLI against a target."""

from __future__ import annotations

from aiokafka import TopicPartition

from ops.target import NotFound, Target, connect, kafka_clients
from services.reports.service_layer.rebuild import Progress, RebuildResult, rebuild
from shared.kafka import topic_partitions


async def rebuild_reports(target: Target, batch_size: int, progress: Progress) -> RebuildResult:
    topic = target.kafka.events_topic
    async with kafka_clients(target.kafka) as (admin, consumer):
        found = (await topic_partitions(admin, [topic]))[topic]
        if found is None:
            raise NotFound(f"the events topic {topic} does not exist")
        partitions = [TopicPartition(topic, p) for p in found]
        consumer.assign(partitions)
        async with connect(target.database_url) as conn:
            return await rebuild(conn, consumer, partitions, batch_size, progress)
