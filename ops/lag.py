"""Lag, for `chibo lag`: how far each consumer group, the relay and the DLQs are behind.

- consumer groups: end offset minus the group's committed offset, per partition, the
  figure of the services' own metric (`shared.kafka.ConsumerLagMonitor`);
- the relay: events committed to meetings.events but not yet published, and the age of
  the oldest, past meetings.relay_checkpoint in the relay's gap-safe order (the relay's
  own `_LAG` query);
- the DLQs: how many records each dead-letter topic holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from ops.target import (
    KAFKA_TIMEOUT_S,
    Target,
    connect,
    kafka_clients,
    probe_kafka,
    with_kafka,
)
from services.meetings.adapters.relay import _LAG, DEFAULT_RELAY_NAME
from shared.kafka import lag_per_partition, topic_partitions
from shared.settings import KafkaSettings

# The services' consumer groups (each service's bootstrap.py) and the topics they read.
INTAKE_GROUP = "chibo-meetings-intake"
REPORTS_GROUP = "chibo-reports"
NOTIFICATIONS_GROUP = "chibo-notifications"
_LAG_CAP = 100_000  # _LAG counts at most this many pending events


def consumer_groups(settings: KafkaSettings) -> dict[str, list[str]]:
    return {
        INTAKE_GROUP: [settings.commands_topic],
        REPORTS_GROUP: [settings.events_topic],
        NOTIFICATIONS_GROUP: [settings.events_topic],
    }


@dataclass(frozen=True)
class GroupLag:
    group: str
    partitions: dict[tuple[str, int], int]  # (topic, partition) -> lag

    @property
    def total(self) -> int:
        return sum(self.partitions.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "total": self.total,
            "partitions": [
                {"topic": t, "partition": p, "lag": lag}
                for (t, p), lag in sorted(self.partitions.items())
            ],
        }


@dataclass(frozen=True)
class RelayLag:
    relay: str
    transaction_id: int
    global_position: int
    checkpoint_at: datetime | None
    pending_events: int
    oldest_pending_s: float

    @property
    def capped(self) -> bool:
        return self.pending_events >= _LAG_CAP

    def as_json(self) -> dict[str, Any]:
        return {
            "relay": self.relay,
            "checkpoint": {
                "transaction_id": self.transaction_id,
                "global_position": self.global_position,
                "updated_at": self.checkpoint_at.isoformat() if self.checkpoint_at else None,
            },
            "pending_events": self.pending_events,
            "pending_events_capped": self.capped,
            "oldest_pending_s": round(self.oldest_pending_s, 3),
        }


@dataclass(frozen=True)
class DlqSize:
    topic: str
    records: int

    def as_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "records": self.records}


@dataclass(frozen=True)
class LagReport:
    groups: list[GroupLag]
    relays: list[RelayLag]
    dlqs: list[DlqSize]

    def as_json(self) -> dict[str, Any]:
        return {
            "consumer_groups": [g.as_json() for g in self.groups],
            "relay": [r.as_json() for r in self.relays],
            "dlq": [d.as_json() for d in self.dlqs],
        }


async def relay_lag(database_url: str) -> list[RelayLag]:
    """Each relay's pending events past its checkpoint (one relay unless renamed)."""
    async with connect(database_url) as conn:
        checkpoints = await conn.fetch(
            "select relay_name, transaction_id::text::bigint as txid, global_position,"
            " updated_at from meetings.relay_checkpoint order by relay_name"
        )
        if not checkpoints:  # the relay has not published anything yet
            checkpoints = [
                {
                    "relay_name": DEFAULT_RELAY_NAME,
                    "txid": 0,
                    "global_position": 0,
                    "updated_at": None,
                }
            ]
        result = []
        for cp in checkpoints:
            row = await conn.fetchrow(_LAG, str(cp["txid"]), cp["global_position"])
            result.append(
                RelayLag(
                    relay=cp["relay_name"],
                    transaction_id=cp["txid"],
                    global_position=cp["global_position"],
                    checkpoint_at=cp["updated_at"],
                    pending_events=int(row["events"]),
                    oldest_pending_s=float(row["seconds"] or 0.0),
                )
            )
        return result


async def kafka_lag(settings: KafkaSettings) -> tuple[list[GroupLag], list[DlqSize]]:
    """Every group's lag and every DLQ's size, from one admin client and one group-less
    consumer. (`ConsumerLagMonitor.measure_once` computes the same figure, but asks an
    unsubscribed consumer for the topics' partitions, which it does not know: it finds
    none. So the partitions come from the admin API here.)"""
    groups = consumer_groups(settings)
    dlqs = [settings.dlq_topic, settings.events_dlq_topic]

    async def measure() -> tuple[list[GroupLag], list[DlqSize]]:
        async with kafka_clients(settings) as (admin, consumer):
            topics = [t for ts in groups.values() for t in ts] + dlqs
            partitions = await topic_partitions(admin, topics)

            def tps(topic: str) -> list[TopicPartition]:
                return [TopicPartition(topic, p) for p in partitions[topic] or ()]

            group_lags = []
            for group, group_topics in groups.items():
                wanted = [tp for t in group_topics for tp in tps(t)]
                ends = await consumer.end_offsets(wanted) if wanted else {}
                committed = await admin.list_consumer_group_offsets(group)
                group_lags.append(GroupLag(group, lag_per_partition(ends, committed)))
            sizes = []
            for topic in dlqs:
                wanted = tps(topic)
                begins = await consumer.beginning_offsets(wanted) if wanted else {}
                ends = await consumer.end_offsets(wanted) if wanted else {}
                sizes.append(DlqSize(topic, sum(ends[tp] - begins[tp] for tp in wanted)))
            return group_lags, sizes

    return await with_kafka(settings, measure(), KAFKA_TIMEOUT_S * 3)


async def measure(target: Target) -> LagReport:
    """The whole picture; `Unreachable` (naming Kafka or PostgreSQL) if either is down."""
    await probe_kafka(target.kafka)
    relays = await relay_lag(target.database_url)
    groups, dlqs = await kafka_lag(target.kafka)
    return LagReport(groups=groups, relays=relays, dlqs=dlqs)
