"""The write side under load: the meetings service as its real process on the same broker
and database as the ceilings.

- ``write.append_via_kafka``: inbound ScheduleMeeting commands on the commands topic,
  appended by the running service; beside the raw Kafka ceilings and a peer, the
  ``eventsourcing`` library's PostgreSQL recorder writing the same events to the same
  database (``peer.eventsourcing_append``).
- ``write.relay``: a backlog written while the service was down, published to Kafka by its
  relay once it starts; beside ``kafka.raw_produce``.
- ``write.gap_safe_cost``: the relay's gap-safe batch query beside the naive
  ``global_position`` one, walking the same rows.
- ``write.aggregate_load``: ``PostgresEventStore.load()`` of a 200-event stream with the
  stream cache beside the same without it.

See docs/benchmarks.md ("Write side") for what is timed and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from bench.harness import (
    BenchContext,
    CpuMeter,
    Figure,
    MetricsSnapshot,
    PeakRss,
    ServiceControl,
    benchmark,
)
from bench.kafka_ceiling import NAME as KAFKA_CEILING
from bench.kafka_ceiling import RAW_CONSUME, RAW_PRODUCE, ward_ids
from services.meetings.adapters.event_store import EventMetadata, PostgresEventStore
from services.meetings.adapters.metrics import MeetingsMetrics
from services.meetings.adapters.relay import _SELECT_BATCH
from shared.clock import LOCAL_TZ
from shared.contract import DomainEvent, MeetingScheduled
from shared.contract.events import MeetingKind
from shared.kafka import aiokafka_client_kwargs
from shared.postgres import migrate

APPEND = "write.append_via_kafka"
RELAY = "write.relay"
GAP_SAFE = "write.gap_safe_cost"
AGGREGATE = "write.aggregate_load"
PEER_APPEND = "peer.eventsourcing_append"
PEER_APPEND_BATCHED = "peer.eventsourcing_append_batched"

MEETINGS = "meetings"
MIGRATIONS = (
    Path(__file__).resolve().parent.parent / "services" / "meetings" / "adapters" / "migrations"
)
# These benchmarks append real events to meetings.events (they cannot be taken back: the
# store is append-only), so on a database given through BENCH_DATABASE_URL they run only when
# this variable says that database is a throw-away one.
ALLOW_EXTERNAL = "BENCH_ALLOW_EVENT_WRITES"
SOURCES = ("meeting-app", "checkin-kiosk", "membership-db", "chibo-demo")  # allow-listed locally
WARDS = 200
INTAKE_BATCH = 500  # the service's default INTAKE_BATCH_SIZE; also the batched peer's call size
RELAY_BATCH = 1000  # the service's default RELAY_BATCH_SIZE; also the gap-safe walk's batch
POLL_S = 0.05  # how often the database is read while waiting; the only sleep in the timed parts
FULL_RECOUNT_S = 1.0
PRODUCE_CHUNK = 2_000
PEER_TOPIC = "chibo.meetings:MeetingScheduled"
ROUND_TRIP = "postgres.round_trip"
ROUND_TRIPS = 3_000
# Database round trips the intake makes per batch, whatever its size (read from
# services/meetings: CommandBus.handle_batch, _run and PostgresEventStore.write): BEGIN,
# the idempotency look-up, load the streams, one statement for the stream rows, the events
# and the idempotency keys, COMMIT. The pool no longer runs a reset query on release.
ROUND_TRIPS_PER_BATCH = 5

_AGENDA = (
    "Sinh hoạt chi bộ thường kỳ tháng {m}",
    "Quán triệt Nghị quyết Đại hội Đảng bộ phường",
    "Phát triển đảng viên quý {q}",
    "Kiến nghị của cử tri khu phố {k} về đường giao thông",
    "Triển khai nhiệm vụ trọng tâm tháng {m}",
    "Học tập và làm theo tư tưởng, đạo đức, phong cách Hồ Chí Minh",
)
_KINDS = (MeetingKind.REGULAR, MeetingKind.REGULAR, MeetingKind.THEMATIC, MeetingKind.COMMITTEE)


# -- workload ------------------------------------------------------------------------------


def meeting_payload(i: int, ward: str, tag: str) -> dict[str, Any]:
    """A valid ScheduleMeeting payload (and MeetingScheduled event): ~300 bytes of JSON."""
    cell = f"{ward}.to-{i % CELLS_PER_WARD + 1:02d}"
    start = datetime(2026, 12, 1, 19, 30, tzinfo=LOCAL_TZ) + timedelta(days=i % 90)
    return {
        "meeting_id": f"{cell}.{tag}-{i:06d}",
        "ward_id": ward,
        "cell_id": cell,
        "kind": _KINDS[i % len(_KINDS)].value,
        "scheduled_start": start.isoformat(),
        "agenda": [
            _AGENDA[i % len(_AGENDA)].format(m=i % 12 + 1, q=i % 4 + 1, k=i % 9 + 1),
            _AGENDA[(i + 3) % len(_AGENDA)].format(m=i % 12 + 1, q=i % 4 + 1, k=i % 9 + 1),
        ],
        "location": f"Nhà văn hóa khu phố {i % 9 + 1}",
    }


def inbound_records(
    command_type: str,
    payload: Callable[[int, str, str], dict[str, Any]],
    start: int,
    count: int,
    tag: str,
) -> list[tuple[bytes, bytes]]:
    """(key, value) records: InboundCommand envelopes around ``payload(i, ward, tag)``,
    keyed by ward, from the allow-listed upstream sources in turn."""
    wards = ward_ids(WARDS)
    occurred_at = datetime.now(LOCAL_TZ).isoformat()
    out = []
    for i in range(start, start + count):
        ward = wards[i % len(wards)]
        envelope = {
            "message_id": str(uuid.uuid4()),
            "type": command_type,
            "version": 1,
            "occurred_at": occurred_at,
            "source": SOURCES[i % len(SOURCES)],
            "payload": payload(i, ward, tag),
        }
        value = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        out.append((ward.encode(), value))
    return out


CELLS_PER_WARD = 9  # the cells meeting_payload and the petitions' payload name


async def register_cells(database_url: str) -> None:
    """Register the cells the workloads' commands name (``<ward>.to-01`` to ``-09`` of
    every ward), before any clock starts: a meeting or a petition is refused unless its
    cell is registered in its ward. Once per database; a cell registered by an earlier
    run is refused as already_exists, which is what is wanted."""
    from services.meetings.adapters.org_directory import OrgDirectory
    from services.meetings.bootstrap import MeetingsSettings
    from services.meetings.domain.petition import PetitionPolicy
    from services.meetings.service_layer.handlers import CommandBus, CommandContext, Rejection
    from shared.auth import Principal, Role
    from shared.clock import SystemClock
    from shared.contract.commands import Command, RegisterCell

    principal = Principal(subject="bench", role=Role.SYSTEM_PUBLISHER, scope_level="system")
    context = CommandContext(principal=principal, source="bench", door="kafka")
    items: list[tuple[Command, CommandContext]] = [
        (
            RegisterCell.model_validate(
                {"cell_id": f"{ward}.to-{k:02d}", "ward_id": ward, "name": f"Tổ dân phố {k}"}
            ),
            context,
        )
        for ward in ward_ids(WARDS)
        for k in range(1, CELLS_PER_WARD + 1)
    ]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await migrate(pool, "meetings", MIGRATIONS)
        metrics_ = MeetingsMetrics(CollectorRegistry())
        policy = PetitionPolicy.parse(MeetingsSettings().petition_ladder, 180)
        bus = CommandBus(
            PostgresEventStore(pool, metrics_), OrgDirectory(pool), SystemClock(), metrics_, policy
        )
        for start in range(0, len(items), INTAKE_BATCH):
            for outcome in await bus.handle_batch(items[start : start + INTAKE_BATCH]):
                if isinstance(outcome, Rejection) and outcome.code != "already_exists":
                    raise RuntimeError(f"a workload cell was refused: {outcome}")
    finally:
        await pool.close()


def inbound_commands(start: int, count: int, tag: str) -> list[tuple[bytes, bytes]]:
    """ScheduleMeeting records for the append benchmark."""
    return inbound_records("ScheduleMeeting", meeting_payload, start, count, tag)


def meeting_event(i: int, ward: str, tag: str) -> MeetingScheduled:
    return MeetingScheduled.model_validate(meeting_payload(i, ward, tag))


async def produce(
    kafka_kwargs: dict[str, Any],
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    on_acked: Callable[[int], None] = lambda _n: None,
) -> float:
    """Send the records as the ceiling does (pipelined chunks, acks=all, idempotent);
    return the seconds until the last one was acknowledged."""
    producer = AIOKafkaProducer(**kafka_kwargs, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        in_flight: list[asyncio.Future[Any]] = []
        for chunk_start in range(0, len(records), PRODUCE_CHUNK):
            sent = [
                await producer.send(topic, value=value, key=key)
                for key, value in records[chunk_start : chunk_start + PRODUCE_CHUNK]
            ]
            if in_flight:
                await asyncio.gather(*in_flight)
                on_acked(len(in_flight))
            in_flight = sent
        await asyncio.gather(*in_flight)
        on_acked(len(in_flight))
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def write_backlog(
    pool: asyncpg.Pool,
    n: int,
    tag: str,
    *,
    per_stream: int = 50,
    appends_per_transaction: int = 40,
    on_written: Callable[[int], None] = lambda _n: None,
) -> None:
    """``n`` real MeetingScheduled rows written by ``PostgresEventStore.append`` (streams
    of ``per_stream`` events, several appends per transaction, as the intake commits)."""
    store = PostgresEventStore(pool, MeetingsMetrics(CollectorRegistry()), cache_capacity=0)
    meta = EventMetadata(actor="bench", source="chibo-demo", occurred_at=datetime.now(UTC))
    wards = ward_ids(WARDS)
    streams = -(-n // per_stream)
    written = 0
    for first in range(0, streams, appends_per_transaction):
        async with store.transaction() as conn:
            for s in range(first, min(first + appends_per_transaction, streams)):
                count = min(per_stream, n - written)
                ward = wards[s % len(wards)]
                events: list[DomainEvent] = [
                    meeting_event(s * per_stream + v, ward, tag) for v in range(count)
                ]
                await store.append(conn, f"meeting-{tag}-{s:06d}", ward, 0, events, meta)
                written += count
        on_written(min(appends_per_transaction, streams - first) * per_stream)


def refuse_shared_database(ctx: BenchContext) -> None:
    if os.environ.get("BENCH_DATABASE_URL") and os.environ.get(ALLOW_EXTERNAL) != "1":
        raise RuntimeError(
            f"{ctx.current} appends real events to meetings.events of the database in "
            f"BENCH_DATABASE_URL; set {ALLOW_EXTERNAL}=1 if it is a throw-away one"
        )


# -- probes --------------------------------------------------------------------------------


async def max_position(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("select coalesce(max(global_position), 0) from meetings.events"))


async def wait_for_appended(
    conn: asyncpg.Connection,
    base: int,
    n: int,
    *,
    timeout_s: float,
    on_progress: Callable[[int], None] = lambda _n: None,
    why_not: Callable[[], Awaitable[str]] | None = None,
) -> float:
    """Poll until ``n`` events above position ``base`` are committed; return the moment
    (perf_counter) the poll saw them.

    Each poll counts only the rows above the highest position seen so far (cheap); a full
    count above ``base`` decides, run when the cheap one reaches ``n`` and every second
    (a transaction can commit a lower position after a higher one)."""
    seen, high = 0, base
    last_full = time.monotonic()
    deadline = time.monotonic() + timeout_s
    while True:
        row = await conn.fetchrow(
            "select count(*) as n, max(global_position) as high from meetings.events"
            " where global_position > $1",
            high,
        )
        if row["n"]:
            seen += row["n"]
            high = row["high"]
            on_progress(row["n"])
        if seen >= n or time.monotonic() - last_full > FULL_RECOUNT_S:
            full = await conn.fetchrow(
                "select count(*) as n, coalesce(max(global_position), $1) as high"
                " from meetings.events where global_position > $1",
                base,
            )
            if full["n"] >= n:
                return time.perf_counter()
            seen, high, last_full = full["n"], full["high"], time.monotonic()
        if time.monotonic() > deadline:
            detail = await why_not() if why_not else ""
            raise TimeoutError(f"{seen} of {n} events appended after {timeout_s:.0f} s{detail}")
        await asyncio.sleep(POLL_S)


async def relay_checkpoint(conn: asyncpg.Connection) -> tuple[int, int] | None:
    row = await conn.fetchrow(
        "select transaction_id::text::bigint as txid, global_position"
        " from meetings.relay_checkpoint where relay_name = 'kafka-events'"
    )
    return None if row is None else (int(row["txid"]), int(row["global_position"]))


async def last_in_relay_order(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "select transaction_id::text::bigint as txid, global_position from meetings.events"
        " order by transaction_id desc, global_position desc limit 1"
    )
    return (0, 0) if row is None else (int(row["txid"]), int(row["global_position"]))


async def count_between(
    conn: asyncpg.Connection, after: tuple[int, int], upto: tuple[int, int]
) -> int:
    """Events after ``after`` and up to ``upto`` inclusive, in relay order."""
    return int(
        await conn.fetchval(
            "select count(*) from meetings.events"
            " where (transaction_id, global_position) > ($1::text::xid8, $2)"
            "   and (transaction_id, global_position) <= ($3::text::xid8, $4)",
            str(after[0]),
            after[1],
            str(upto[0]),
            upto[1],
        )
    )


async def wait_relay_covers(
    conn: asyncpg.Connection, target: tuple[int, int], timeout_s: float
) -> float:
    deadline = time.monotonic() + timeout_s
    while True:
        checkpoint = await relay_checkpoint(conn)
        if checkpoint is not None and checkpoint >= target:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"relay at {checkpoint}, not {target}, after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


def stack_cpu(ctx: BenchContext) -> CpuMeter:
    """A CPU meter over the stack's processes and this one (the producer and the probes).
    The meetings process is counted alone; PostgreSQL and Kafka with their descendants
    (backends, the runuser wrapper's child)."""
    processes: dict[str, tuple[int | None, bool]] = {
        name: (pid, name != MEETINGS) for name, pid in ctx.pids().items() if pid is not None
    }
    processes["bench"] = (None, False)
    return CpuMeter(processes)


async def start_service(
    ctx: BenchContext, extra_env: dict[str, str] | None = None
) -> tuple[ServiceControl, int]:
    services = ctx.services
    assert services is not None, "needs 'meetings'"
    pid = await asyncio.to_thread(services.start, MEETINGS, extra_env)
    return services, pid


async def metrics(services: ServiceControl) -> MetricsSnapshot:
    return await asyncio.to_thread(services.metrics, MEETINGS)


def histogram_delta(
    before: MetricsSnapshot, after: MetricsSnapshot, name: str
) -> tuple[float, float]:
    """(seconds, observations) a histogram gained between two snapshots."""
    return (
        after.total(f"{name}_sum") - before.total(f"{name}_sum"),
        after.total(f"{name}_count") - before.total(f"{name}_count"),
    )


async def round_trip_us(conn: asyncpg.Connection, count: int = ROUND_TRIPS) -> float:
    """Median microseconds of an asyncpg ``select 1`` round trip, over ``count``."""
    for _ in range(200):  # warm-up: the statement is prepared once
        await conn.fetchval("select 1")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await conn.fetchval("select 1")
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


# -- the peer: the eventsourcing library's PostgreSQL recorder ------------------------------


def eventsourcing_append(
    database_url: str,
    schema: str,
    states: Sequence[bytes],
    per_call: int,
    on_done: Callable[[int], None],
    warmup: int = 200,
) -> float:
    """Insert one event per new stream (originator) with ``PostgresApplicationRecorder``,
    ``per_call`` events per ``insert_events`` call (each call is one transaction); return
    the seconds the timed calls took. Runs in a thread: the library is synchronous."""
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    url = urlparse(database_url)
    datastore = PostgresDatastore(
        dbname=url.path.lstrip("/"),
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        user=unquote(url.username or ""),
        password=unquote(url.password or ""),
        schema=schema,
    )
    try:
        recorder = PostgresApplicationRecorder(datastore, events_table_name="stored_events")
        recorder.create_table()
        warm = [
            StoredEvent(uuid.uuid4(), 1, PEER_TOPIC, states[i % len(states)]) for i in range(warmup)
        ]
        for i in range(0, warmup, per_call):
            recorder.insert_events(warm[i : i + per_call])
        events = [StoredEvent(uuid.uuid4(), 1, PEER_TOPIC, state) for state in states]
        started = time.perf_counter()
        for i in range(0, len(events), per_call):
            recorder.insert_events(events[i : i + per_call])
            on_done(min(per_call, len(events) - i))
        return time.perf_counter() - started
    finally:
        datastore.close()


async def run_peer(
    ctx: BenchContext, conn: asyncpg.Connection, states: Sequence[bytes], per_call: int, label: str
) -> tuple[float, float]:
    """(events/s, peak RSS MiB of this process) of the peer, in a schema of its own."""
    assert ctx.database_url is not None
    schema = f"bench_es_{ctx.run_id}_{uuid.uuid4().hex[:6]}"
    await conn.execute(f'create schema "{schema}"')
    try:
        with ctx.phase(label, total=len(states)) as phase:
            seconds = await asyncio.to_thread(
                eventsourcing_append, ctx.database_url, schema, states, per_call, phase.advance
            )
    finally:
        await conn.execute(f'drop schema "{schema}" cascade')
    return len(states) / seconds, phase.peak_rss_mib


# -- the command bus without the Kafka door ------------------------------------------------


async def command_bus_in_process(
    database_url: str, records: Sequence[tuple[bytes, bytes]], on_done: Callable[[int], None]
) -> float:
    """The same commands through ``CommandBus.handle_batch`` in this process, in batches of
    the intake's size, with the contexts the Kafka door builds (parsed before the clock
    starts); return the seconds the batches took. No Kafka, no FastStream."""
    from services.meetings.adapters.org_directory import OrgDirectory
    from services.meetings.bootstrap import MeetingsSettings
    from services.meetings.domain.petition import PetitionPolicy
    from services.meetings.service_layer.handlers import CommandBus, CommandContext, Rejection
    from shared.auth import Principal, Role
    from shared.clock import SystemClock
    from shared.contract import ScheduleMeeting
    from shared.contract.commands import Command
    from shared.contract.inbound import InboundCommand

    batches: list[list[tuple[Command, CommandContext]]] = []
    for start in range(0, len(records), INTAKE_BATCH):
        items: list[tuple[Command, CommandContext]] = []
        for _key, value in records[start : start + INTAKE_BATCH]:
            envelope = InboundCommand.model_validate_json(value)
            principal = Principal(
                subject=envelope.source, role=Role.SYSTEM_PUBLISHER, scope_level="system"
            )
            context = CommandContext(
                principal=principal,
                source=envelope.source,
                door="kafka",
                idempotency_key=f"kafka:{envelope.source}:{envelope.message_id}",
                occurred_at=envelope.occurred_at,
            )
            items.append((ScheduleMeeting.model_validate(envelope.payload), context))
        batches.append(items)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await migrate(pool, "meetings", MIGRATIONS)
        metrics_ = MeetingsMetrics(CollectorRegistry())
        store = PostgresEventStore(pool, metrics_)
        policy = PetitionPolicy.parse(MeetingsSettings().petition_ladder, 180)
        bus = CommandBus(store, OrgDirectory(pool), SystemClock(), metrics_, policy)
        started = time.perf_counter()
        for items in batches:
            outcomes = await bus.handle_batch(items)
            refused = [o for o in outcomes if isinstance(o, Rejection)]
            if refused:
                raise RuntimeError(f"the command bus refused {len(refused)}: {refused[0]}")
            on_done(len(items))
        return time.perf_counter() - started
    finally:
        await pool.close()


# -- 1. append via the Kafka door ----------------------------------------------------------


@benchmark(
    name=APPEND,
    needs=("kafka", "postgres", MEETINGS),
    requires=(KAFKA_CEILING,),
    timeout_s=420,
)
async def append_via_kafka(ctx: BenchContext) -> list[Figure]:
    """Inbound commands appended per second by the running meetings service, beside the
    eventsourcing library's recorder on the same database and the raw Kafka ceilings."""
    refuse_shared_database(ctx)
    assert ctx.kafka is not None and ctx.database_url is not None
    n = ctx.size(50_000, 5_000)
    warmup_n = ctx.size(2_000, 500)
    bus_n = ctx.size(5_000, 1_000)
    kafka_kwargs = aiokafka_client_kwargs(ctx.kafka)
    topic = ctx.kafka.commands_topic  # the service reads the same settings from the environment
    tag = f"b{ctx.run_id}"

    # Encoded before any clock starts; the peer stores the very events the service writes.
    with ctx.phase("encode commands"):
        warmup = inbound_commands(n, warmup_n, tag)
        records = inbound_commands(0, n, tag)
        bus_records = inbound_commands(n + warmup_n, bus_n, tag)
        wards = ward_ids(WARDS)
        states = [
            meeting_event(i, wards[i % WARDS], tag).model_dump_json().encode() for i in range(n)
        ]
    mean_command = sum(len(v) for _, v in records) / n
    mean_state = sum(len(s) for s in states) / n

    with ctx.phase("register the workload's cells"):
        await register_cells(ctx.database_url)
    conn = await asyncpg.connect(ctx.database_url)
    try:
        # What one database round trip costs here, on a quiet machine.
        rtt_us = await round_trip_us(conn)
        # The peer first, on a quiet machine too (the service is not running yet).
        peer_rate, peer_rss = await run_peer(ctx, conn, states, 1, "peer: one event per call")
        peer_batched_rate, _ = await run_peer(
            ctx, conn, states, INTAKE_BATCH, f"peer: {INTAKE_BATCH} events per call"
        )
        # Our command bus without the Kafka door, on the same quiet machine.
        with ctx.phase("command bus in-process", total=bus_n) as phase:
            bus_s = await command_bus_in_process(ctx.database_url, bus_records, phase.advance)
        bus_rate = bus_n / bus_s

        services, pid = await start_service(ctx)
        # Warm-up: the intake joins its group, gets its partitions and reads a few batches.
        base = await max_position(conn)
        with ctx.phase("warm-up", total=warmup_n) as phase:
            await produce(kafka_kwargs, topic, warmup)
            await wait_for_appended(conn, base, warmup_n, timeout_s=60, on_progress=phase.advance)

        async def why_not() -> str:
            snap = await metrics(services)
            return f"; dead-lettered so far: {snap.total('chibo_dlq_records_total'):.0f}"

        base = await max_position(conn)
        before = await metrics(services)
        produced_s = 0.0
        with (
            PeakRss(pid=pid) as service_rss,
            stack_cpu(ctx) as cpu,
            ctx.phase("append", total=n) as phase,
        ):

            async def send() -> None:
                nonlocal produced_s
                produced_s = await produce(kafka_kwargs, topic, records)

            sender = asyncio.create_task(send())
            try:
                done_at = await wait_for_appended(
                    conn, base, n, timeout_s=240, on_progress=phase.advance, why_not=why_not
                )
            finally:
                await sender
        elapsed = done_at - phase.started
        after = await metrics(services)
        last = await last_in_relay_order(conn)
        relay_done = await wait_relay_covers(conn, last, timeout_s=120)
        relay_behind_s = relay_done - done_at
    finally:
        await conn.close()

    rate = n / elapsed
    handler_s, batches = histogram_delta(
        before, after, "faststream_received_processed_messages_duration_seconds"
    )
    append_s, appends = histogram_delta(before, after, "chibo_event_append_duration_seconds")
    accepted = after.total("chibo_commands_total", door="kafka", outcome="accepted") - before.total(
        "chibo_commands_total", door="kafka", outcome="accepted"
    )
    dead = after.total("chibo_dlq_records_total") - before.total("chibo_dlq_records_total")
    split = {
        "wall_s": round(elapsed, 3),
        "handler_s": round(handler_s, 3),
        "outside_handler_s": round(elapsed - handler_s, 3),
        "store_append_s": round(append_s, 3),
        "handler_other_s": round(handler_s - append_s, 3),
        "batches": int(batches),
        "mean_batch": round(accepted / batches, 1) if batches else None,
        "appends": int(appends),
        "dead_lettered": int(dead),
        "cpu_share_of_one_core": cpu.shares(),
    }
    per_command_ms = elapsed / n * 1000
    mean_batch = accepted / batches if batches else float(INTAKE_BATCH)
    floor_ms = ROUND_TRIPS_PER_BATCH * rtt_us / 1000 / mean_batch
    split["ms_per_command"] = round(per_command_ms, 3)
    split["round_trip_floor_ms_per_command"] = round(floor_ms, 3)
    profile = (
        f"{per_command_ms:.3f} ms per command, of which the {ROUND_TRIPS_PER_BATCH} database "
        f"round trips per batch at {rtt_us:.0f} us each are {floor_ms:.3f} ms "
        f"({floor_ms / per_command_ms:.0%}); time split over {elapsed:.2f} s: "
        f"intake handler {handler_s / elapsed:.0%} "
        f"({int(batches)} batches, mean {split['mean_batch']} commands), of which "
        f"PostgresEventStore.write {append_s / elapsed:.0%} "
        f"({append_s / max(appends, 1) * 1000:.2f} ms per batch write) and the rest of the "
        f"handler (parse, validate, decide, idempotency lookup, load, commit, ack) "
        f"{(handler_s - append_s) / elapsed:.0%}; outside the handler (fetch, framework) "
        f"{(elapsed - handler_s) / elapsed:.0%}. {cpu.summary()}. The command bus alone "
        f"(in-process, no Kafka): {bus_rate:,.0f} commands/s"
    )
    common = {
        "commands": n,
        "warmup_commands": warmup_n,
        "wards": WARDS,
        "partitions": ctx.kafka.partitions,
        "intake_batch_size": INTAKE_BATCH,
        "mean_command_bytes": round(mean_command, 1),
        "mean_event_bytes": round(mean_state, 1),
        "seconds": round(elapsed, 3),
        "produce_seconds": round(produced_s, 3),
        "relay_behind_seconds": round(relay_behind_s, 3),
        "split": split,
        "command_bus_in_process_per_s": round(bus_rate, 1),
    }
    workload = (
        f"{n} ScheduleMeeting commands (~{mean_command:.0f} B, {WARDS} ward keys, 1 event "
        f"of ~{mean_state:.0f} B each) produced while the service ran, after a {warmup_n}-"
        f"command warm-up; clock from the first send to the poll that saw all {n} events "
        f"committed ({elapsed:.2f} s; the producer was done after {produced_s:.2f} s; the "
        f"relay had published them all {relay_behind_s:.2f} s after the last commit)"
    )
    peer = Figure.reference(
        PEER_APPEND,
        peer_rate,
        "events/s",
        peak_rss_mib=peer_rss,
        notes=(
            f"eventsourcing {_version('eventsourcing')} PostgresApplicationRecorder on the same "
            f"database: {n} events of ~{mean_state:.0f} B, one new originator (stream) per "
            "insert_events call, version 1, each call its own transaction (the library's "
            "default: table lock, NOTIFY, insert); synchronous psycopg 3 in one thread"
        ),
        params={"events": n, "events_per_call": 1, "mean_state_bytes": round(mean_state, 1)},
    )
    peer_batched = Figure.reference(
        PEER_APPEND_BATCHED,
        peer_batched_rate,
        "events/s",
        notes=(
            f"the same peer with {INTAKE_BATCH} new streams per insert_events call: the "
            "commit granularity of our intake batches (one transaction, no per-event checks "
            "or idempotency)"
        ),
        params={"events": n, "events_per_call": INTAKE_BATCH},
    )
    ours_peak = service_rss.peak_mib
    round_trip = Figure.reference(
        ROUND_TRIP,
        rtt_us,
        "us",
        better="lower",
        notes=(
            f"median asyncpg 'select 1' round trip on the same database, {ROUND_TRIPS} "
            "in a row, before the service started: the unit the intake pays "
            f"{ROUND_TRIPS_PER_BATCH} times per batch"
        ),
        params={"round_trips": ROUND_TRIPS},
    )
    return [
        round_trip,
        peer,
        peer_batched,
        Figure.against(
            peer,
            APPEND,
            rate,
            "events/s",
            peak_rss_mib=ours_peak,
            notes=f"{workload}. Profile: {profile}. Peak RSS is the meetings process's.",
            params={**common, "target_ratio": 3.0},
        ),
        Figure.against(
            peer_batched,
            f"{APPEND}.vs_batched_peer",
            rate,
            "events/s",
            peak_rss_mib=ours_peak,
            notes="the same figure beside the peer committing 500 streams per call",
        ),
        Figure.against(
            ctx.figure(RAW_CONSUME),
            f"{APPEND}.vs_raw_consume",
            rate,
            "msg/s",
            peak_rss_mib=ours_peak,
            notes="the same figure (one command message = one event) beside raw aiokafka reads",
        ),
        Figure.against(
            ctx.figure(RAW_PRODUCE),
            f"{APPEND}.vs_raw_produce",
            rate,
            "msg/s",
            peak_rss_mib=ours_peak,
            notes="the same figure beside raw aiokafka sends (what an upstream can push)",
        ),
        Figure.against(
            peer,
            "write.command_bus_in_process",
            bus_rate,
            "events/s",
            notes=(
                f"{bus_n} of the same commands (distinct meetings) through CommandBus."
                f"handle_batch in the benchmark process, {INTAKE_BATCH} per batch, with the "
                "Kafka door's contexts, parsed before the clock started: the intake without "
                "Kafka and FastStream"
            ),
            params={"commands": bus_n, "batch": INTAKE_BATCH, "seconds": round(bus_s, 3)},
        ),
    ]


# -- 2. the relay --------------------------------------------------------------------------


@benchmark(
    name=RELAY,
    needs=("kafka", "postgres", MEETINGS),
    requires=(KAFKA_CEILING,),
    timeout_s=240,
)
async def relay(ctx: BenchContext) -> list[Figure]:
    """Relay throughput: a backlog written while the service was down, published to Kafka
    once it starts, events per second until the checkpoint covers it."""
    refuse_shared_database(ctx)
    assert ctx.database_url is not None and ctx.services is not None
    n = ctx.size(100_000, 10_000)
    tag = f"r{ctx.run_id}"
    services = ctx.services
    await asyncio.to_thread(services.stop, MEETINGS)

    pool = await asyncpg.create_pool(ctx.database_url, min_size=1, max_size=2)
    assert pool is not None
    conn = await asyncpg.connect(ctx.database_url)
    try:
        await migrate(pool, "meetings", MIGRATIONS)
        with ctx.phase("write the backlog", total=n) as phase:
            await write_backlog(pool, n, tag, on_written=phase.advance)
        start_at = await relay_checkpoint(conn) or (0, 0)
        target = await last_in_relay_order(conn)
        pending = await count_between(conn, start_at, target)

        # The service is started in a thread; its relay publishes before /ready answers,
        # so the checkpoint is watched from here while it starts.
        seen: list[tuple[float, tuple[int, int]]] = []
        service_rss: PeakRss | None = None
        cpu: CpuMeter | None = None
        with ctx.phase("relay", total=pending) as phase:
            spawned = time.perf_counter()
            starter = asyncio.create_task(start_service(ctx))
            deadline = time.monotonic() + 180
            current = start_at
            try:
                while current < target:
                    pid = services.pid(MEETINGS)
                    if service_rss is None and pid is not None:
                        service_rss = PeakRss(pid=pid).__enter__()
                    checkpoint = await relay_checkpoint(conn)
                    if checkpoint is not None and checkpoint > current:
                        seen.append((time.perf_counter(), checkpoint))
                        if cpu is None:
                            cpu = stack_cpu(ctx).__enter__()
                        phase.advance(await count_between(conn, current, checkpoint))
                        current = checkpoint
                    if starter.done() and starter.exception() is not None:
                        raise RuntimeError("meetings did not start") from starter.exception()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"relay at {current}, not {target}, after 180 s")
                    await asyncio.sleep(POLL_S / 2.5)
            finally:
                if cpu is not None:
                    cpu.__exit__(None, None, None)
                if service_rss is not None:
                    service_rss.__exit__(None, None, None)
            await starter
        first_at, first = seen[0]
        done_at = seen[-1][0]
        covered_first = await count_between(conn, start_at, first)
    finally:
        await conn.close()
        await pool.close()

    timed = pending - covered_first
    elapsed = done_at - first_at
    rate = timed / elapsed
    with_start = pending / (done_at - spawned)
    return [
        Figure.against(
            ctx.figure(RAW_PRODUCE),
            RELAY,
            rate,
            "msg/s",
            notes=(
                f"a backlog of {pending} MeetingScheduled events written with "
                f"PostgresEventStore.append while the service was stopped; clock from the "
                f"first checkpoint move to the one covering the last event ({timed} events "
                f"in {elapsed:.2f} s; the first batch of {covered_first} came "
                f"{first_at - spawned:.2f} s after the process was spawned; with start-up "
                f"included: {with_start:,.0f} events/s). {cpu.summary() if cpu else ''}; "
                "peak RSS is the meetings process's"
            ),
            peak_rss_mib=service_rss.peak_mib if service_rss else None,
            params={
                "events": pending,
                "timed_events": timed,
                "seconds": round(elapsed, 3),
                "first_batch_after_spawn_s": round(first_at - spawned, 3),
                "relay_batch_size": RELAY_BATCH,
                "checkpoints_seen": len(seen),
                "cpu_share_of_one_core": cpu.shares() if cpu else None,
            },
        )
    ]


# -- 3. the gap-safe read order ------------------------------------------------------------

_SELECT_NAIVE = """
select transaction_id::text::bigint as txid, global_position, event_id::text, event_type,
       schema_version, stream_id, stream_version, ward_id, payload, occurred_at, recorded_at,
       correlation_id::text, causation_id::text, actor, source
from meetings.events
where global_position > $1
order by global_position
limit $2
"""


async def walk_gap_safe(pool: asyncpg.Pool, n: int) -> float:
    txid, position, read = 0, 0, 0
    started = time.perf_counter()
    while read < n:
        rows = await pool.fetch(_SELECT_BATCH, str(txid), position, RELAY_BATCH)
        if not rows:
            break
        read += len(rows)
        txid, position = rows[-1]["txid"], rows[-1]["global_position"]
    elapsed = time.perf_counter() - started
    if read < n:
        raise RuntimeError(f"the gap-safe walk read {read} rows, not {n}")
    return elapsed


async def walk_naive(pool: asyncpg.Pool, n: int) -> float:
    position, read = 0, 0
    started = time.perf_counter()
    while read < n:
        rows = await pool.fetch(_SELECT_NAIVE, position, RELAY_BATCH)
        if not rows:
            break
        read += len(rows)
        position = rows[-1]["global_position"]
    elapsed = time.perf_counter() - started
    if read < n:
        raise RuntimeError(f"the naive walk read {read} rows, not {n}")
    return elapsed


@benchmark(name=GAP_SAFE, needs=("postgres",), timeout_s=180)
async def gap_safe_cost(ctx: BenchContext) -> list[Figure]:
    """The relay's gap-safe batch query (transaction id order, below the oldest running
    transaction) beside the naive global_position order, walking the same rows."""
    refuse_shared_database(ctx)
    assert ctx.database_url is not None
    n = ctx.size(100_000, 10_000)
    rounds = 3
    pool = await asyncpg.create_pool(ctx.database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        await migrate(pool, "meetings", MIGRATIONS)
        have = int(await pool.fetchval("select count(*) from meetings.events"))
        if have < n:
            with ctx.phase("write the backlog", total=n - have) as phase:
                await write_backlog(pool, n - have, f"g{ctx.run_id}", on_written=phase.advance)
        # Analysed and cached alike for both (a fresh backlog has no statistics yet).
        await pool.execute("analyze meetings.events")
        await walk_naive(pool, n)
        gap_safe: list[float] = []
        naive: list[float] = []
        with ctx.phase("walk", total=2 * rounds) as phase:
            for _ in range(rounds):  # interleaved, so that noise hits both alike
                gap_safe.append(await walk_gap_safe(pool, n))
                phase.advance()
                naive.append(await walk_naive(pool, n))
                phase.advance()
        plans = {
            "gap_safe": await _explain(pool, _SELECT_BATCH, "0", 0, RELAY_BATCH),
            "naive": await _explain(pool, _SELECT_NAIVE, 0, RELAY_BATCH),
        }
    finally:
        await pool.close()
    gap_s, naive_s = statistics.median(gap_safe), statistics.median(naive)
    naive_fig = Figure.reference(
        "write.naive_order_read",
        n / naive_s,
        "rows/s",
        notes=(
            f"{n} rows in batches of {RELAY_BATCH} by 'global_position > $1 order by "
            f"global_position', the relay's columns, asyncpg; median of {rounds} walks "
            f"({', '.join(f'{s:.2f}' for s in naive)} s); first batch server-side "
            f"{plans['naive']}"
        ),
        params={"rows": n, "batch": RELAY_BATCH, "seconds": [round(s, 3) for s in naive]},
    )
    return [
        naive_fig,
        Figure.against(
            naive_fig,
            GAP_SAFE,
            n / gap_s,
            "rows/s",
            notes=(
                f"the relay's _SELECT_BATCH over the same {n} rows: median of {rounds} walks "
                f"({', '.join(f'{s:.2f}' for s in gap_safe)} s), interleaved with the naive "
                f"ones; first batch server-side {plans['gap_safe']}"
            ),
            params={"rows": n, "batch": RELAY_BATCH, "seconds": [round(s, 3) for s in gap_safe]},
        ),
    ]


async def _explain(pool: asyncpg.Pool, query: str, *args: Any) -> str:
    """The server-side execution time and plan shape of one batch."""
    rows = await pool.fetch(f"explain (analyze, format json) {query}", *args)
    plan = json.loads(rows[0][0])[0]
    nodes = []
    node = plan["Plan"]
    while node is not None:
        nodes.append(node["Node Type"])
        children = node.get("Plans") or []
        node = children[0] if children else None
    return f"{plan['Execution Time']:.2f} ms ({' > '.join(nodes)})"


# -- 4. loading an aggregate ---------------------------------------------------------------


@benchmark(name=AGGREGATE, needs=("postgres",), timeout_s=180)
async def aggregate_load(ctx: BenchContext) -> list[Figure]:
    """PostgresEventStore.load() of a 200-event stream, with the stream cache beside
    without it."""
    refuse_shared_database(ctx)
    assert ctx.database_url is not None
    loads = ctx.size(2_000, 200)
    stream_events = 200
    rounds = 4
    pool = await asyncpg.create_pool(ctx.database_url, min_size=1, max_size=2)
    assert pool is not None
    metrics_ = MeetingsMetrics(CollectorRegistry())
    try:
        await migrate(pool, "meetings", MIGRATIONS)
        tag = f"a{ctx.run_id}"
        stream = f"meeting-{tag}"
        ward = ward_ids(WARDS)[0]
        writer = PostgresEventStore(pool, metrics_, cache_capacity=0)
        meta = EventMetadata(actor="bench", source="chibo-demo", occurred_at=datetime.now(UTC))
        events: list[DomainEvent] = [meeting_event(i, ward, tag) for i in range(stream_events)]
        async with writer.transaction() as conn:
            await writer.append(conn, stream, ward, 0, events, meta)
        stores = {
            "uncached": PostgresEventStore(pool, metrics_, cache_capacity=0),
            "cached": PostgresEventStore(pool, metrics_, cache_capacity=10_000),
        }
        for store in stores.values():  # warm-up: the cached store fills its cache here
            version, loaded = await store.load(stream)
            assert version == stream_events and loaded == events
        seconds = {name: 0.0 for name in stores}
        per_round = loads // rounds
        with ctx.phase("load", total=2 * per_round * rounds) as phase:
            for _ in range(rounds):  # interleaved, so that noise hits both alike
                for name, store in stores.items():
                    seconds[name] += await _time_loads(store, stream, per_round, stream_events)
                    phase.advance(per_round)
    finally:
        await pool.close()
    timed = per_round * rounds
    uncached = Figure.reference(
        "write.aggregate_load_uncached",
        timed / seconds["uncached"],
        "loads/s",
        notes=(
            f"PostgresEventStore(cache_capacity=0).load() of a {stream_events}-event "
            f"MeetingScheduled stream, {timed} times (every load reads and validates all "
            f"{stream_events} events)"
        ),
        params={"loads": timed, "stream_events": stream_events, "rounds": rounds},
    )
    return [
        uncached,
        Figure.against(
            uncached,
            AGGREGATE,
            timed / seconds["cached"],
            "loads/s",
            notes=(
                f"the same with cache_capacity=10000: after the first load each load asks "
                f"only for events past the cached {stream_events} (none); interleaved with "
                f"the uncached loads in {rounds} rounds"
            ),
            params={"loads": timed, "stream_events": stream_events, "rounds": rounds},
        ),
    ]


async def _time_loads(store: PostgresEventStore, stream: str, count: int, expect: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        version, _events = await store.load(stream)
    elapsed = time.perf_counter() - started
    if version != expect:
        raise RuntimeError(f"loaded version {version}, not {expect}")
    return elapsed


def _version(package: str) -> str:
    from importlib.metadata import version

    with contextlib.suppress(Exception):
        return version(package)
    return "?"
