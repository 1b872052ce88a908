"""Notifications: the dispatcher's sustained e-mail throughput into the local SMTP sink,
beside raw aiosmtplib into the same sink in the same run, and the lag with which durable
timers (reminders, deadline warnings, monthly checks) fire, beside the scan period.

- ``notifications.smtp``: N pending deliveries are written to the outbox in one
  transaction (what the consumer writes for N notices) with their recipients' contacts in
  the meetings service's store; the notifications service (its real process, with the
  meetings service answering its contact look-ups) sends them all. ``notify.smtp_sent``
  is N over the time from the commit to the last ``sent_at``; the ceiling
  ``notify.raw_smtp`` is raw aiosmtplib (``sendmail``) with the same number of open
  connections and the same message bytes, into the same sink: Postfix's ``smtp-sink`` when
  scripts/setup.sh fetched it, else the aiosmtpd sink.
- ``notifications.timers``: K timers fall due at a steady rate over a window; the lag
  from each one's due time to its firing (p50, p99) beside the configured scan period.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiosmtplib
import asyncpg

from bench.harness import SMTP_SINKS, BenchContext, CpuMeter, Figure, benchmark, quantile
from services.notifications.adapters.email import MailBytes
from services.notifications.adapters.templating import TemplateRenderer
from shared.clock import LOCAL_TZ

SMTP = "notifications.smtp"
TIMERS = "notifications.timers"
CONNECTIONS = 8  # SMTP_CONNECTIONS for the service, and the raw ceiling's connections
SCAN_INTERVAL_S = 0.25  # SCHEDULER_INTERVAL_S
TARGET_RATE = 1_000.0
SENDER = "Chibo <thong-bao@chibo.local>"  # MAIL_FROM's default
TARGET_P99_S = 1.0


def sample_message() -> Any:
    from datetime import timedelta

    from shared.contract import MeetingKind, MeetingScheduled

    meeting = MeetingScheduled(
        meeting_id="bench.m1",
        ward_id="bench-ward",
        cell_id="bench-ward.to-01",
        kind=MeetingKind.REGULAR,
        scheduled_start=datetime.now(LOCAL_TZ) + timedelta(days=3),
        agenda=["Quán triệt nghị quyết", "Kiến nghị của cử tri về đường giao thông"],
    )
    return TemplateRenderer().render("meeting_scheduled", {"meeting": meeting})


async def raw_smtp(host: str, port: int, n: int, tag: str) -> float:
    """msg/s of raw aiosmtplib: CONNECTIONS persistent connections, ``SMTP.sendmail`` of
    the bytes the service sends (the content encoded once, per-recipient headers)."""
    rendered = sample_message()
    mail = MailBytes(SENDER)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname=host, port=port, timeout=30)
        await client.connect()
        try:
            while not queue.empty():
                i = queue.get_nowait()
                recipient = f"raw-{tag}-{i}@thu.chibo.local"
                data = mail.message(
                    recipient,
                    rendered.subject,
                    rendered.text,
                    rendered.html,
                    f"raw-{tag}-{i}",
                    datetime.now(UTC),
                )
                await client.sendmail("thong-bao@chibo.local", [recipient], data)
        finally:
            await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return n / (time.perf_counter() - started)


async def wait_until(
    conn: asyncpg.Connection, query: str, *args: Any, timeout_s: float, every_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await conn.fetchval(query, *args):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done after {timeout_s:g} s: {query}")
        await asyncio.sleep(every_s)  # the probe's poll; the figures come from the rows' times


def cpu_meter(ctx: BenchContext) -> CpuMeter:
    """CPU of the sink, PostgreSQL (with its backends), the services and this process."""
    processes: dict[str, tuple[int | None, bool]] = {
        name: (pid, name == "postgres") for name, pid in ctx.pids().items() if pid is not None
    }
    processes["bench"] = (None, False)
    return CpuMeter(processes)


def service_env(ctx: BenchContext) -> dict[str, str]:
    return {
        "QUIET_HOURS": "off",
        "RATE_LIMITS": "email:0",  # capacity, not the configured limit
        "SMTP_CONNECTIONS": str(CONNECTIONS),
        "CELL_MAILBOX_PATTERN": "",
        "SCHEDULER_INTERVAL_S": str(SCAN_INTERVAL_S),
    }


@benchmark(
    name=SMTP,
    needs=("smtp", "postgres", "meetings", "notifications"),
    description="Dispatcher e-mail throughput into the SMTP sink beside raw aiosmtplib.",
    timeout_s=600,
)
async def smtp_throughput(ctx: BenchContext) -> list[Figure]:
    assert ctx.smtp_host and ctx.smtp_port and ctx.database_url and ctx.services
    n = ctx.size(20_000, 2_000)
    tag = ctx.run_id
    with ctx.phase("raw aiosmtplib into the sink", total=None):
        await raw_smtp(ctx.smtp_host, ctx.smtp_port, min(n // 10, 500), f"warm{tag}")
        with cpu_meter(ctx) as ceiling_cpu:
            ceiling_rate = await raw_smtp(ctx.smtp_host, ctx.smtp_port, n, tag)
    ceiling = Figure.reference(
        "notify.raw_smtp",
        ceiling_rate,
        "msg/s",
        notes=(
            f"{n} messages, {CONNECTIONS} persistent aiosmtplib connections, same MIME, "
            f"into {SMTP_SINKS.get(ctx.smtp_sink or '', 'the SMTP sink')}; " + ceiling_cpu.summary()
        ),
        params={"messages": n, "connections": CONNECTIONS},
    )
    await asyncio.to_thread(ctx.services.start, "meetings")
    await asyncio.to_thread(ctx.services.start, "notifications", service_env(ctx))
    rendered = sample_message()
    conn = await asyncpg.connect(ctx.database_url)
    try:
        people = [f"bench-{tag}.dv{i:06d}" for i in range(n)]
        await conn.execute(
            "insert into meetings.contacts (person_id, ward_id, email)"
            " select p, 'bench-ward', p || '@thu.chibo.local' from unnest($1::text[]) p",
            people,
        )
        with ctx.phase("dispatcher into the sink", total=n) as phase:
            await conn.execute(
                """
                insert into notifications.deliveries
                    (trigger_event_id, trigger, recipient, channel, subject, body_text,
                     body_html, priority, trigger_ref)
                select gen_random_uuid(), 'meeting_scheduled', p, 'email', $2, $3, $4,
                       'urgent', $5
                from unnest($1::text[]) p
                """,
                people,
                rendered.subject,
                rendered.text,
                rendered.html,
                f"bench-{tag}",
            )
            committed = await conn.fetchval("select clock_timestamp()")
            phase.restart_clock()
            meter = cpu_meter(ctx).__enter__()
            # The end is the last row's sent_at, so the probe (a scan: trigger_ref has no
            # index) can poll slowly and take little from the service's PostgreSQL.
            await wait_until(
                conn,
                "select count(*) = $2 from notifications.deliveries"
                " where trigger_ref = $1 and status = 'sent'",
                f"bench-{tag}",
                n,
                timeout_s=300,
                every_s=0.5,
            )
            meter.__exit__()
        row = await conn.fetchrow(
            "select min(sent_at) as first, max(sent_at) as last, count(*) as n"
            " from notifications.deliveries where trigger_ref = $1 and status = 'sent'",
            f"bench-{tag}",
        )
    finally:
        await conn.close()
    elapsed_s = (row["last"] - committed).total_seconds()
    rate = n / elapsed_s
    steady = (n - 1) / max((row["last"] - row["first"]).total_seconds(), 1e-9)
    verdict = "meets" if rate >= TARGET_RATE else "misses"
    return [
        ceiling,
        Figure.against(
            ceiling,
            "notify.smtp_sent",
            rate,
            notes=(
                f"{n} deliveries from the outbox's commit to the last 'sent' mark in "
                f"{elapsed_s:.1f} s (contact look-up per batch of 500, a 'sending' claim per "
                "batch, 'sent' marks group-committed, each connection's next DATA after its "
                f"last mark); {verdict} the {TARGET_RATE:.0f} "
                f"msg/s target; first-to-last sent {steady:,.0f} msg/s; sink {ctx.smtp_sink}; "
                f"{meter.summary()}"
            ),
            params={"messages": n, "connections": CONNECTIONS, "steady_msg_s": round(steady)},
        ),
    ]


@benchmark(
    name=TIMERS,
    needs=("postgres", "meetings", "notifications"),
    description="Lag from a timer's due time to its firing, beside the scan period.",
    timeout_s=300,
)
async def timer_lag(ctx: BenchContext) -> list[Figure]:
    assert ctx.database_url and ctx.services
    k = ctx.size(3_000, 500)
    window_s = ctx.size(15, 5)
    tag = ctx.run_id
    await asyncio.to_thread(ctx.services.start, "meetings")
    await asyncio.to_thread(ctx.services.start, "notifications", service_env(ctx))
    conn = await asyncpg.connect(ctx.database_url)
    try:
        with ctx.phase("timers falling due", total=k):
            # Monthly report checks of wards nobody holds an office in: each fires (and
            # re-arms for the next month) without sending anything.
            await conn.execute(
                """
                insert into notifications.timers (kind, ref_id, due_at, payload)
                select 'report_late', $1 || i, now() + interval '2 s'
                       + make_interval(secs => i * $3::float8 / $2),
                       jsonb_build_object('ward_id', $1 || i, 'month', '2026-11')
                from generate_series(0, $2 - 1) i
                """,
                f"bench-{tag}-w",
                k,
                float(window_s),
            )
            await wait_until(
                conn,
                "select count(*) = $2 from notifications.timers"
                " where ref_id like $1 and status = 'fired' and payload->>'month' = '2026-11'",
                f"bench-{tag}-w%",
                k,
                timeout_s=120,
            )
        lags = [
            float(r["lag"])
            for r in await conn.fetch(
                "select extract(epoch from fired_at - due_at) as lag from notifications.timers"
                " where ref_id like $1 and payload->>'month' = '2026-11'",
                f"bench-{tag}-w%",
            )
        ]
    finally:
        await conn.close()
    period = Figure.reference(
        "notify.scan_period",
        SCAN_INTERVAL_S,
        "s",
        better="lower",
        notes="SCHEDULER_INTERVAL_S: a timer waits for the next scan, so about half of it",
    )
    p99 = quantile(lags, 0.99)
    verdict = "meets" if p99 <= TARGET_P99_S else "misses"
    return [
        period,
        Figure.against(
            period,
            "notify.timer_lag_p50",
            quantile(lags, 0.5),
            notes=f"{k} timers due at a steady {k / window_s:.0f}/s over {window_s} s",
            params={"timers": k, "window_s": window_s},
        ),
        Figure.against(
            period,
            "notify.timer_lag_p99",
            p99,
            notes=f"max {max(lags):.3f} s; {verdict} the {TARGET_P99_S:g} s p99 target",
            params={"timers": k, "window_s": window_s},
        ),
    ]
