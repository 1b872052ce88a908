"""Re-publishing the event store, for `chibo events republish` (docs/operations.md,
"Re-publishing the events from the event store").

The event store (meetings.events) is the system of record; the events topic is the copy
the relay makes of it. When that copy is gone (the Kafka cluster was lost and recreated
empty) or no longer whole (retention removed its first events), the relay is made to
publish the whole store again: its checkpoint is reset to the start, and the next relay
to lead publishes every event in its gap-safe order, so each stream in version order.

The relay loads its checkpoint once, when it starts leading, and writes it after every
batch: a reset made beside a leading relay would be overwritten, or ignored until its
next leadership. So the reset is made holding the relay's advisory lock (RELAY_LOCK_KEY),
and refused while a relay holds it.

With a new topic (`--to-topic`: the old one no longer starts at offset 0, so a reports
rebuild needs a fresh one), the topic is created first, under the lock, with the old
one's partition count and unlimited retention; the services then run with
KAFKA_EVENTS_TOPIC naming it. A meetings replica standing by would take the lock as soon
as it is released and re-publish into the topic it was started with: so with
`--to-topic` the command also refuses while any relay is connected (every replica's
relay connection is named RELAY_APPLICATION_NAME in pg_stat_activity).

Afterwards the consumers drop what they already applied (a version at or below their
stream's recorded one changes nothing); on a topic their group never read they start
from its earliest offset (auto_offset_reset="earliest" in each service's bootstrap.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAlreadyExistsError, for_code

from ops.target import KAFKA_TIMEOUT_S, Target, connect, kafka_clients, kafka_kwargs, with_kafka
from services.meetings.adapters.relay import (
    DEFAULT_RELAY_NAME,
    RELAY_APPLICATION_NAME,
    RELAY_LOCK_KEY,
)
from shared.kafka import topic_partitions, topic_retention, topic_spec
from shared.settings import KafkaSettings

CLI_APPLICATION_NAME = "chibo-events-republish"
LOCK_WAIT_S = 5.0  # a replica just stopped may take a moment to close its connection
LOCK_RETRY_S = 0.25
TOPIC_CREATE_TIMEOUT_S = 30.0
STOP_REPLICAS = "stop every meetings replica first"
RELAY_LEADING = (
    f"a meetings relay is publishing (it holds the relay lock): {STOP_REPLICAS}, "
    "then run this again; nothing was changed"
)


class Refused(RuntimeError):
    """Nothing was changed: a relay runs, or the new topic cannot be used."""


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: list[int] | None  # None: the topic does not exist
    records: int = 0  # end minus earliest offset, over the partitions
    first_offsets: dict[int, int] = field(default_factory=dict)  # those above 0 only
    retention: dict[str, int] = field(default_factory=dict)  # retention.ms/bytes, -1 = none

    @property
    def exists(self) -> bool:
        return self.partitions is not None

    @property
    def truncated(self) -> bool:
        """It no longer starts at offset 0: a rebuild from it stops (HistoryTruncated)."""
        return bool(self.first_offsets)

    @property
    def finite_retention(self) -> dict[str, int]:
        return {k: v for k, v in self.retention.items() if v != -1}

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exists": self.exists,
            "partitions": len(self.partitions) if self.partitions is not None else None,
            "records": self.records,
            "partitions_not_starting_at_0": {str(p): o for p, o in self.first_offsets.items()},
            "retention": self.retention,
        }


@dataclass(frozen=True)
class RepublishPlan:
    relay: str
    events: int  # in the event store
    unpublished: int  # past the relay's checkpoint: never published yet
    checkpoint_position: int | None  # the global position it stands at; None: no row
    topic: TopicState  # the topic the services use now (KAFKA_EVENTS_TOPIC)
    new_topic: TopicState | None  # --to-topic
    new_topic_partitions: int  # the partition count it gets when created
    relay_leading: bool  # the lock was held when the plan was made
    relays_connected: int  # meetings replicas' relay connections standing by (not leading)
    create_topics: bool  # KAFKA_CREATE_TOPICS: meetings creates a missing topic at start

    @property
    def destination(self) -> str:
        return self.new_topic.name if self.new_topic is not None else self.topic.name

    @property
    def settings(self) -> dict[str, str]:
        """What the services (and the CLI) must be given to publish and read there."""
        return {"KAFKA_EVENTS_TOPIC": self.new_topic.name} if self.new_topic else {}

    def refusal(self) -> str | None:
        """Why the command would change nothing, or None."""
        if self.relay_leading:
            return RELAY_LEADING
        if self.new_topic is not None:
            if self.relays_connected:
                return (
                    f"{self.relays_connected} meetings replica(s) still connected, standing by "
                    f"to relay: one would take over and publish into {self.topic.name}, not "
                    f"{self.new_topic.name}; {STOP_REPLICAS}"
                )
            if self.new_topic.records:
                return (
                    f"{self.new_topic.name} already holds {self.new_topic.records} record(s): "
                    "name a topic that does not exist yet"
                )
            if self.new_topic.finite_retention:
                return (
                    f"{self.new_topic.name} exists with a finite retention "
                    f"{self.new_topic.finite_retention}: name a topic that does not exist yet"
                )
        return None

    def warnings(self) -> list[str]:
        found = []
        if self.new_topic is None:
            if self.topic.truncated:
                found.append(
                    f"{self.topic.name} no longer starts at offset 0 (partitions "
                    f"{self.topic.first_offsets}): the consumers get every event back, but "
                    "a reports rebuild from it still stops (HistoryTruncated); to make one "
                    "possible, re-publish into a new topic: --to-topic NAME"
                )
            if self.topic.finite_retention:
                found.append(
                    f"{self.topic.name} keeps its records for a limited time or size "
                    f"{self.topic.finite_retention}: set retention.ms=-1,retention.bytes=-1 "
                    "(runbook EventsHistoryCanExpire)"
                )
            if not self.topic.exists:
                found.append(
                    f"{self.topic.name} does not exist: meetings creates it at start, with "
                    "unlimited retention"
                    if self.create_topics
                    else f"{self.topic.name} does not exist and KAFKA_CREATE_TOPICS is off: "
                    "create it as docs/scaling.md says (retention.ms=-1) before meetings starts"
                )
            if self.relays_connected:
                found.append(
                    f"{self.relays_connected} meetings replica(s) standing by: one takes the "
                    "relay over once this is done and publishes everything again at once"
                )
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "relay": self.relay,
            "events": self.events,
            "unpublished_before": self.unpublished,
            "checkpoint_position_before": self.checkpoint_position,
            "topic": self.topic.as_json(),
            "new_topic": self.new_topic.as_json() if self.new_topic else None,
            "new_topic_partitions": self.new_topic_partitions if self.new_topic else None,
            "publishes_to": self.destination,
            "settings": self.settings,
            "relay_leading": self.relay_leading,
            "relays_connected": self.relays_connected,
            "warnings": self.warnings(),
        }


async def topic_state(settings: KafkaSettings, name: str) -> TopicState:
    """The topic's partitions, records, first offsets above 0, and retention."""

    async def ask() -> TopicState:
        async with kafka_clients(settings) as (admin, consumer):
            found = (await topic_partitions(admin, [name]))[name]
            if found is None:
                return TopicState(name, None)
            tps = [TopicPartition(name, p) for p in found]
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
        return TopicState(
            name,
            found,
            records=sum(ends[tp] - starts[tp] for tp in tps),
            first_offsets={tp.partition: o for tp, o in starts.items() if o > 0},
            retention=await topic_retention(settings, name),
        )

    return await with_kafka(settings, ask(), 3 * KAFKA_TIMEOUT_S)


async def _relay_facts(conn: asyncpg.Connection, relay: str) -> tuple[int, int, int | None]:
    """Events in the store, those past the relay's checkpoint, and its position."""
    events = await conn.fetchval("select count(*) from meetings.events")
    checkpoint = await conn.fetchrow(
        "select transaction_id::text as txid, global_position from meetings.relay_checkpoint"
        " where relay_name = $1",
        relay,
    )
    if checkpoint is None:
        return events, events, None
    unpublished = await conn.fetchval(
        "select count(*) from meetings.events"
        " where (transaction_id, global_position) > ($1::text::xid8, $2)",
        checkpoint["txid"],
        checkpoint["global_position"],
    )
    return events, unpublished, checkpoint["global_position"]


async def _relays_connected(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "select count(*) from pg_stat_activity"
        " where application_name = $1 and datname = current_database()",
        RELAY_APPLICATION_NAME,
    )
    return count


async def _take_relay_lock(conn: asyncpg.Connection, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while not await conn.fetchval("select pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(LOCK_RETRY_S)  # a retry interval, not a wait for an event
    return True


async def _release_relay_lock(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):  # closing the connection releases it anyway
        await conn.fetchval("select pg_advisory_unlock($1)", RELAY_LOCK_KEY)


async def plan_republish(
    target: Target,
    to_topic: str | None,
    relay: str = DEFAULT_RELAY_NAME,
    lock_wait_s: float = LOCK_WAIT_S,
) -> RepublishPlan:
    """What a re-publish would do, and whether it would be refused; changes nothing (the
    relay lock is taken and released at once, to see whether a relay holds it)."""
    topic = await topic_state(target.kafka, target.kafka.events_topic)
    new_topic = await topic_state(target.kafka, to_topic) if to_topic else None
    if new_topic is not None and new_topic.partitions is not None:
        partitions = len(new_topic.partitions)
    elif topic.partitions is not None:
        partitions = len(topic.partitions)
    else:
        partitions = target.kafka.partitions
    async with connect(target.database_url, CLI_APPLICATION_NAME) as conn:
        events, unpublished, position = await _relay_facts(conn, relay)
        leading = not await _take_relay_lock(conn, lock_wait_s)
        if not leading:
            await _release_relay_lock(conn)
        # The leader's own connection is one of them (a replica of an older release has
        # an unnamed one).
        connected = max(await _relays_connected(conn) - int(leading), 0)
    return RepublishPlan(
        relay=relay,
        events=events,
        unpublished=unpublished,
        checkpoint_position=position,
        topic=topic,
        new_topic=new_topic,
        new_topic_partitions=partitions,
        relay_leading=leading,
        relays_connected=connected,
        create_topics=target.kafka.create_topics,
    )


@dataclass(frozen=True)
class RepublishResult:
    events: int  # what the next relay to lead publishes (the store, at the reset)
    topic: str
    topic_created: bool


async def create_events_topic(settings: KafkaSettings, name: str, partitions: int) -> bool:
    """Create ``name`` as the services create their events topic (unlimited retention),
    with ``partitions``; False when it existed already."""

    async def create() -> bool:
        admin = AIOKafkaAdminClient(**kafka_kwargs(settings))
        await admin.start()
        try:
            spec = topic_spec(settings.model_copy(update={"events_topic": name}), name, partitions)
            response = await admin.create_topics([spec])
        finally:
            await admin.close()
        # The answer carries each topic's error code: aiokafka raises none of them.
        for _, code, *message in response.topic_errors:
            if code == TopicAlreadyExistsError.errno:
                return False
            if code != 0:
                reason = (message[0] if message else None) or for_code(code).__name__
                raise Refused(f"Kafka did not create {name}: {reason}")
        return True

    made = await with_kafka(settings, create(), TOPIC_CREATE_TIMEOUT_S)
    created = await topic_state(settings, name)
    if not created.exists or created.finite_retention:
        raise Refused(f"{name} could not be created with unlimited retention: {created}")
    return made


async def republish(
    target: Target, plan: RepublishPlan, lock_wait_s: float = LOCK_WAIT_S
) -> RepublishResult:
    """Holding the relay lock: create the new topic (if any), then reset the relay's
    checkpoint to the start. `Refused`, with nothing changed, while a relay holds the
    lock (after ``lock_wait_s``) or, with a new topic, while a relay is connected."""
    async with connect(target.database_url, CLI_APPLICATION_NAME) as conn:
        if not await _take_relay_lock(conn, lock_wait_s):
            raise Refused(RELAY_LEADING)
        try:
            created = False
            if plan.new_topic is not None:
                connected = await _relays_connected(conn)
                if connected:
                    raise Refused(
                        f"{connected} meetings replica(s) still connected, standing by to "
                        f"relay: {STOP_REPLICAS}"
                    )
                created = await create_events_topic(
                    target.kafka, plan.new_topic.name, plan.new_topic_partitions
                )
            async with conn.transaction():
                events = await conn.fetchval("select count(*) from meetings.events")
                await conn.execute(
                    """
                    insert into meetings.relay_checkpoint
                        (relay_name, transaction_id, global_position)
                    values ($1, '0'::xid8, 0)
                    on conflict (relay_name) do update
                      set transaction_id = excluded.transaction_id,
                          global_position = excluded.global_position, updated_at = now()
                    """,
                    plan.relay,
                )
        finally:
            await _release_relay_lock(conn)
    return RepublishResult(events=events, topic=plan.destination, topic_created=created)
