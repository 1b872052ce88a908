"""Kafka wiring shared by the services: security settings, topics, batched sends, and
consumer-lag metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from faststream.security import (
    BaseSecurity,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)
from prometheus_client import CollectorRegistry, Gauge

from shared.logs import get_logger
from shared.settings import KafkaSettings
from shared.tasks import cancel

log = get_logger(__name__)

_PARTITIONER = DefaultPartitioner()  # what AIOKafkaProducer.send() uses for a keyed record


async def send_in_record_batches(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[Mapping[str, Any]],
    partitions: list[int],
    partition_of: dict[bytes, int],
) -> list[asyncio.Future[Any]]:
    """Send keyed records (``key``, ``value``, optional ``headers``) in one record batch per
    partition, filled in order and sent when full; the futures of the sends. One ``send()``
    per record hashes its key in pure Python and makes a future per record, the larger
    part of the cost. The partition is the one ``send()`` would choose among
    ``partitions``; ``partition_of`` remembers it per key, for as long as the caller keeps
    the same partitions."""
    open_batches: dict[int, BatchBuilder] = {}
    sent = []
    for record in records:
        key = record["key"]
        partition = partition_of.get(key)
        if partition is None:
            partition = partition_of[key] = _PARTITIONER(key, partitions, partitions)
        batch = open_batches.get(partition)
        if batch is None:
            batch = open_batches[partition] = producer.create_batch()
        while batch.append(**record, timestamp=None) is None:  # full: send it, start another
            sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = open_batches[partition] = producer.create_batch()
    for partition, batch in open_batches.items():
        sent.append(await producer.send_batch(batch, topic, partition=partition))
    return sent


def _ssl_context(settings: KafkaSettings):  # type: ignore[no-untyped-def]
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    return create_ssl_context(
        cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
    )


def faststream_security(settings: KafkaSettings) -> BaseSecurity | None:
    """The FastStream security object for TLS and SASL (PLAIN or SCRAM) settings."""
    ssl_context = _ssl_context(settings)
    if settings.security_protocol in ("PLAINTEXT", "SSL"):
        return BaseSecurity(ssl_context=ssl_context) if ssl_context else None
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    cls = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }[settings.sasl_mechanism or "PLAIN"]
    return cls(  # type: ignore[abstract]
        username=settings.sasl_username or "", password=password, ssl_context=ssl_context
    )


def aiokafka_client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection keyword arguments for raw aiokafka clients (relay, admin, lag monitor)."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    ssl_context = _ssl_context(settings)
    if ssl_context is not None:
        kwargs["ssl_context"] = ssl_context
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return kwargs


# The events topic is the history projections rebuild from, and its DLQ holds what parked
# streams wait for (docs/scaling.md): both kept for ever.
EVENTS_TOPIC_CONFIG = {"retention.ms": "-1", "retention.bytes": "-1"}


def topic_spec(settings: KafkaSettings, name: str, partitions: int | None = None) -> NewTopic:
    """A topic as the services create it: the configured partitions (or ``partitions``)
    and replication factor; the events topic and its DLQ kept for ever."""
    kept = name in (settings.events_topic, settings.events_dlq_topic)
    return NewTopic(
        name,
        partitions or settings.partitions,
        settings.replication_factor,
        topic_configs=dict(EVENTS_TOPIC_CONFIG) if kept else {},
    )


async def ensure_topics(settings: KafkaSettings, topics: Iterable[str]) -> None:
    """Create the topics that do not exist yet, with the configured partitions."""
    if not settings.create_topics:
        return
    admin = AIOKafkaAdminClient(**aiokafka_client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic_spec(settings, t) for t in missing])
            log.info("kafka.topics_created", topics=missing)
    finally:
        await admin.close()


async def topic_partitions(
    admin: AIOKafkaAdminClient, topics: list[str]
) -> dict[str, list[int] | None]:
    """Each topic's partition numbers from the broker, None for a topic that does not exist.

    (Asked through the admin API: a consumer that subscribed to nothing knows no topic's
    partitions, its `partitions_for_topic` answers None.)"""
    found: dict[str, list[int] | None] = dict.fromkeys(topics)
    for description in await admin.describe_topics(list(dict.fromkeys(topics))):
        if description["error_code"] == 0:
            found[description["topic"]] = sorted(p["partition"] for p in description["partitions"])
    return found


RETENTION_KEYS = ("retention.ms", "retention.bytes")


class TopicConfigUnreadable(RuntimeError):
    """The broker answered a topic's configuration with an error (no DescribeConfigs
    permission, or no such topic)."""


async def topic_retention(settings: KafkaSettings, topic: str) -> dict[str, int]:
    """The topic's ``retention.ms`` and ``retention.bytes`` as the broker applies them
    (-1: unlimited). Raises ``TopicConfigUnreadable`` with the broker's error: aiokafka
    returns an authorisation failure as an error code, not an exception."""
    admin = AIOKafkaAdminClient(**aiokafka_client_kwargs(settings))
    await admin.start()
    try:
        wanted = ConfigResource(ConfigResourceType.TOPIC, topic, dict.fromkeys(RETENTION_KEYS))
        responses = await admin.describe_configs([wanted])
    finally:
        await admin.close()
    found: dict[str, int] = {}
    for response in responses:
        for error_code, error_message, _, _, entries in (r[:5] for r in response.resources):
            if error_code != 0:
                raise TopicConfigUnreadable(f"{topic}: error {error_code} {error_message or ''}")
            found |= {e[0]: int(e[1]) for e in entries if e[0] in RETENTION_KEYS}
    return found


def lag_per_partition(
    ends: dict[TopicPartition, int], committed: dict[TopicPartition, Any]
) -> dict[tuple[str, int], int]:
    """End offset minus the group's committed offset (0 when it never committed)."""
    result = {}
    for tp, end in ends.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        result[(tp.topic, tp.partition)] = max(end - done, 0)
    return result


class ConsumerLagMonitor:
    """Publishes each partition's lag (end offset minus the group's committed offset), and
    how many records the service's dead-letter topic holds.

    It reads the committed offsets through the admin API rather than from the running
    consumer, so the figure is what a restart would resume from: the honest lag.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        topics: Iterable[str],
        registry: CollectorRegistry,
        interval_s: float = 5.0,
        dlq_topic: str | None = None,
    ) -> None:
        self._settings = settings
        self._group_id = group_id
        self._topics = list(topics)
        self._dlq_topic = dlq_topic
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.lag = Gauge(
            "kafka_consumer_lag_messages",
            "Messages in the partition not yet committed by the consumer group.",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.dlq_retained = Gauge(
            "chibo_dlq_retained_records",
            "Records the dead-letter topic holds (end minus earliest offset, over its"
            " partitions): the DLQ's size within its retention, redriven ones included.",
            ["topic"],
            registry=registry,
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lag-monitor-{self._group_id}")

    async def stop(self) -> None:
        await cancel(self._task)

    async def measure_once(self) -> dict[tuple[str, int], int]:
        kwargs = aiokafka_client_kwargs(self._settings)
        admin = AIOKafkaAdminClient(**kwargs)
        consumer = AIOKafkaConsumer(**kwargs, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        try:
            # One look-up of the partitions and one of the end offsets, for the consumed
            # topics and the DLQ together.
            dlq = [self._dlq_topic] if self._dlq_topic is not None else []
            partitions = await topic_partitions(admin, self._topics + dlq)
            tps = {t: [TopicPartition(t, p) for p in partitions[t] or ()] for t in partitions}
            consumed = [tp for t in self._topics for tp in tps[t]]
            held = [tp for t in dlq for tp in tps[t]]  # empty until the DLQ is created
            ends = await consumer.end_offsets(consumed + held)
            committed = await admin.list_consumer_group_offsets(self._group_id)
            result = lag_per_partition({tp: ends[tp] for tp in consumed}, committed)
            for (topic, partition), lag in result.items():
                self.lag.labels(self._group_id, topic, str(partition)).set(lag)
            if held:
                starts = await consumer.beginning_offsets(held)
                self.dlq_retained.labels(dlq[0]).set(sum(ends[tp] - starts[tp] for tp in held))
            return result
        finally:
            await consumer.stop()
            await admin.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.measure_once()
            except Exception as exc:  # the broker may be down; the next round tries again
                log.warning("kafka.lag_measure_failed", error=str(exc))
            await asyncio.sleep(self._interval_s)
