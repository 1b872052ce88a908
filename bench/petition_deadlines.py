"""Petition deadlines: the meetings service's deadline scheduler as its real process, on
the same broker and database as the ceilings.

- ``deadlines.burst``: 100,000 petitions (10,000 with --quick) raised through the Kafka
  door (``deadlines.intake_via_kafka``, beside ``kafka.raw_produce``); then the service's
  clock is moved past the last of their deadlines in one step, so that they all fall due
  at the same instant, and the time until every one has exactly one ``PetitionEscalated``
  is measured, with the escalation lag (p50/p99) from the move.
- ``deadlines.steady``: petitions raised at a steady rate with a first ladder level of
  0.0001 day (8.64 s), no clock moves; the lag from each deadline to its escalation
  (p50/p99) beside the scheduler's scan period measured in the same run.

See docs/benchmarks.md ("Petition deadlines") for what is timed and why.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.harness import BenchContext, Figure, MetricsSnapshot, PeakRss, benchmark, quantile
from bench.kafka_ceiling import NAME as KAFKA_CEILING
from bench.kafka_ceiling import RAW_PRODUCE
from bench.write_side import (
    CELLS_PER_WARD,
    MEETINGS,
    SOURCES,
    inbound_commands,
    inbound_records,
    max_position,
    metrics,
    produce,
    refuse_shared_database,
    register_cells,
    stack_cpu,
    start_service,
    wait_for_appended,
)
from shared.kafka import aiokafka_client_kwargs

BURST = "deadlines.burst"
STEADY = "deadlines.steady"
INTAKE = "deadlines.intake_via_kafka"
SCAN_PERIOD = "deadlines.scan_period"

WARDS = 200
WARMUP = 300  # ScheduleMeeting commands: they warm the intake up without adding deadlines
SCAN_INTERVAL_S = 0.25  # the service's default SCHEDULER_INTERVAL_S
SCHEDULER_BATCH = 500  # its default SCHEDULER_BATCH
# The first level short enough that deadlines fall due while the load runs: 0.0001 day.
STEADY_LADDER = "cell:0.0001,ward:15,district:30,province:45"
STEADY_FIRST_LEVEL_S = 0.0001 * 86_400
TARGET_P99_S = 1.0  # the issue: an escalation fires within 1 s of the deadline
# How far past the last deadline the clock is moved: the move must pass every deadline
# even though the offset file is written a moment after the database's clock was read.
MOVE_MARGIN_S = 0.05
DRAIN_POLL_S = 0.2  # the drain's poll; the figure itself comes from the events' times
SETTLE_S = 2.0  # scans allowed to double up before the exactly-once check

_CATEGORIES = (
    "land",
    "roads_infrastructure",
    "security_order",
    "environment",
    "social_policy",
    "other",
)
_STREETS = ("Lê Lai", "Trần Phú", "Nguyễn Huệ", "Hùng Vương", "Lý Thường Kiệt", "Bạch Đằng")
_PEOPLE = ("Ông Trần Văn Hùng", "Bà Nguyễn Thị Lan", "Ông Lê Văn Tám", "Bà Phạm Thị Hoa")
_TEXTS = (
    "Đường ngõ xuống cấp, đề nghị sửa chữa.",
    "Đèn chiếu sáng công cộng hỏng đã lâu, đề nghị thay mới.",
    "Rác thải tập kết sai nơi quy định, đề nghị xử lý.",
    "Đề nghị xem xét hỗ trợ hộ nghèo trong khu phố.",
)


# -- workload ------------------------------------------------------------------------------


def petition_payload(i: int, ward: str, tag: str) -> dict[str, Any]:
    """A valid RaisePetition payload. Each petition has a place of its own (a house
    number), so none is flagged as recurring: see the notes in docs/benchmarks.md."""
    return {
        "petition_id": f"kn-{tag}-{i:06d}",
        "ward_id": ward,
        "cell_id": f"{ward}.to-{i % CELLS_PER_WARD + 1:02d}",
        "category": _CATEGORIES[i % len(_CATEGORIES)],
        "place": f"Số {i + 1}, ngõ {i % 97 + 1}, đường {_STREETS[i % len(_STREETS)]}",
        "raised_by": _PEOPLE[i % len(_PEOPLE)],
        "text": _TEXTS[i % len(_TEXTS)],
    }


def raise_commands(start: int, count: int, tag: str) -> list[tuple[bytes, bytes]]:
    """RaisePetition records, keyed by ward, from the allow-listed sources in turn."""
    return inbound_records("RaisePetition", petition_payload, start, count, tag)


def streams_like(tag: str) -> str:
    return f"petition-kn-{tag}-%"


def write_offset(path: Path, seconds: float) -> None:
    """Write the service's clock offset in one step (the service reads the file on every
    clock read: it must never see a half-written one)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(repr(seconds))
    os.replace(tmp, path)


# -- probes --------------------------------------------------------------------------------


async def exactly_once(conn: asyncpg.Connection, tag: str) -> dict[str, int]:
    """Per petition of this run: how many PetitionRaised and PetitionEscalated events."""
    row = await conn.fetchrow(
        """
        with per as (
            select stream_id,
                   count(*) filter (where event_type = 'PetitionRaised') as raised,
                   count(*) filter (where event_type = 'PetitionEscalated') as escalated,
                   count(*) filter (where event_type = 'PetitionEscalated'
                                      and payload->>'reason' = 'deadline'
                                      and payload->>'to_level' = 'ward') as by_deadline
            from meetings.events
            where stream_id like $1
            group by stream_id)
        select count(*) as petitions,
               count(*) filter (where raised = 1) as raised_once,
               count(*) filter (where escalated = 1) as escalated_once,
               count(*) filter (where escalated = 0) as not_escalated,
               count(*) filter (where escalated > 1) as escalated_more,
               coalesce(sum(by_deadline), 0) as by_deadline
        from per
        """,
        streams_like(tag),
    )
    return {key: int(row[key]) for key in row.keys()}


def check_exactly_once(counts: dict[str, int], n: int) -> None:
    if not (
        counts["petitions"] == n
        and counts["raised_once"] == n
        and counts["escalated_once"] == n
        and counts["by_deadline"] == n
    ):
        raise RuntimeError(f"not every petition escalated exactly once: {counts} (of {n})")


async def deadlines_of(conn: asyncpg.Connection, tag: str) -> tuple[int, datetime, datetime]:
    row = await conn.fetchrow(
        "select count(*) as n, min(due_at) as first, max(due_at) as last"
        " from meetings.petition_deadlines where petition_id like $1",
        f"kn-{tag}-%",
    )
    return int(row["n"]), row["first"], row["last"]


def escalation_counts(before: MetricsSnapshot, after: MetricsSnapshot) -> tuple[float, float]:
    """(escalations by deadline to the ward level, scheduler scans) between two snapshots."""
    name = "chibo_petition_escalations_total"
    labels = {"level": "ward", "reason": "deadline"}
    escalated = after.total(name, **labels) - before.total(name, **labels)
    runs = "chibo_deadline_scheduler_runs_total"
    return escalated, after.total(runs) - before.total(runs)


def offset_file(ctx: BenchContext, label: str) -> Path:
    """A clock offset file in this run's temporary root (beside the services' logs)."""
    assert ctx.services is not None
    root = ctx.services.log(MEETINGS).parent.parent
    root.mkdir(parents=True, exist_ok=True)
    return root / f"clock-offset.{label}.{ctx.run_id}"


async def warm_up(
    ctx: BenchContext, conn: asyncpg.Connection, kafka_kwargs: dict[str, Any], tag: str
) -> None:
    """The intake joins its group and reads a few batches; no deadlines come of it."""
    assert ctx.kafka is not None and ctx.database_url is not None
    with ctx.phase("register the workload's cells"):
        await register_cells(ctx.database_url)
    records = inbound_commands(0, WARMUP, f"w{tag}")
    base = await max_position(conn)
    with ctx.phase("warm-up", total=WARMUP) as phase:
        await produce(kafka_kwargs, ctx.kafka.commands_topic, records)
        await wait_for_appended(conn, base, WARMUP, timeout_s=60, on_progress=phase.advance)


# -- 1. the burst --------------------------------------------------------------------------


@benchmark(
    name=BURST,
    needs=("kafka", "postgres", MEETINGS),
    requires=(KAFKA_CEILING,),
    timeout_s=900,
)
async def burst(ctx: BenchContext) -> list[Figure]:
    """100,000 petitions whose deadlines all pass at the same instant: time until each has
    exactly one escalation, and the escalation lag from that instant."""
    refuse_shared_database(ctx)
    assert ctx.kafka is not None and ctx.database_url is not None
    n = ctx.size(100_000, 10_000)
    tag = f"b{ctx.run_id}"
    kafka_kwargs = aiokafka_client_kwargs(ctx.kafka)
    topic = ctx.kafka.commands_topic
    with ctx.phase("encode commands"):
        records = raise_commands(0, n, tag)
    mean_command = sum(len(v) for _, v in records) / n

    clock_file = offset_file(ctx, "burst")
    write_offset(clock_file, 0.0)
    services, pid = await start_service(ctx, {"CLOCK_OFFSET_FILE": str(clock_file)})
    conn = await asyncpg.connect(ctx.database_url)
    try:
        await warm_up(ctx, conn, kafka_kwargs, tag)

        # -- intake: the petitions through the Kafka door, as an upstream sends them.
        base = await max_position(conn)
        produced_s = 0.0
        with PeakRss(pid=pid) as intake_rss, ctx.phase("raise petitions", total=n) as phase:

            async def send() -> None:
                nonlocal produced_s
                produced_s = await produce(kafka_kwargs, topic, records)

            sender = asyncio.create_task(send())
            try:
                intake_done = await wait_for_appended(
                    conn, base, n, timeout_s=400, on_progress=phase.advance
                )
            finally:
                await sender
        intake_s = intake_done - phase.started
        intake_rate = n / intake_s
        pending, first_due, last_due = await deadlines_of(conn, tag)
        if pending != n:
            raise RuntimeError(f"{pending} deadlines recorded for {n} petitions raised")
        spread_s = (last_due - first_due).total_seconds()

        # -- the move: one step past the last deadline, read on the database's clock.
        before = await metrics(services)
        with PeakRss(pid=pid) as drain_rss, stack_cpu(ctx) as cpu:
            with ctx.phase("escalate", total=n) as phase:
                moved_at: datetime = await conn.fetchval("select clock_timestamp()")
                offset_s = (last_due - moved_at).total_seconds() + MOVE_MARGIN_S
                write_offset(clock_file, offset_s)
                phase.restart_clock()
                service_now = await conn.fetchval(
                    "select $1::timestamptz + make_interval(secs => $2)", moved_at, offset_s
                )
                deadline = time.monotonic() + 600
                left = n
                while left:
                    await asyncio.sleep(DRAIN_POLL_S)
                    now_left = int(
                        await conn.fetchval(
                            "select count(*) from meetings.petition_deadlines"
                            " where due_at <= $1 and petition_id like $2",
                            service_now,
                            f"kn-{tag}-%",
                        )
                    )
                    phase.advance(left - now_left)
                    left = now_left
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{left} of {n} petitions not escalated after 600 s")
            polled_s = phase.elapsed_s
        after_drain = await metrics(services)
        await asyncio.sleep(SETTLE_S)  # further scans: anything doubled up would show now
        after = await metrics(services)
        counts = await exactly_once(conn, tag)
        check_exactly_once(counts, n)
        lags = [
            float(r[0])
            for r in await conn.fetch(
                "select extract(epoch from recorded_at - $2::timestamptz)::float8"
                " from meetings.events"
                " where event_type = 'PetitionEscalated' and stream_id like $1",
                streams_like(tag),
                moved_at,
            )
        ]
    finally:
        await conn.close()

    escalated_metric, scans = escalation_counts(before, after_drain)
    escalated_late, _ = escalation_counts(after_drain, after)
    total_s = max(lags)
    rate = n / total_s
    p50, p99 = quantile(lags, 0.5), quantile(lags, 0.99)
    intake = Figure.against(
        ctx.figure(RAW_PRODUCE),
        INTAKE,
        intake_rate,
        "msg/s",
        peak_rss_mib=intake_rss.peak_mib,
        notes=(
            f"{n} RaisePetition commands (~{mean_command:.0f} B InboundCommand envelopes, "
            f"{WARDS} ward keys, sources {', '.join(SOURCES)}) appended by the running "
            f"service through the Kafka door, one PetitionRaised each: clock from the first "
            f"send to the poll that saw all {n} committed ({intake_s:.2f} s; the producer "
            f"was done after {produced_s:.2f} s), after a {WARMUP}-command warm-up; peak "
            "RSS is the meetings process's"
        ),
        params={
            "petitions": n,
            "seconds": round(intake_s, 3),
            "produce_seconds": round(produced_s, 3),
            "mean_command_bytes": round(mean_command, 1),
            "wards": WARDS,
        },
    )
    common = {
        "petitions": n,
        "deadline_spread_s": round(spread_s, 3),
        "clock_offset_s": round(offset_s, 3),
        "moved_at_db": moved_at.isoformat(),
        "seconds": round(total_s, 3),
        "seconds_by_poll": round(polled_s, 3),
        "lag_p50_s": round(p50, 3),
        "lag_p99_s": round(p99, 3),
        "lag_max_s": round(max(lags), 3),
        "lag_min_s": round(min(lags), 3),
        "scheduler_batch": SCHEDULER_BATCH,
        "scheduler_scans": int(scans),
        "escalations_metric": int(escalated_metric),
        "escalations_metric_after_settle": int(escalated_late),
        "exactly_once": counts,
        "cpu_share_of_one_core": cpu.shares(),
    }
    how = (
        f"{n} petitions raised over {spread_s:.1f} s (their cell deadlines 7 days later "
        f"spread alike); the service's clock moved by {offset_s / 86_400:.4f} days in one "
        f"write of its CLOCK_OFFSET_FILE, {MOVE_MARGIN_S} s past the last deadline, at "
        f"{moved_at.isoformat()} on the database's clock. Time = the last "
        f"PetitionEscalated's recorded_at minus that instant ({total_s:.2f} s; the drain "
        f"poll saw none left after {polled_s:.2f} s). Checked after {SETTLE_S:g} s more: "
        f"{counts['escalated_once']} of {n} petitions with exactly one PetitionEscalated "
        f"(reason deadline, to ward), {counts['escalated_more']} with more, "
        f"{counts['not_escalated']} with none; chibo_petition_escalations_total rose by "
        f"{escalated_metric:.0f} ({escalated_late:.0f} after). {int(scans)} scans of up "
        f"to {SCHEDULER_BATCH}. {cpu.summary()}"
    )
    return [
        intake,
        Figure(
            BURST,
            rate,
            "events/s",
            ceiling_name=INTAKE,
            ceiling_value=intake_rate,
            peak_rss_mib=drain_rss.peak_mib,
            notes=(
                f"escalations per second; beside the intake of the same petitions (one "
                f"event each, msg/s = events/s). {how}. Peak RSS is the meetings process's"
            ),
            params=common,
        ),
        Figure(
            f"{BURST}.seconds",
            total_s,
            "s",
            ceiling_name=f"{INTAKE}.seconds",
            ceiling_value=intake_s,
            better="lower",
            notes=f"the time to escalate all {n}, beside the time their intake took",
            params={"petitions": n},
        ),
        Figure(
            f"{BURST}.lag_p50",
            p50,
            "s",
            ceiling_name=f"{BURST}.seconds",
            ceiling_value=total_s,
            better="lower",
            notes=(
                "recorded_at of each PetitionEscalated minus the instant the clock move "
                "made them all due (both on the database's clock); beside the whole "
                "drain's time: a backlog served in order puts the median near half of it"
            ),
            params={"petitions": n},
        ),
        Figure(
            f"{BURST}.lag_p99",
            p99,
            "s",
            ceiling_name=f"{BURST}.seconds",
            ceiling_value=total_s,
            better="lower",
            notes="the same lag, 99th percentile",
            params={"petitions": n},
        ),
    ]


# -- 2. steady load ------------------------------------------------------------------------


async def produce_paced(
    kafka_kwargs: dict[str, Any],
    topic: str,
    n: int,
    tag: str,
    rate: float,
    on_sent: Callable[[int], None],
    tick_s: float = 0.05,
) -> tuple[float, float]:
    """Send ``n`` RaisePetition records, ``rate`` per second in ticks of ``tick_s`` on an
    absolute schedule (no drift), each encoded when it is sent (its occurred_at is then);
    return (seconds it took, the largest delay of a tick behind schedule)."""
    producer = AIOKafkaProducer(**kafka_kwargs, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        sent, behind = 0, 0.0
        futures: list[asyncio.Future[Any]] = []
        tick = 0
        while sent < n:
            tick += 1
            due = min(n, round(tick * tick_s * rate))
            for key, value in raise_commands(sent, due - sent, tag):
                futures.append(await producer.send(topic, value=value, key=key))
            on_sent(due - sent)
            sent = due
            wake = started + tick * tick_s
            behind = max(behind, time.perf_counter() - wake)
            await asyncio.sleep(max(0.0, wake - time.perf_counter()))
        await asyncio.gather(*futures)
        return time.perf_counter() - started, behind
    finally:
        await producer.stop()


@benchmark(
    name=STEADY,
    needs=("kafka", "postgres", MEETINGS),
    timeout_s=300,
)
async def steady(ctx: BenchContext) -> list[Figure]:
    """Escalation lag under a steady load: petitions raised at a steady rate with a first
    deadline of 8.64 s, lag from each deadline to its escalation (p50/p99)."""
    refuse_shared_database(ctx)
    assert ctx.kafka is not None and ctx.database_url is not None
    rate = float(ctx.size(200, 50))
    duration_s = float(ctx.size(30, 15))
    n = int(rate * duration_s)
    tag = f"s{ctx.run_id}"
    kafka_kwargs = aiokafka_client_kwargs(ctx.kafka)
    topic = ctx.kafka.commands_topic

    services, pid = await start_service(ctx, {"PETITION_LADDER": STEADY_LADDER})
    conn = await asyncpg.connect(ctx.database_url)
    try:
        await warm_up(ctx, conn, kafka_kwargs, tag)
        before = await metrics(services)
        with (
            PeakRss(pid=pid) as service_rss,
            stack_cpu(ctx) as cpu,
            ctx.phase(
                f"raise {rate:.0f}/s, escalate after {STEADY_FIRST_LEVEL_S:.2f} s", n
            ) as phase,
        ):
            produce_s, behind_s = await produce_paced(
                kafka_kwargs, topic, n, tag, rate, phase.advance
            )
            # The last deadlines fall due STEADY_FIRST_LEVEL_S after the last raise.
            deadline = time.monotonic() + STEADY_FIRST_LEVEL_S + 120
            while True:
                await asyncio.sleep(0.5)
                row = await conn.fetchrow(
                    "select count(*) as n,"
                    " count(*) filter (where due_at > clock_timestamp() + interval '1 day')"
                    " as escalated"
                    " from meetings.petition_deadlines where petition_id like $1",
                    f"kn-{tag}-%",
                )
                if row["n"] == n and row["escalated"] == n:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{row['escalated']} of {n} petitions escalated ({row['n']} raised)"
                    )
        after_load = await metrics(services)
        await asyncio.sleep(SETTLE_S)
        after = await metrics(services)
        counts = await exactly_once(conn, tag)
        check_exactly_once(counts, n)
        rows = await conn.fetch(
            """
            select extract(epoch from e.recorded_at
                           - (e.payload->>'missed_deadline_at')::timestamptz)::float8 as lag,
                   extract(epoch from (e.payload->>'escalated_at')::timestamptz
                           - (e.payload->>'missed_deadline_at')::timestamptz)::float8
                       as decided,
                   extract(epoch from r.recorded_at - r.occurred_at)::float8 as intake
            from meetings.events e
            join meetings.events r
              on r.stream_id = e.stream_id and r.event_type = 'PetitionRaised'
            where e.event_type = 'PetitionEscalated' and e.stream_id like $1
            """,
            streams_like(tag),
        )
    finally:
        await conn.close()

    lags = [float(r["lag"]) for r in rows]
    decided = [float(r["decided"]) for r in rows]
    intake = [float(r["intake"]) for r in rows]
    escalated_metric, scans = escalation_counts(before, after_load)
    escalated_late, _ = escalation_counts(after_load, after)
    window_s = phase.elapsed_s
    period = window_s / scans if scans else math.nan
    p50, p99 = quantile(lags, 0.5), quantile(lags, 0.99)
    common = {
        "petitions": n,
        "rate_per_s": rate,
        "raise_seconds": round(produce_s, 3),
        "producer_behind_max_s": round(behind_s, 3),
        "first_level_s": STEADY_FIRST_LEVEL_S,
        "ladder": STEADY_LADDER,
        "lag_p50_s": round(p50, 3),
        "lag_p99_s": round(p99, 3),
        "lag_max_s": round(max(lags), 3),
        "lag_min_s": round(min(lags), 3),
        "decided_lag_p50_s": round(quantile(decided, 0.5), 3),
        "decided_lag_p99_s": round(quantile(decided, 0.99), 3),
        "intake_lag_p50_s": round(quantile(intake, 0.5), 3),
        "intake_lag_p99_s": round(quantile(intake, 0.99), 3),
        "scan_interval_s": SCAN_INTERVAL_S,
        "scheduler_scans": int(scans),
        "escalations_metric": int(escalated_metric),
        "escalations_metric_after_settle": int(escalated_late),
        "exactly_once": counts,
        "cpu_share_of_one_core": cpu.shares(),
        "target_p99_s": TARGET_P99_S,
    }
    how = (
        f"{n} RaisePetition commands through the Kafka door at {rate:.0f}/s for "
        f"{produce_s:.1f} s (at most {behind_s * 1000:.0f} ms behind schedule), the service "
        f"started with PETITION_LADDER={STEADY_LADDER} (first deadline "
        f"{STEADY_FIRST_LEVEL_S:.2f} s after the raise, no clock moves), so that deadlines "
        f"fall due continuously while petitions keep coming. Lag = PetitionEscalated."
        f"recorded_at (database clock, at insert, before commit) minus its "
        f"missed_deadline_at (the service's clock; same host, no offset). Max "
        f"{max(lags):.3f} s; decided (escalated_at in the payload) p50 "
        f"{quantile(decided, 0.5):.3f} s / p99 {quantile(decided, 0.99):.3f} s; intake "
        f"(PetitionRaised.recorded_at minus the envelope's occurred_at, set at send) "
        f"p50 {quantile(intake, 0.5):.3f} s / p99 {quantile(intake, 0.99):.3f} s. "
        f"{counts['escalated_once']} of {n} escalated "
        f"exactly once, {counts['escalated_more']} more than once. {cpu.summary()}"
    )
    scan = Figure.reference(
        SCAN_PERIOD,
        period,
        "s",
        better="lower",
        notes=(
            f"the scheduler's mean time from one scan to the next over the {window_s:.1f} s "
            f"window ({int(scans)} scans, chibo_deadline_scheduler_runs_total): the "
            f"configured {SCAN_INTERVAL_S} s pause plus the scan's own work. A deadline "
            "waits for the next scan: the lag's floor is uniform between 0 and this"
        ),
        params={"scans": int(scans), "window_s": round(window_s, 3)},
    )
    return [
        scan,
        Figure.against(
            scan,
            f"{STEADY}.lag_p50",
            p50,
            "s",
            peak_rss_mib=service_rss.peak_mib,
            notes=f"{how}. Peak RSS is the meetings process's",
            params=common,
        ),
        Figure.against(
            scan,
            f"{STEADY}.lag_p99",
            p99,
            "s",
            peak_rss_mib=service_rss.peak_mib,
            notes=(
                f"the same lag, 99th percentile; target {TARGET_P99_S:g} s: "
                f"{'met' if p99 <= TARGET_P99_S else 'NOT met'}"
            ),
            params={"target_p99_s": TARGET_P99_S, "petitions": n},
        ),
    ]
