"""Publish the generated commands through the Kafka door, as an upstream system would, and
wait until the meetings service has accounted for every one of them.

- Each command goes out as an ``InboundCommand`` from the source ``chibo-demo``, keyed by
  ``command.scope()[0]``, with a ``message_id`` fixed by the id prefix (from the seed),
  the month and its position: publishing again is a replay, and appends nothing.
- The producer is idempotent with ``acks=all``.
- The units go first, one level of the tree at a time, each level waited for: a unit's
  row refers to its parent's, and a ward's RegisterUnit is keyed by its parent, so it may
  land on another partition than the parent's and be read first.
- A command is accounted for when its idempotency key
  (``kafka:chibo-demo:<message_id>``) is in ``meetings.idempotency_keys`` (accepted), or
  when a record on the commands DLQ names its topic/partition/offset in ``dlq_source``
  (rejected). The rejections are reported; there should be none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from generator.commands import SOURCE, PlannedCommand
from shared.kafka import topic_partitions

COMMANDS_TOPIC = "chibo.commands.v1"
DLQ_TOPIC = "chibo.commands.dlq.v1"


@dataclass(frozen=True)
class Rejected:
    message_id: str
    command_type: str
    reason: str
    detail: str


@dataclass
class PublishReport:
    total: int = 0
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # neither accepted nor rejected in time
    produce_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.missing and self.accepted == self.total


def idempotency_key(message_id: str) -> str:
    return f"kafka:{SOURCE}:{message_id}"


class _DlqWatch:
    """The commands DLQ from its end before publishing: rejections of our records."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        self._topic = topic
        self.found: dict[str, dict[str, str]] = {}  # dlq_source -> headers

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await admin.start()
        try:
            partitions = (await topic_partitions(admin, [self._topic]))[self._topic]
        finally:
            await admin.close()
        if partitions is None:  # the meetings service creates it at start
            raise RuntimeError(f"the dead-letter topic {self._topic} does not exist")
        await self._consumer.start()
        tps = [TopicPartition(self._topic, p) for p in partitions]
        self._consumer.assign(tps)
        ends = await self._consumer.end_offsets(tps)
        for tp in tps:
            self._consumer.seek(tp, ends[tp])

    async def poll(self) -> None:
        for batch in (await self._consumer.getmany(timeout_ms=100)).values():
            for record in batch:
                headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
                if "dlq_source" in headers:
                    self.found[headers["dlq_source"]] = headers

    async def stop(self) -> None:
        await self._consumer.stop()


async def publish(
    commands: list[PlannedCommand],
    bootstrap: str,
    database_url: str,
    *,
    topic: str = COMMANDS_TOPIC,
    dlq_topic: str = DLQ_TOPIC,
    timeout_s: float = 600.0,
    console: Console | None = None,
    show_progress: bool = True,
) -> PublishReport:
    report = PublishReport(total=len(commands))
    started = time.monotonic()
    deadline = started + timeout_s
    console = console or Console(stderr=True)
    stages = sorted({c.stage for c in commands})
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=10,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    dlq = _DlqWatch(bootstrap, dlq_topic)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    await dlq.start()
    await producer.start()
    sources: dict[str, PlannedCommand] = {}  # "topic/partition/offset" -> command
    accepted: set[str] = set()
    produce_time = 0.0
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not show_progress,
        ) as progress:
            sent_bar = progress.add_task("sent to Kafka   ", total=len(commands))
            done_bar = progress.add_task("accounted for   ", total=len(commands))
            for stage in stages:
                batch = [c for c in commands if c.stage == stage]
                t0 = time.monotonic()
                for command, where in zip(
                    batch, await _produce(producer, topic, batch, progress, sent_bar), strict=True
                ):
                    sources[where] = command
                produce_time += time.monotonic() - t0
                await _wait(
                    batch, pool, dlq, sources, accepted, deadline,
                    lambda: progress.update(
                        done_bar, completed=len(accepted) + len(_rejected(dlq, sources))
                    ),
                )  # fmt: skip
    finally:
        await producer.stop()
        await dlq.stop()
        await pool.close()
    report.accepted = len(accepted)
    rejected_sources = _rejected(dlq, sources)
    report.rejected = [
        Rejected(
            sources[src].message_id,
            sources[src].command.command_type,
            dlq.found[src].get("dlq_reason", "?"),
            dlq.found[src].get("dlq_detail", ""),
        )
        for src in sorted(rejected_sources, key=lambda s: sources[s].position)
    ]
    rejected_ids = {r.message_id for r in report.rejected}
    report.missing = [
        c.message_id
        for c in commands
        if idempotency_key(c.message_id) not in accepted and c.message_id not in rejected_ids
    ]
    report.produce_seconds = round(produce_time, 3)
    report.total_seconds = round(time.monotonic() - started, 3)
    return report


def _rejected(dlq: _DlqWatch, sources: dict[str, PlannedCommand]) -> set[str]:
    return {src for src in dlq.found if src in sources}


async def _produce(
    producer: AIOKafkaProducer,
    topic: str,
    commands: list[PlannedCommand],
    progress: Progress,
    bar: TaskID,
) -> list[str]:
    """Send in order (one partition's records keep their order); the ``topic/partition/
    offset`` of each record, as the DLQ's ``dlq_source`` would name it."""
    futures = []
    headers = [("content-type", b"application/json")]
    for command in commands:
        value = command.envelope().model_dump_json().encode()
        futures.append(await producer.send(topic, value, key=command.key.encode(), headers=headers))
        if len(futures) % 500 == 0:
            progress.advance(bar, 500)
    metas = await asyncio.gather(*futures)
    progress.advance(bar, len(futures) % 500)
    return [f"{m.topic}/{m.partition}/{m.offset}" for m in metas]


async def _wait(
    commands: Iterable[PlannedCommand],
    pool: asyncpg.Pool,
    dlq: _DlqWatch,
    sources: dict[str, PlannedCommand],
    accepted: set[str],
    deadline: float,
    on_progress: Callable[[], Any],
) -> None:
    wanted = [idempotency_key(c.message_id) for c in commands]
    pending = [k for k in wanted if k not in accepted]
    while True:
        await dlq.poll()
        rows = await pool.fetch(
            "select idempotency_key from meetings.idempotency_keys"
            " where idempotency_key = any($1::text[])",
            pending,
        )
        accepted.update(r["idempotency_key"] for r in rows)
        rejected = {idempotency_key(sources[s].message_id) for s in _rejected(dlq, sources)}
        pending = [k for k in pending if k not in accepted and k not in rejected]
        on_progress()
        if not pending or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.25)
