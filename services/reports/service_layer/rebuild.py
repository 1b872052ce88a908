"""Drops the report projections and rebuilds them from the whole events topic.

One transaction: the live consumer waits (its first statement locks ``applied_streams``,
which the rebuild holds exclusively), readers keep seeing the old projection until the
commit, and then the new one at once. The topic's end offsets are read after the lock,
so every event the live consumer had applied is in the rebuild; what comes after is
applied live, and the version check drops what both saw. That first statement also
checks that the tables are still the version its code writes (``projection_guard``):
a replica of the previous release, still running in a rolling update, stops there once
a new replica's rebuild has committed, instead of mixing its rules into the new tables.
The live consumer's projection code (``writes_for``, then ``projection_store``'s
statements) makes the rows, so the result equals the live projection.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import resource
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.reports.adapters import projection_store
from services.reports.domain.projection import Write
from services.reports.service_layer.projector import event_writes
from shared.consumer import BatchGuard, read_record
from shared.kafka import (
    TopicConfigUnreadable,
    aiokafka_client_kwargs,
    topic_partitions,
    topic_retention,
)
from shared.logs import get_logger
from shared.postgres import json_rows, rows_of
from shared.settings import KafkaSettings

log = get_logger(__name__)

SCHEMA = "reports"
# Raise when the projections' tables or rules change: the service then rebuilds at start.
PROJECTION_VERSION = 2


class HistoryTruncated(RuntimeError):
    """The topic no longer holds its first events (retention), so it cannot be replayed."""


class BuiltByNewerCode(RuntimeError):
    """The tables were built by a newer version of the projection code than this one:
    this process is of an older release (a replica not yet replaced in a rolling update,
    or a rollback). It must neither rebuild them back nor apply events to them."""

    def __init__(self, built: int, ours: int) -> None:
        super().__init__(
            f"the report projections were built by projection version {built}, newer than"
            f" this code's {ours}; to go back to {ours} on purpose (a rollback), run this"
            " release's `chibo reports rebuild --allow-downgrade`"
        )
        self.built = built
        self.ours = ours


class Built(StrEnum):
    """The tables against a version of the projection code."""

    CURRENT = "current"  # built by it
    OUTDATED = "outdated"  # by an older version, or never: rebuild
    NEWER = "newer"  # by a newer version: leave them alone


def compare(built: int | None, ours: int) -> Built:
    if built == ours:
        return Built.CURRENT
    if built is None or built < ours:
        return Built.OUTDATED
    return Built.NEWER


def projection_guard(version: int = PROJECTION_VERSION) -> BatchGuard:
    """The live consumer's check, in each batch's claim, that the tables are still the
    version its code writes."""
    return BatchGuard(
        name="projection_version",
        condition=(
            f"select coalesce(max(version) = {int(version)}, false)"
            f" from {SCHEMA}.projection_version"
        ),
        explanation=(
            f"the report projections are no longer projection version {version}, the one"
            " this code writes (a newer release rebuilt them): this replica stops"
            " consuming and reports not ready until it is replaced"
        ),
    )


@dataclass
class RebuildResult:
    records: int = 0
    applied: int = 0
    # Unreadable (dead-lettered live), of an unknown type (ignored live), or behind an
    # unreadable one in its stream (parked live, until a redrive).
    skipped: int = 0
    already_current: bool = False  # only_if_outdated, and another process had rebuilt
    # What the preparer process used: CPU seconds, and its peak resident memory.
    preparer_cpu_s: float = 0.0
    preparer_peak_rss_mib: float = 0.0


Progress = Callable[[int, int], None]  # (records read, records in all)


async def rebuild(
    conn: asyncpg.Connection,
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    batch_size: int = 5_000,
    progress: Progress = lambda done, total: None,
    only_if_outdated: bool = False,
    version: int = PROJECTION_VERSION,
    allow_downgrade: bool = False,
) -> RebuildResult:
    """``consumer`` is started, group-less, and assigned ``partitions``. ``version`` is
    the projection code's (tests pass an older one). Raises ``BuiltByNewerCode`` when
    the tables are of a newer version, unless ``allow_downgrade``."""
    result = RebuildResult()
    async with conn.transaction():
        await conn.execute(f"lock table {SCHEMA}.applied_streams in exclusive mode")
        # Replicas starting together after an upgrade queue on the lock: the first
        # rebuilds, the others find its version and stop here. A replica of the
        # previous release that queued behind a new one's rebuild finds a newer version.
        built = await built_version(conn)
        state = compare(built, version)
        if state is Built.NEWER and not allow_downgrade:
            assert built is not None
            raise BuiltByNewerCode(built, version)
        if only_if_outdated and state is Built.CURRENT:
            return RebuildResult(already_current=True)
        starts = await consumer.beginning_offsets(partitions)
        truncated = {tp.partition: o for tp, o in starts.items() if o > 0}
        if truncated:
            raise HistoryTruncated(
                f"partitions {truncated} no longer start at offset 0; set retention.ms=-1"
                " on the events topic and re-publish the history from the event store into"
                " a new topic: chibo events republish --to-topic NAME"
            )
        ends = await consumer.end_offsets(partitions)
        total = sum(ends.values())
        ready: asyncio.Queue[_Batch | BaseException | None] = asyncio.Queue(maxsize=2)
        with _gc_paused(), _preparer() as preparer:
            # Three things at once: this process reads the next batches from Kafka, the
            # preparer process parses one and makes its statements, and PostgreSQL
            # writes the one before (the first ones while the old rows are deleted).
            reader = asyncio.create_task(
                _read(consumer, partitions, ends, batch_size, result, ready, preparer)
            )
            try:
                await projection_store.clear(conn)
                # The tables' statistics still describe the old projection (none, on a
                # new install): the planner would then hash a whole table for each
                # batch's updates, which grows with the table. Each update names rows
                # by key, so an index is always the right way to them.
                await conn.execute("set local enable_seqscan = off")
                progress(0, total)
                while (item := await ready.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    records, prepared = item
                    applied, skipped, statements, used = await prepared
                    result.applied += applied
                    result.skipped += skipped
                    result.preparer_cpu_s, result.preparer_peak_rss_mib = used
                    await projection_store.run(conn, statements)
                    progress(records, total)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        await conn.execute(f"delete from {SCHEMA}.projection_version")
        await conn.execute(
            f"insert into {SCHEMA}.projection_version (version) values ($1)", version
        )
    return result


# (records read so far, the batch's (applied, skipped, statements, the preparer's
# CPU seconds and peak RSS so far) to come)
_Batch = tuple[int, "asyncio.Future[_Prepared]"]
_Prepared = tuple[int, int, list[projection_store.Statement], tuple[float, float]]
_VERSIONS = f"""
    insert into {SCHEMA}.applied_streams (stream_id, version)
    select * from {rows_of("stream_id text, version int")} u
    on conflict (stream_id) do update set version = excluded.version, applied_at = now()"""
_FETCH_STEP = 500  # records per getmany() of the reader; batch_size of them go to the preparer


async def _read(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    ends: dict[TopicPartition, int],
    batch_size: int,
    result: RebuildResult,
    ready: asyncio.Queue[_Batch | BaseException | None],
    preparer: ProcessPoolExecutor,
) -> None:
    loop = asyncio.get_running_loop()
    try:
        todo = {tp for tp in partitions if ends[tp] > 0}
        for tp in partitions:
            consumer.seek(tp, 0)
        values: list[bytes] = []
        while todo:
            # Fetched in small steps: aiokafka unpacks a fetch at once, and the writer's
            # statements wait for the event loop meanwhile.
            fetched = await consumer.getmany(*todo, timeout_ms=1_000, max_records=_FETCH_STEP)
            for tp, records in fetched.items():
                end = ends[tp]
                for record in records:
                    if record.offset >= end:
                        break
                    values.append(record.value or b"")
                if records and records[-1].offset >= end - 1:
                    todo.discard(tp)
            if len(values) >= batch_size or (values and not todo):
                result.records += len(values)
                prepared = loop.run_in_executor(preparer, _prepare, values)
                await ready.put((result.records, prepared))
                values = []
        await ready.put(None)
    except Exception as exc:
        await ready.put(exc)


@contextmanager
def _preparer() -> Iterator[ProcessPoolExecutor]:
    """One process that parses the batches in their order and keeps the streams' versions.

    Forked, so that it starts at once with the modules already imported; it touches
    nothing of its parent's but the code (no sockets, loop or logging)."""
    pool = ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("fork"), initializer=_start
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# The preparer's state. The tables are empty and locked: each stream's applied version
# is kept here, as claim_batch would keep it, and written with the batch that moved it.
_versions: dict[str, int] = {}


def _start() -> None:
    _versions.clear()
    gc.freeze()  # the batches hold no cycles (see _gc_paused)
    gc.disable()


def _prepare(values: list[bytes]) -> _Prepared:
    """In the preparer: a batch's records read, and the statements of those that are new.

    Each stream is applied contiguously, as the live consumer's ``claim_batch`` does: an
    event is new when it is the stream's first or next version. An event it cannot read
    stops its stream before it (at its version - 1 when it is the stream's first), so
    the stream's later events are not applied here either: the live consumer parked
    them (``stream_gap``), and a redrive appends them to the topic again, after the
    cause was fixed, where this reads them in turn. In the topic's order, even in the
    batch that holds both the parked events and their copies, as live met them
    (``claim_batch`` takes a batch's events of a stream in version order). Decided here,
    as each event is parsed: a function shared with ``claim_batch`` cost this loop more
    per event (docs/reports.md)."""
    applied = skipped = 0
    writes: list[Write] = []
    moved: dict[str, int] = {}
    for value in values:
        envelope, event, reason, _ = read_record(value)
        if envelope is None:
            skipped += 1  # not an envelope: dead-lettered, no stream to place it in
            continue
        stream, version = envelope.stream_id, envelope.stream_version
        recorded = _versions.get(stream)
        if reason is not None:
            skipped += 1  # dead-lettered for its own reason
            if recorded is None:
                _versions[stream] = moved[stream] = version - 1
            continue
        if recorded is not None and version != recorded + 1:
            if version > recorded:
                skipped += 1  # parked behind the gap (stream_gap)
            continue  # or a duplicate
        _versions[stream] = moved[stream] = version
        if event is None:
            skipped += 1  # an unknown type: claimed, not applied
            continue
        applied += 1
        # At once, while the event is fresh in the CPU's cache.
        writes += event_writes((envelope, event))
    statements = projection_store.statements(writes)
    if moved:
        statements.append((_VERSIONS, json_rows(list(moved.items()))))
    used = (time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return applied, skipped, statements, used


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC in this process while the batches are read (the preparer pauses its
    own, ``_start``): they hold no cycles, and each collection of the older generations
    would walk every object the process has."""
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


class EventsTopicMissing(LookupError):
    pass


async def rebuild_from_topic(
    conn: asyncpg.Connection,
    client_kwargs: dict[str, Any],
    topic: str,
    batch_size: int = 5_000,
    progress: Progress = lambda done, total: None,
    only_if_outdated: bool = False,
    version: int = PROJECTION_VERSION,
    allow_downgrade: bool = False,
) -> RebuildResult:
    """Rebuild from every partition of ``topic`` (aiokafka ``client_kwargs``)."""
    admin = AIOKafkaAdminClient(**client_kwargs)
    await admin.start()
    try:
        found = (await topic_partitions(admin, [topic]))[topic]
    finally:
        await admin.close()
    if found is None:
        raise EventsTopicMissing(topic)
    consumer = AIOKafkaConsumer(**client_kwargs, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in found]
        consumer.assign(partitions)
        return await rebuild(
            conn,
            consumer,
            partitions,
            batch_size,
            progress,
            only_if_outdated,
            version,
            allow_downgrade,
        )
    finally:
        await consumer.stop()


async def history_can_expire(kafka: KafkaSettings) -> bool:
    """True, and said loudly, when the events topic's retention is finite, or cannot be
    read (the service's Kafka user lacks DescribeConfigs): once its first events expire,
    no rebuild (``chibo reports rebuild``, or this service's own at start after an upgrade
    of ``PROJECTION_VERSION``) can replay it (``HistoryTruncated``)."""
    fix = (
        "kafka-configs.sh --alter --entity-type topics --entity-name"
        f" {kafka.events_topic} --add-config retention.ms=-1,retention.bytes=-1"
    )
    try:
        retention = await topic_retention(kafka, kafka.events_topic)
    except TopicConfigUnreadable as exc:
        log.error(
            "kafka.events_retention_unreadable",
            error=str(exc),
            fix=f"grant DescribeConfigs on {kafka.events_topic}, or check by hand; {fix}",
        )
        return True
    finite = {k: v for k, v in retention.items() if v != -1}
    if finite:
        log.error(
            "kafka.events_history_can_expire",
            topic=kafka.events_topic,
            **{k.replace(".", "_"): v for k, v in finite.items()},
            fix=fix,
        )
    return bool(finite)


async def rebuild_if_outdated(
    pool: asyncpg.Pool,
    kafka: KafkaSettings,
    batch_size: int = 5_000,
    version: int = PROJECTION_VERSION,
) -> RebuildResult | None:
    """Rebuild when the tables were built by an older version of the projection code
    (or never: a new install, or an upgrade that added projections). None when they are
    current. Raises ``BuiltByNewerCode`` when a newer version built them: this process
    is of an older release, and rebuilding them back would undo the upgrade (and the
    newer replicas would then rebuild again, and so on)."""
    async with pool.acquire() as conn:
        built = await built_version(conn)
        state = compare(built, version)
        if state is Built.CURRENT:
            return None
        if state is Built.NEWER:
            assert built is not None
            raise BuiltByNewerCode(built, version)
        result = await rebuild_from_topic(
            conn,
            aiokafka_client_kwargs(kafka),
            kafka.events_topic,
            batch_size,
            only_if_outdated=True,
            version=version,
        )
    if result.already_current:
        return None
    log.info(
        "projections.rebuilt",
        from_version=built,
        to_version=version,
        records=result.records,
        applied=result.applied,
    )
    return result


async def built_version(db: asyncpg.Pool | asyncpg.Connection) -> int | None:
    """The version of the projection code that built the tables; None if never built."""
    return await db.fetchval(f"select max(version) from {SCHEMA}.projection_version")  # type: ignore[no-any-return]
