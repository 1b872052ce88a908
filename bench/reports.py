"""The reports service under load: its projections' rebuild, the freshness of a report
under a steady load, and end-to-end throughput, each beside a Kafka ceiling measured in
the same run on the same broker.

- ``reports.rebuild``: ``services.reports.service_layer.rebuild.rebuild`` (what
  ``chibo reports rebuild`` runs) over a history of real envelopes: one generated month
  relayed by the meetings service, plus copies of it with every id rewritten. Beside a
  raw group-less consume of the same records and the parse-only rate.
- ``reports.freshness``: ScheduleMeeting commands through the Kafka door at 1,000/s,
  from the event's ``recorded_at`` to its ``applied_at`` in ``reports.applied_streams``
  (p50/p95/p99), beside raw Kafka produce→consume latency at the same rate.
- ``reports.throughput``: commands offered on the Kafka door until the reports projection
  has applied them all, beside raw produce+consume of as many records; and the reports
  consumer alone on a pre-loaded backlog.

See docs/benchmarks.md ("Reports") for what is timed and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import BenchContext, Figure, benchmark, quantile
from bench.write_side import (
    POLL_S,
    SOURCES,
    last_in_relay_order,
    refuse_shared_database,
    relay_checkpoint,
    stack_cpu,
    wait_relay_covers,
)
from generator.build import Generated, generate
from generator.model import GeneratorConfig
from generator.publish import COMMANDS_TOPIC, publish
from services.reports.bootstrap import CONSUMER_GROUP
from services.reports.service_layer.rebuild import rebuild
from shared.clock import LOCAL_TZ
from shared.contract import EventEnvelope
from shared.kafka import aiokafka_client_kwargs, send_in_record_batches
from shared.postgres import migrate

REBUILD = "reports.rebuild"
REBUILD_RAW = "reports.rebuild.raw_consume"
REBUILD_PARSE = "reports.rebuild.parse_only"
FRESHNESS = "reports.freshness"
THROUGHPUT = "reports.throughput"
THROUGHPUT_RAW = "reports.throughput.raw_kafka"

MEETINGS = "meetings"
REPORTS = "reports"
SEED = 4242
MONTH = (2026, 10)
EVENTS_TOPIC = "chibo.events.v1"
PARTITIONS = 6  # the events topic's (KafkaSettings.partitions)
REBUILD_BATCH = 5_000  # the CLI's default --batch-size
FULL_COPIES, QUICK_COPIES = 8, 1
FRESH_RATE = 1_000.0  # offered events per second
FRESH_FULL_S, FRESH_QUICK_S = 25.0, 5.0
PEER_FULL_S, PEER_QUICK_S = 10.0, 3.0
TICK_S = 0.01
THROUGHPUT_FULL, THROUGHPUT_QUICK = 30_000, 3_000
TARGET_RATE = 10_000  # events/s, end to end (issue #5)
CATCH_UP_TIMEOUT_S = 600.0
_NAMESPACE = uuid.UUID("6d1f0b8e-6a53-4c5e-9d0e-5f0c2b1a7e42")
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_POSITION = re.compile(rb'"global_position": ?(\d+)')
_AGENDA = ("Sinh hoạt chi bộ thường kỳ", "Quán triệt Nghị quyết", "Phát triển đảng viên")


# -- set-up --------------------------------------------------------------------------------


def district_config(ctx: BenchContext) -> GeneratorConfig:
    """The demo district (34 wards, 311 cells) in full runs; a small one with --quick."""
    return GeneratorConfig(seed=SEED) if not ctx.quick else GeneratorConfig(SEED, 4, 30)


async def ensure_district(ctx: BenchContext, pool: asyncpg.Pool) -> Generated:
    """A generated month published through the Kafka door (once per stack): the org the
    other commands refer to. The meetings service must be running."""
    g = generate(district_config(ctx), *MONTH)
    prefix = g.district.config.id_prefix
    have = await pool.fetchval(
        "select count(*) from meetings.events where ward_id like $1 || '%'", prefix
    )
    want = int(g.expected["events"]["total"])
    if have < want:
        assert ctx.kafka_bootstrap and ctx.database_url
        with ctx.phase("publishing a generated month (set-up)", total=None):
            sent = await publish(
                g.commands,
                ctx.kafka_bootstrap,
                ctx.database_url,
                timeout_s=600,
                show_progress=False,
            )
        if not sent.ok:
            raise RuntimeError(
                f"the generated month was not accepted: {len(sent.rejected)} rejected, "
                f"{len(sent.missing)} missing (first: {sent.rejected[:1]})"
            )
    return g


async def start(ctx: BenchContext, name: str) -> int:
    services = ctx.services
    assert services is not None, f"needs {name!r}"
    return await asyncio.to_thread(services.start, name)


async def stop(ctx: BenchContext, name: str) -> None:
    assert ctx.services is not None
    await asyncio.to_thread(ctx.services.stop, name)


class EventsTopicOffsets:
    """The events topic's end offsets and the reports consumer group's committed offsets,
    through one group-less consumer and one admin client kept open. The reports consumer
    commits a batch's offsets after the batch's transaction, so whatever is below its
    committed offset is applied; reading them costs the broker an offset fetch and costs
    PostgreSQL, which the system under test is using, nothing."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._consumer = AIOKafkaConsumer(**kwargs, group_id=None, enable_auto_commit=False)
        self._admin = AIOKafkaAdminClient(**kwargs)
        self._coordinator: int | None = None
        self._partitions = [TopicPartition(EVENTS_TOPIC, p) for p in range(PARTITIONS)]

    async def __aenter__(self) -> EventsTopicOffsets:
        await self._consumer.start()
        await self._admin.start()
        self._coordinator = await self._admin.find_coordinator(CONSUMER_GROUP)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def ends(self) -> dict[int, int]:
        ends = await self._consumer.end_offsets(self._partitions)
        return {tp.partition: o for tp, o in ends.items()}

    async def committed(self) -> dict[int, int]:
        found = await self._admin.list_consumer_group_offsets(
            CONSUMER_GROUP, group_coordinator_id=self._coordinator
        )
        return {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == EVENTS_TOPIC}


def applied_since(committed: dict[int, int], since: dict[int, int]) -> int:
    """Events the reports consumer committed after the end offsets ``since``."""
    return sum(max(committed.get(p, 0) - end, 0) for p, end in since.items())


def covers(committed: dict[int, int], since: dict[int, int], target: dict[int, int]) -> bool:
    """Every partition that grew after ``since`` is committed up to ``target``."""
    return all(committed.get(p, -1) >= end for p, end in target.items() if end > since[p])


async def wait_caught_up(ctx: BenchContext, kwargs: dict[str, Any], timeout_s: float) -> float:
    """Poll until the reports consumer has every partition of the events topic applied up
    to its end now (its ``chibo_consumer_applied_offset``, or, for a partition it had
    nothing new to read on since it started, its group's committed offset); return the
    seconds it took. (Earlier benchmarks of the run leave events it has not seen.)"""
    services = ctx.services
    assert services is not None
    started = time.monotonic()
    async with EventsTopicOffsets(kwargs) as offsets:
        ends = await offsets.ends()
        while True:
            snap = await asyncio.to_thread(services.metrics, REPORTS)
            committed = await offsets.committed()
            applied = {
                int(dict(labels)["partition"]): value
                for name, labels, value in snap.samples
                if name == "chibo_consumer_applied_offset"
                and dict(labels).get("topic") == EVENTS_TOPIC
            }
            behind = [
                p
                for p, end in ends.items()
                if end > 0 and applied.get(p, -1) < end - 1 and committed.get(p, -1) < end
            ]
            if not behind:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(
                    f"reports still behind on partitions {behind} after {timeout_s}s"
                )
            await asyncio.sleep(0.25)


def schedule_commands(
    g: Generated, start_at: int, count: int, tag: str
) -> list[tuple[str, bytes, bytes]]:
    """(meeting id, key, value): ScheduleMeeting commands for the district's real cells,
    from the allow-listed sources in turn, keyed by ward. Each makes one new stream."""
    cells = [c for w in g.district.wards for c in w.cells]
    first = datetime(2026, 12, 1, 19, 30, tzinfo=LOCAL_TZ)
    occurred_at = datetime.now(LOCAL_TZ).isoformat()
    out = []
    for i in range(start_at, start_at + count):
        cell = cells[i % len(cells)]
        meeting_id = f"{cell.cell_id}.{tag}-{i:06d}"
        envelope = {
            "message_id": str(uuid.uuid4()),
            "type": "ScheduleMeeting",
            "version": 1,
            "occurred_at": occurred_at,
            "source": SOURCES[i % len(SOURCES)],
            "payload": {
                "meeting_id": meeting_id,
                "ward_id": cell.ward_id,
                "cell_id": cell.cell_id,
                "kind": "regular" if i % 3 else "thematic",
                "scheduled_start": (first + timedelta(days=i % 60)).isoformat(),
                "agenda": [_AGENDA[i % len(_AGENDA)], f"Việc khác {i % 7}"],
                "location": cell.location,
            },
        }
        value = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        out.append((meeting_id, cell.ward_id.encode(), value))
    return out


def streams_of(tag: str) -> str:
    """A LIKE pattern for the streams of this run's meetings."""
    return f"meeting-%.{tag}-%"


# The probes count incrementally: a whole-table `count(*) ... like` every poll cost more
# PostgreSQL CPU than the system under test (0.13 s of CPU per poll at 240k events).
@dataclass
class _Seen:
    """What the probes have read of one tag's streams so far."""

    after: tuple[int, int]  # (transaction id, position) read up to, in relay order
    appended: int = 0
    pending: set[str] = field(default_factory=set)  # appended, not yet seen applied
    applied: int = 0


_SEEN: dict[str, _Seen] = {}


async def start_counting(conn: asyncpg.Connection, tag: str) -> None:
    """Start the tag's counts at the log's gap-safe head (the last row below the oldest
    running transaction), before any of its commands is sent: none of its streams exist
    yet, so nothing before the head is the tag's. Without it the first poll, inside the
    timed window, read the whole table: on a full run's database hundreds of thousands of
    rows, on the two cores the system under test runs on."""
    row = await conn.fetchrow(
        "select transaction_id::text::bigint as txid, global_position from meetings.events"
        " where transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
        " order by transaction_id desc, global_position desc limit 1"
    )
    head = (0, 0) if row is None else (int(row["txid"]), int(row["global_position"]))
    _SEEN[tag] = _Seen(after=head)


async def appended_count(conn: asyncpg.Connection, tag: str, *, streams: bool = False) -> int:
    """Events of the tag's streams committed in meetings.events. Each poll reads only the
    rows after the last one it read, in the relay's gap-safe order (below the oldest
    running transaction, so a late commit is never skipped), from where ``start_counting``
    put it. With ``streams``, the streams read are kept for ``applied_count``."""
    seen = _SEEN[tag]
    row = await conn.fetchrow(
        """
        with last as (
            select transaction_id, global_position from meetings.events
            where (transaction_id, global_position) > ($1::text::xid8, $2)
              and transaction_id < pg_snapshot_xmin(pg_current_snapshot())
            order by transaction_id desc, global_position desc limit 1
        ), ours as (
            select e.stream_id from meetings.events e, last
            where (e.transaction_id, e.global_position) > ($1::text::xid8, $2)
              and (e.transaction_id, e.global_position)
                  <= (last.transaction_id, last.global_position)
              and e.stream_id like $3
        )
        select (select transaction_id::text::bigint from last) as txid,
               (select global_position from last) as position,
               (select count(*) from ours) as events,
               case when $4 then (select coalesce(array_agg(distinct stream_id), '{}')
                                  from ours) end as streams
        """,
        str(seen.after[0]),
        seen.after[1],
        streams_of(tag),
        streams,
    )
    if row["txid"] is not None:
        seen.after = (int(row["txid"]), int(row["position"]))
        seen.appended += int(row["events"])
        seen.pending.update(row["streams"] or ())
    return seen.appended


async def applied_count(conn: asyncpg.Connection, tag: str) -> int:
    """The tag's streams in reports.applied_streams. A stream is applied only after it was
    appended and relayed, so only the appended ones not yet seen applied are looked up
    (by primary key): a handful per poll while the reports keep up."""
    await appended_count(conn, tag, streams=True)
    seen = _SEEN[tag]
    if seen.pending:
        found = await conn.fetch(
            "select stream_id from reports.applied_streams where stream_id = any($1::text[])",
            list(seen.pending),
        )
        seen.pending.difference_update(r["stream_id"] for r in found)
        seen.applied += len(found)
    return seen.applied


async def create_topic(kwargs: dict[str, Any], topic: str, replication: int) -> None:
    admin = AIOKafkaAdminClient(**kwargs)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, replication)])
        deadline = time.monotonic() + 30
        while True:
            described = await admin.describe_topics([topic])
            parts = described[0].get("partitions", []) if described else []
            if len(parts) == PARTITIONS and all(p.get("leader", -1) >= 0 for p in parts):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has no leaders")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def delete_topic(kwargs: dict[str, Any], topic: str) -> None:
    admin = AIOKafkaAdminClient(**kwargs)
    with contextlib.suppress(Exception):
        await admin.start()
        await admin.delete_topics([topic])
    with contextlib.suppress(Exception):
        await admin.close()


def producer_for(kwargs: dict[str, Any]) -> AIOKafkaProducer:
    # Record batches up to 512 KiB, as the relay's producer: with aiokafka's 16 KiB a burst
    # of commands went out about 25 records per request, at 4× the CPU per record.
    return AIOKafkaProducer(
        **kwargs, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024
    )


async def send_batched(
    producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> None:
    """As a publisher with a burst to send does (and as the relay does): record batches per
    partition (``send_in_record_batches``), every one acknowledged before this returns. One
    ``send()`` per record cost about 26 µs of CPU each (3 µs this way), which made the load
    generator a fifth of a core in ``reports.throughput``."""
    partitions = sorted(await producer.partitions_for(topic))
    keyed = ({"key": key, "value": value} for key, value in records)
    await asyncio.gather(*await send_in_record_batches(producer, topic, keyed, partitions, {}))


async def send_all(
    kwargs: dict[str, Any], topic: str, records: Sequence[tuple[bytes, bytes]]
) -> None:
    """``send_batched`` from a producer of its own, stopped on return."""
    producer = producer_for(kwargs)
    await producer.start()
    try:
        await send_batched(producer, topic, records)
    finally:
        await producer.stop()


# -- reports.rebuild -----------------------------------------------------------------------


async def read_topic(
    kwargs: dict[str, Any], topic: str, keep: Callable[[bytes], bool] = lambda _v: True
) -> list[tuple[int, bytes, bytes]]:
    """Every record of the topic now: (partition, key, value), in partition order."""
    consumer = AIOKafkaConsumer(**kwargs, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        todo = {tp for tp in parts if ends[tp] > 0}
        out = []
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=1_000, max_records=5_000)
            for tp, records in fetched.items():
                for r in records:
                    if r.offset < ends[tp] and keep(r.value or b""):
                        out.append((tp.partition, r.key or b"", r.value or b""))
                if records and records[-1].offset >= ends[tp] - 1:
                    todo.discard(tp)
        return out
    finally:
        await consumer.stop()


def copy_history(
    records: Sequence[tuple[int, bytes, bytes]], prefix: str, copy: int, position_offset: int
) -> list[tuple[bytes, bytes]]:
    """One distinct, valid copy of a relayed history: the id prefix (units, cells,
    members, meetings, petitions ... and so every stream id and ward key) becomes
    ``<prefix>c<copy>``, every UUID (event ids, correlation and causation ids, any in a
    payload) is mapped to a new one the same way throughout the copy, and the global
    positions move past the original's."""
    old = prefix.encode()
    new = f"{prefix}c{copy}".encode()
    ns = uuid.uuid5(_NAMESPACE, f"{prefix}/{copy}")
    mapped: dict[bytes, bytes] = {}

    def new_uuid(m: re.Match[bytes]) -> bytes:
        found = m.group(0)
        if found not in mapped:
            mapped[found] = str(uuid.uuid5(ns, found.decode())).encode()
        return mapped[found]

    def moved(m: re.Match[bytes]) -> bytes:
        return b'"global_position": %d' % (int(m.group(1)) + position_offset)

    out = []
    for _partition, key, value in records:
        value = _POSITION.sub(moved, _UUID.sub(new_uuid, value.replace(old, new)))
        out.append((key.replace(old, new), value))
    return out


async def raw_consume(
    kwargs: dict[str, Any], topic: str, total: int, batch: int
) -> tuple[float, int, list[bytes]]:
    """Group-less, assigned, from offset 0 to the end, with the rebuild's getmany();
    values are kept (for the parse-only peer), not parsed. (seconds, records, values)"""
    consumer = AIOKafkaConsumer(
        **kwargs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        started = time.perf_counter()
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        todo = {tp for tp in parts if ends[tp] > 0}
        values: list[bytes] = []
        nbytes = 0
        while todo:
            fetched = await consumer.getmany(*todo, timeout_ms=1_000, max_records=batch)
            for tp, records in fetched.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        break
                    value = r.value or b""
                    nbytes += len(value)
                    values.append(value)
                if records and records[-1].offset >= ends[tp] - 1:
                    todo.discard(tp)
        seconds = time.perf_counter() - started
        if len(values) != total:
            raise RuntimeError(f"raw consume read {len(values)} records, not {total}")
        return seconds, nbytes, values
    finally:
        await consumer.stop()


def parse_only(values: list[bytes]) -> float:
    """What the rebuild does to each record before the database: the envelope and the
    typed event. Returns seconds."""
    started = time.perf_counter()
    for value in values:
        EventEnvelope.model_validate_json(value).domain_event()
    return time.perf_counter() - started


@benchmark(name=REBUILD, needs=("kafka", "postgres", MEETINGS), timeout_s=900)
async def reports_rebuild(ctx: BenchContext) -> list[Figure]:
    """The reports projections rebuilt from a history of >= 100,000 real envelopes, beside
    a raw consume of the same records and the parse-only rate."""
    refuse_shared_database(ctx)
    assert ctx.kafka is not None and ctx.database_url
    kwargs = aiokafka_client_kwargs(ctx.kafka)
    copies = ctx.size(FULL_COPIES, QUICK_COPIES)
    pool = await asyncpg.create_pool(ctx.database_url, min_size=1, max_size=2)
    topic = ctx.unique("bench.reports-history")
    try:
        # The reports' schema, as the service makes it (the service is not started: the
        # rebuild is an operator's command, run here in-process as the CLI runs it).
        from services.reports.bootstrap import MIGRATIONS

        await migrate(pool, "reports", MIGRATIONS)
        await start(ctx, MEETINGS)
        g = await ensure_district(ctx, pool)
        prefix = g.district.config.id_prefix
        async with pool.acquire() as conn:
            await wait_relay_covers(conn, await last_in_relay_order(conn), timeout_s=120)
            top = int(await conn.fetchval("select max(global_position) from meetings.events"))
        await stop(ctx, MEETINGS)

        # The month as relayed, and copies of it, on a topic of this run's own (the live
        # consumers of later benchmarks then do not have to wade through the copies).
        marker = re.compile(rb'"ward_id": ?"' + re.escape(prefix.encode()) + rb"[.\"]")
        month = await read_topic(kwargs, EVENTS_TOPIC, lambda v: bool(marker.search(v)))
        if len(month) != int(g.expected["events"]["total"]):
            raise RuntimeError(
                f"{len(month)} events of {prefix} on {EVENTS_TOPIC}, "
                f"not {g.expected['events']['total']}"
            )
        history = [(k, v) for _p, k, v in month]
        for c in range(1, copies + 1):
            history += copy_history(month, prefix, c, c * top)
        n = len(history)
        await create_topic(kwargs, topic, ctx.kafka.replication_factor)
        with ctx.phase("loading the history (set-up)", total=None):
            await send_all(kwargs, topic, history)
        del history
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]

        # The ceiling and the parse-only peer, then the rebuild.
        with ctx.phase("raw consume", total=n) as raw_phase:
            raw_s, nbytes, values = await raw_consume(kwargs, topic, n, REBUILD_BATCH)
            raw_phase.advance(n)
        with ctx.phase("parse only", total=n) as parse_phase:
            parse_s = parse_only(values)
            parse_phase.advance(n)
        del values

        consumer = AIOKafkaConsumer(
            **kwargs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            consumer.assign(parts)
            async with pool.acquire() as conn:
                done = 0
                with ctx.phase("rebuild", total=n) as phase, stack_cpu(ctx) as cpu:

                    def progress(records: int, _total: int) -> None:
                        nonlocal done
                        phase.advance(records - done)
                        done = records

                    profile = os.environ.get("BENCH_REPORTS_PROFILE")
                    profiler = cProfile.Profile() if profile else None
                    if profiler is not None:
                        profiler.enable()
                    result = await rebuild(conn, consumer, parts, REBUILD_BATCH, progress)
                    if profiler is not None:
                        profiler.disable()
                        profiler.dump_stats(str(profile))
                cpu.add("rebuild preparer", result.preparer_cpu_s)
                rebuild_s = phase.elapsed_s
                streams = int(await conn.fetchval("select count(*) from reports.applied_streams"))
                versions = int(
                    await conn.fetchval("select sum(version) from reports.applied_streams")
                )
        finally:
            await consumer.stop()
    finally:
        await pool.close()
        await delete_topic(kwargs, topic)

    # Every record parsed, claimed and projected: one stream version each.
    if (result.records, result.applied, result.skipped) != (n, n, 0) or versions != n:
        raise RuntimeError(
            f"rebuild read {result.records}, applied {result.applied}, skipped "
            f"{result.skipped}, versions {versions}; expected {n} of each"
        )

    raw_rate, parse_rate, rate = n / raw_s, n / parse_s, n / rebuild_s
    params = {
        "events": n,
        "copies": copies,
        "month_events": len(month),
        "streams": streams,
        "batch_size": REBUILD_BATCH,
        "partitions": PARTITIONS,
        "mean_event_bytes": round(nbytes / n, 1),
    }
    raw = Figure.reference(
        REBUILD_RAW,
        raw_rate,
        "events/s",
        peak_rss_mib=raw_phase.peak_rss_mib,
        notes=(
            f"{n} records ({nbytes / 2**20:.1f} MiB) in {raw_s:.2f} s, group-less, assigned, "
            f"getmany(max_records={REBUILD_BATCH}), values read not parsed"
        ),
        params={**params, "seconds": round(raw_s, 3)},
    )
    parse = Figure.reference(
        REBUILD_PARSE,
        parse_rate,
        "events/s",
        peak_rss_mib=parse_phase.peak_rss_mib,
        notes=(
            f"EventEnvelope.model_validate_json + domain_event() of {n} values in {parse_s:.2f} s"
        ),
        params={**params, "seconds": round(parse_s, 3)},
    )
    notes = (
        f"{n} events ({len(month)} relayed by the meetings service for one month of "
        f"{prefix} + {copies} id-rewritten copies), {streams} streams, one transaction, "
        f"batch {REBUILD_BATCH}, in {rebuild_s:.2f} s; {cpu.summary()}; the rebuild "
        f"preparer's peak RSS {result.preparer_peak_rss_mib:.0f} MiB"
    )
    rebuild_params = {**params, "seconds": round(rebuild_s, 3), "cpu": cpu.shares()}
    return [
        raw,
        parse,
        Figure.against(
            raw,
            REBUILD,
            rate,
            peak_rss_mib=phase.peak_rss_mib,
            notes=notes + " (target >= 50,000 events/s)",
            params={**rebuild_params, "target": 50_000},
        ),
        Figure.against(
            parse,
            f"{REBUILD}.vs_parse_only",
            rate,
            peak_rss_mib=phase.peak_rss_mib,
            params=rebuild_params,
        ),
    ]


# -- reports.freshness ---------------------------------------------------------------------


async def kafka_latency(
    kwargs: dict[str, Any], topic: str, rate: float, seconds: float, pad: int
) -> list[float]:
    """Paced produce (``rate``/s in ticks of TICK_S) to a fresh topic while a group-less
    consumer reads it from its end; latency (s) = receive time − send time."""
    consumer = AIOKafkaConsumer(**kwargs, group_id=None, enable_auto_commit=False)
    producer = producer_for(kwargs)
    await consumer.start()
    await producer.start()
    n = round(rate * seconds)
    filler = b"x" * pad
    latencies: list[float] = []
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        for tp in parts:  # a fresh, empty topic: its end is 0 (no offset look-up to fail)
            consumer.seek(tp, 0)

        async def read() -> None:
            while len(latencies) < n:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.perf_counter()
                    for r in records:
                        sent = float((r.value or b"0|").split(b"|", 1)[0])
                        latencies.append(now - sent)

        reader = asyncio.create_task(read())
        started = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        sent, tick = 0, 0
        while sent < n:
            tick += 1
            due = min(n, round(tick * TICK_S * rate))
            for i in range(sent, due):
                value = b"%r|%s" % (time.perf_counter(), filler)
                futures.append(await producer.send(topic, value=value, key=b"%d" % (i % 200)))
            sent = due
            await asyncio.sleep(max(0.0, started + tick * TICK_S - time.perf_counter()))
        await asyncio.gather(*futures)
        await asyncio.wait_for(reader, 60)
        return latencies
    finally:
        await producer.stop()
        await consumer.stop()


async def send_paced(
    kwargs: dict[str, Any],
    records: Sequence[tuple[str, bytes, bytes]],
    rate: float,
    on_sent: Callable[[int], None],
) -> tuple[dict[str, float], float]:
    """Send at ``rate``/s on an absolute schedule; return ({meeting id: wall-clock send
    time}, the largest delay of a tick behind schedule)."""
    producer = producer_for(kwargs)
    await producer.start()
    sent_at: dict[str, float] = {}
    try:
        started = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        sent, tick, behind = 0, 0, 0.0
        while sent < len(records):
            tick += 1
            due = min(len(records), round(tick * TICK_S * rate))
            for meeting_id, key, value in records[sent:due]:
                sent_at[meeting_id] = time.time()
                futures.append(await producer.send(COMMANDS_TOPIC, value=value, key=key))
            on_sent(due - sent)
            sent = due
            wake = started + tick * TICK_S
            behind = max(behind, time.perf_counter() - wake)
            await asyncio.sleep(max(0.0, wake - time.perf_counter()))
        await asyncio.gather(*futures)
        return sent_at, behind
    finally:
        await producer.stop()


def _ms(values: Sequence[float]) -> dict[str, float]:
    return {f"p{round(q * 100)}": round(quantile(values, q) * 1000, 2) for q in (0.5, 0.95, 0.99)}


@benchmark(name=FRESHNESS, needs=("kafka", "postgres", MEETINGS, REPORTS), timeout_s=900)
async def reports_freshness(ctx: BenchContext) -> list[Figure]:
    """From an event's acceptance (its recorded_at) to its application in the reports
    projection (applied_at), commands offered at 1,000/s; beside raw Kafka latency."""
    refuse_shared_database(ctx)
    assert ctx.kafka is not None and ctx.database_url
    kwargs = aiokafka_client_kwargs(ctx.kafka)
    seconds = ctx.size(FRESH_FULL_S, FRESH_QUICK_S)  # type: ignore[arg-type]
    n = round(FRESH_RATE * seconds)
    tag = f"fr{ctx.run_id}"
    pool = await asyncpg.create_pool(ctx.database_url, min_size=1, max_size=2)
    topic = ctx.unique("bench.reports-latency")
    try:
        await start(ctx, MEETINGS)
        g = await ensure_district(ctx, pool)
        records = schedule_commands(g, 0, n, tag)
        warm = schedule_commands(g, n, 500, tag + "w")
        pad = len(records[0][2])

        # The peer first: raw Kafka at the same rate, records of the same size.
        await create_topic(kwargs, topic, ctx.kafka.replication_factor)
        peer_s = ctx.size(PEER_FULL_S, PEER_QUICK_S)  # type: ignore[arg-type]
        with ctx.phase("raw Kafka produce→consume latency", total=None):
            peer = await kafka_latency(kwargs, topic, FRESH_RATE, peer_s, pad)

        await start(ctx, REPORTS)
        with ctx.phase("reports catching up with the events topic (set-up)", total=None):
            catch_up_s = await wait_caught_up(ctx, kwargs, CATCH_UP_TIMEOUT_S)
        # Warm-up: both services have joined their groups and applied something.
        async with pool.acquire() as conn:
            await start_counting(conn, tag + "w")
            await start_counting(conn, tag)
        await send_paced(kwargs, warm, FRESH_RATE, lambda _n: None)
        async with pool.acquire() as conn:
            deadline = time.monotonic() + 60
            while await applied_count(conn, tag + "w") < len(warm):
                if time.monotonic() > deadline:
                    raise TimeoutError("the warm-up was not applied in 60 s")
                await asyncio.sleep(POLL_S)

        with ctx.phase(f"{FRESH_RATE:.0f} commands/s", total=n) as phase, stack_cpu(ctx) as cpu:
            sent_at, behind = await send_paced(kwargs, records, FRESH_RATE, phase.advance)
            async with pool.acquire() as conn:
                deadline = time.monotonic() + 120
                while (have := await applied_count(conn, tag)) < n:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{have} of {n} applied 120 s after the last send")
                    await asyncio.sleep(POLL_S)
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "select e.payload->>'meeting_id' as meeting_id,"
                " extract(epoch from e.recorded_at)::float8 as recorded,"
                " extract(epoch from a.applied_at)::float8 as applied"
                " from meetings.events e join reports.applied_streams a using (stream_id)"
                " where e.stream_id like $1 and e.stream_version = 1 and a.version = 1",
                streams_of(tag),
            )
    finally:
        await pool.close()
        await delete_topic(kwargs, topic)
    if len(rows) != n:
        raise RuntimeError(f"{len(rows)} of {n} meetings recorded and applied")
    lags = [r["applied"] - r["recorded"] for r in rows]
    from_send = [r["applied"] - sent_at[r["meeting_id"]] for r in rows]
    intake = [r["recorded"] - sent_at[r["meeting_id"]] for r in rows]
    ours, theirs, sent_ms, intake_ms = _ms(lags), _ms(peer), _ms(from_send), _ms(intake)
    params = {
        "rate": FRESH_RATE,
        "seconds": seconds,
        "commands": n,
        "peer_seconds": peer_s,
        "peer_records": len(peer),
        "behind_schedule_max_s": round(behind, 3),
        "catch_up_s": round(catch_up_s, 2),
        "lag_ms": ours,
        "from_send_ms": sent_ms,
        "intake_ms": intake_ms,
        "peer_ms": theirs,
        "max_ms": round(max(lags) * 1000, 1),
        "cpu": cpu.shares(),
    }
    notes = (
        f"{n} ScheduleMeeting at {FRESH_RATE:.0f}/s through the Kafka door; lag = "
        f"reports.applied_streams.applied_at − meetings.events.recorded_at (same PostgreSQL "
        f"clock); from the send: p50 {sent_ms['p50']:.0f} / p99 {sent_ms['p99']:.0f} ms; "
        f"{cpu.summary()}"
    )
    figures: list[Figure] = []
    for q in ("p50", "p95", "p99"):
        ref = Figure.reference(
            f"{FRESHNESS}.kafka_{q}",
            theirs[q],
            "ms",
            better="lower",
            notes=(
                f"raw aiokafka produce→consume of {len(peer)} records of {pad} B at "
                f"{FRESH_RATE:.0f}/s, acks=all, linger 5 ms, group-less consumer"
            )
            if q == "p50"
            else "",
            params={"rate": FRESH_RATE, "records": len(peer)},
        )
        figures.append(ref)
        figures.append(
            Figure.against(
                ref,
                f"{FRESHNESS}.{q}",
                ours[q],
                notes=(notes + " (target p99 <= 500 ms)") if q == "p99" else "",
                params={**params, "target_p99_ms": 500} if q == "p99" else {},
            )
        )
    return figures


# -- reports.throughput --------------------------------------------------------------------


async def raw_produce_consume(
    kwargs: dict[str, Any], topic: str, records: list[tuple[bytes, bytes]]
) -> float:
    """Produce ``records`` with ``send_batched`` while a group-less consumer reads them;
    seconds from the first send to the last record read."""
    consumer = AIOKafkaConsumer(**kwargs, group_id=None, enable_auto_commit=False)
    producer = producer_for(kwargs)
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        for tp in parts:  # a fresh, empty topic: its end is 0 (no offset look-up to fail)
            consumer.seek(tp, 0)
        got = 0

        async def read() -> None:
            nonlocal got
            while got < len(records):
                for batch in (await consumer.getmany(timeout_ms=100)).values():
                    got += len(batch)

        started = time.perf_counter()
        reader = asyncio.create_task(read())
        await send_batched(producer, topic, records)
        await asyncio.wait_for(reader, 120)
        return time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()


async def wait_count(
    conn: asyncpg.Connection,
    count: Callable[[asyncpg.Connection], Any],
    n: int,
    timeout_s: float,
) -> float:
    """Poll ``count`` every POLL_S until it reaches ``n``; the perf_counter it did."""
    deadline = time.monotonic() + timeout_s
    while True:
        have = await count(conn)
        if have >= n:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{have} of {n} after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


async def offer(kwargs: dict[str, Any], commands: list[tuple[str, bytes, bytes]]) -> None:
    """Offer commands (meeting id, key, value) on the Kafka door, from a producer of
    their own as an upstream system's, all sent and acknowledged on return."""
    await send_all(kwargs, COMMANDS_TOPIC, [(k, v) for _m, k, v in commands])


async def wait_applied(
    conn: asyncpg.Connection,
    offsets: EventsTopicOffsets,
    tag: str,
    n: int,
    since: dict[int, int],
    timeout_s: float,
    on_applied: Callable[[int], None],
) -> tuple[float, float]:
    """Poll until the tag's ``n`` events are appended, the relay has published them, and
    the reports consumer has committed every partition up to where the relay left it;
    the perf_counter of the polls that saw all appended and all applied. Appended is an
    incremental count on meetings.events; applied is read from Kafka (EventsTopicOffsets),
    so the probe adds no per-stream look-ups to the database under test."""
    deadline = time.monotonic() + timeout_s
    appended_at: float | None = None
    last: tuple[int, int] | None = None
    target: dict[int, int] | None = None
    while True:
        if appended_at is None and await appended_count(conn, tag) >= n:
            appended_at = time.perf_counter()
            last = await last_in_relay_order(conn)
        if last is not None and target is None:
            checkpoint = await relay_checkpoint(conn)
            if checkpoint is not None and checkpoint >= last:
                target = await offsets.ends()
        committed = await offsets.committed()
        on_applied(min(applied_since(committed, since), n))
        if appended_at is not None and target is not None and covers(committed, since, target):
            return appended_at, time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all of {n} applied after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


@benchmark(name=THROUGHPUT, needs=("kafka", "postgres", MEETINGS, REPORTS), timeout_s=900)
async def reports_throughput(ctx: BenchContext) -> list[Figure]:
    """Commands offered on the Kafka door until all are applied in the reports projection,
    beside raw produce+consume of as many records; and the reports consumer alone on a
    pre-loaded backlog."""
    refuse_shared_database(ctx)
    assert ctx.kafka is not None and ctx.database_url and ctx.services is not None
    kwargs = aiokafka_client_kwargs(ctx.kafka)
    n = ctx.size(THROUGHPUT_FULL, THROUGHPUT_QUICK)
    tag = f"tp{ctx.run_id}"
    pool = await asyncpg.create_pool(ctx.database_url, min_size=1, max_size=2)
    topic = ctx.unique("bench.reports-throughput")
    try:
        await start(ctx, MEETINGS)
        g = await ensure_district(ctx, pool)
        e2e = schedule_commands(g, 0, n, tag)
        backlog = schedule_commands(g, n, n, tag + "b")
        warm = schedule_commands(g, 2 * n, 1_000, tag + "w")
        raw_records = [(k, v) for _m, k, v in e2e]

        await create_topic(kwargs, topic, ctx.kafka.replication_factor)
        with ctx.phase("raw produce+consume", total=None), stack_cpu(ctx) as raw_cpu:
            raw_s = await raw_produce_consume(kwargs, topic, raw_records)

        await start(ctx, REPORTS)
        with ctx.phase("reports catching up with the events topic (set-up)", total=None):
            await wait_caught_up(ctx, kwargs, CATCH_UP_TIMEOUT_S)
        async with pool.acquire() as conn:
            for counted in (tag + "w", tag, tag + "b"):
                await start_counting(conn, counted)
        await offer(kwargs, warm)
        async with pool.acquire() as conn:
            await wait_count(conn, lambda c: applied_count(c, tag + "w"), len(warm), 120)

        # End to end: offered as fast as the producer goes; the clock stops at the poll
        # that sees the reports consumer committed past every event of the run.
        async with EventsTopicOffsets(kwargs) as offsets, pool.acquire() as conn:
            since = await offsets.ends()
            with ctx.phase("commands → reports", total=n) as phase, stack_cpu(ctx) as cpu:
                await offer(kwargs, e2e)
                produced_s = time.perf_counter() - phase.started
                appended_at, done_at = await wait_applied(
                    conn, offsets, tag, n, since, 300, phase.reach
                )
            e2e_s = done_at - phase.started
            write_s = appended_at - phase.started

            # The reports consumer alone: a backlog appended and relayed while it is stopped.
            await stop(ctx, REPORTS)
            since = await offsets.ends()
            await offer(kwargs, backlog)
            await wait_count(conn, lambda c: appended_count(c, tag + "b"), n, 300)
            await wait_relay_covers(conn, await last_in_relay_order(conn), timeout_s=120)
            target = await offsets.ends()
            relayed = sum(target.values()) - sum(since.values())
            first: tuple[int, float] | None = None
            with ctx.phase("reports on a backlog", total=relayed) as backlog_phase:
                await start(ctx, REPORTS)
                deadline = time.monotonic() + 300
                while True:
                    committed = await offsets.committed()
                    seen_at = time.perf_counter()
                    have = applied_since(committed, since)
                    backlog_phase.reach(have)
                    if have and first is None:
                        first = (have, seen_at)
                    if covers(committed, since, target):
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{have} of {relayed} applied after 300 s")
                    await asyncio.sleep(POLL_S)
        assert first is not None
        backlog_done = seen_at
        backlog_s = backlog_done - first[1]
        backlog_rate = (relayed - first[0]) / backlog_s
        backlog_with_start = relayed / (backlog_done - backlog_phase.started)
    finally:
        await pool.close()
        await delete_topic(kwargs, topic)

    raw = Figure.reference(
        THROUGHPUT_RAW,
        n / raw_s,
        "events/s",
        notes=(
            f"{n} of the same command records produced in record batches per partition "
            f"(acks=all) to a fresh topic while a group-less consumer reads them: first "
            f"send to last read {raw_s:.2f} s"
        ),
        params={"records": n, "seconds": round(raw_s, 3)},
    )
    rate = n / e2e_s
    # What the system costs, not how fast this shared machine was: CPU per event, beside
    # the same run's raw CPU per record (which moves with the machine's speed as it does).
    raw_us = (raw_cpu.used["kafka"] + raw_cpu.used["bench"]) / n * 1e6
    system = {name: used for name, used in cpu.used.items() if name != "bench"}
    system_us = sum(system.values()) / n * 1e6
    per_process = ", ".join(f"{k} {v / n * 1e6:.0f}" for k, v in sorted(system.items()))
    raw_cpu_figure = Figure.reference(
        f"{THROUGHPUT_RAW}.cpu",
        raw_us,
        "µs/event",
        better="lower",
        notes=(
            "CPU per record of the raw produce+consume above: the broker and the producing "
            "and consuming client (this process)"
        ),
        params={
            "kafka_s": round(raw_cpu.used["kafka"], 3),
            "client_s": round(raw_cpu.used["bench"], 3),
        },
    )
    return [
        raw,
        Figure.against(
            raw,
            THROUGHPUT,
            rate,
            peak_rss_mib=phase.peak_rss_mib,
            notes=(
                f"{n} ScheduleMeeting offered on the Kafka door (all sent in {produced_s:.2f} s),"
                f" all applied in the reports projection after {e2e_s:.2f} s; the write side "
                f"had appended them all after {write_s:.2f} s ({n / write_s:,.0f}/s); "
                f"{cpu.summary()} (target >= {TARGET_RATE:,} events/s)"
            ),
            params={
                "commands": n,
                "seconds": round(e2e_s, 3),
                "produce_seconds": round(produced_s, 3),
                "write_side_seconds": round(write_s, 3),
                "cpu": cpu.shares(),
                "target": TARGET_RATE,
            },
        ),
        Figure.against(
            raw,
            f"{THROUGHPUT}.write_side",
            n / write_s,
            notes="the same run's commands, up to committed in meetings.events",
            params={"commands": n, "seconds": round(write_s, 3)},
        ),
        Figure.against(
            raw,
            f"{THROUGHPUT}.backlog_apply",
            backlog_rate,
            notes=(
                f"the reports consumer alone on a backlog of {relayed} relayed events ({n} "
                f"commands): from the "
                f"poll that saw its first {first[0]} applied to the poll that saw all "
                f"({backlog_s:.2f} s); {backlog_with_start:,.0f}/s counting the process start"
            ),
            params={
                "events": relayed,
                "seconds": round(backlog_s, 3),
                "rate_with_start": round(backlog_with_start, 1),
            },
        ),
        raw_cpu_figure,
        Figure.against(
            raw_cpu_figure,
            f"{THROUGHPUT}.cpu",
            system_us,
            notes=(
                f"CPU per event of the end-to-end run above, summed over the system's "
                f"processes ({per_process} µs; the load generator and probes, "
                f"{cpu.used['bench'] / n * 1e6:.0f} µs, left out). At this cost "
                f"{TARGET_RATE:,} events/s needs "
                f"{system_us * TARGET_RATE / 1e6:.2f} cores busy with no idle gap; this "
                f"machine has {os.cpu_count()}"
            ),
            params={
                "per_process_us": {k: round(v / n * 1e6, 1) for k, v in system.items()},
                "cores_for_target": round(system_us * TARGET_RATE / 1e6, 2),
            },
        ),
    ]
