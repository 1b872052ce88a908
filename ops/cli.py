"""`chibo`: the operator's command line (typer + rich)."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import httpx
import structlog
import typer
from pydantic import SecretStr
from rich.console import Console, Group
from rich.json import JSON
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops import demo, notifications_cli
from ops import dlq as dlq_data
from ops import events as events_data
from ops import lag as lag_data
from ops import rebuild as rebuild_data
from ops import streams as stream_data
from ops.stack import SERVICES, Stack, StackSettings, StartupError
from ops.target import NotFound, Target, Unreachable, redact_url, target_or_exit
from services.reports.service_layer.rebuild import BuiltByNewerCode, HistoryTruncated
from shared.auth import Role, TokenService
from shared.clock import LOCAL_TZ
from shared.kafka import TopicConfigUnreadable
from shared.postgres import UnsupportedPostgres

app = typer.Typer(help="Chibo: party cell meetings, petitions, reports and notifications.")
stack_app = typer.Typer(help="The local stack: Kafka, PostgreSQL, SMTP sink and the services.")
app.add_typer(stack_app, name="stack")
token_app = typer.Typer(help="Bearer tokens for the HTTP API.")
app.add_typer(token_app, name="token")
console = Console()


def _stack() -> Stack:
    return Stack(StackSettings())


def _bring_up(stack: Stack) -> None:
    with console.status("starting the local stack") as status:
        try:
            stack.up(on_step=lambda part: status.update(f"starting {part}"))
        except StartupError as exc:
            console.print(f"[red]✗ {exc}[/red]")
            raise typer.Exit(code=1) from exc
    console.print("[green]✓[/green] stack is up: " + ", ".join(stack.status()))


@stack_app.command("up")
def stack_up() -> None:
    """Start every part, waiting for each to be ready."""
    _bring_up(_stack())


@stack_app.command("down")
def stack_down() -> None:
    """Stop every part. Data stays under .local/ for the next start."""
    stack = _stack()
    with console.status("stopping the local stack"):
        stack.down()
    console.print("[green]✓[/green] stack stopped")


@stack_app.command("status")
def stack_status() -> None:
    """Show which parts are running, and where their logs are."""
    stack = _stack()
    table = Table("part", "state", "log")
    for part, running in stack.status().items():
        state = "[green]running[/green]" if running else "[dim]stopped[/dim]"
        table.add_row(part, state, str(stack.log_path(part)))
    console.print(table)
    if not all(stack.status().values()):
        raise typer.Exit(code=3)


@token_app.command("issue")
def token_issue(
    role: Annotated[Role, typer.Option(help="The caller's role.")],
    scope: Annotated[
        str,
        typer.Option(help="LEVEL:UNIT (ward:nam-ngan, cell:nam-ngan.to-01, province:x), or system"),
    ],
    subject: Annotated[str, typer.Option(help="Who the token is for (an official's id).")],
    hours: Annotated[int, typer.Option(min=1, max=24 * 30, help="Lifetime in hours.")] = 12,
) -> None:
    """Issue a token signed with the local stack's key (AUTH_JWT_SECRET elsewhere)."""
    level, _, unit = scope.partition(":")
    if level != "system" and not unit:
        console.print("[red]✗ --scope must be LEVEL:UNIT, or system[/red]")
        raise typer.Exit(code=2)
    secret = os.environ.get("AUTH_JWT_SECRET") or _stack().auth_secret
    token = TokenService(SecretStr(secret)).issue(
        subject, role, level, unit or None, ttl=timedelta(hours=hours)
    )
    typer.echo(token)


@app.command("generate")
def generate_month(
    month: Annotated[str | None, typer.Option(help="YYYY-MM; default: the previous month")] = None,
    seed: Annotated[int, typer.Option(help="The district's seed.")] = 2026,
    wards: Annotated[int, typer.Option(min=1)] = 34,
    cells: Annotated[int, typer.Option(min=1)] = 311,
    out: Annotated[Path, typer.Option(help="Where commands.jsonl and expected.json go.")] = Path(
        ".local/generated"
    ),
    publish: Annotated[
        bool, typer.Option("--publish", help="Publish through the Kafka door and wait.")
    ] = False,
) -> None:
    """Generate a demo district's month (and its expected figures), and optionally publish
    it through the Kafka inbound door, to the local stack or KAFKA_BOOTSTRAP_SERVERS and
    DATABASE_URL. Publishing the same month again is idempotent."""
    from generator.__main__ import main as generator_main

    argv = ["--seed", str(seed), "--wards", str(wards), "--cells", str(cells), "--out", str(out)]
    if month:
        argv += ["--month", month]
    if publish:
        target = target_or_exit()
        argv += [
            "--publish",
            "--bootstrap",
            target.kafka.bootstrap_servers,
            "--database-url",
            target.database_url,
        ]
    raise typer.Exit(code=generator_main(argv))


@app.command("demo")
def run_demo(
    timeout_s: float = typer.Option(600.0, help="How long to wait for the results."),
) -> None:
    """Bring the stack up, publish a generated district's month (34 wards, 311 cells)
    through the Kafka door as an upstream system would, and show what came out."""
    from generator.publish import publish

    stack = _stack()
    _bring_up(stack)
    now = datetime.now(LOCAL_TZ)
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    out = stack.root / "demo" / f"{year}-{month:02d}"
    with console.status(f"generating the district's month {month:02d}/{year}"):
        generated = demo.generate_month(year, month, out)
    expected = generated.expected
    console.print(
        f"[green]✓[/green] generated {len(generated.commands):,} commands for "
        f"{len(expected['wards'])} wards → {out}"
    )
    report = asyncio.run(
        publish(
            generated.commands,
            stack.kafka_bootstrap,
            stack.database_url,
            timeout_s=timeout_s,
            console=console,
        )
    )
    if not report.ok:
        console.print(
            f"[red]✗ {len(report.rejected)} rejected, {len(report.missing)} missing; "
            f"see chibo dlq list and {stack.log_path('meetings')}[/red]"
        )
        if any(r.reason.startswith("rejected_already_") for r in report.rejected):
            # Same ids, other message ids: the month came from another generator version.
            console.print(
                "  This stack already holds this demo month as an older version of the "
                f"generator made it. Start afresh: make down && rm -rf {stack.root} && make demo"
            )
        raise typer.Exit(code=1)
    console.print(
        f"[green]✓[/green] {report.accepted:,} commands accepted through the Kafka door "
        f"in {report.total_seconds:.1f}s"
    )

    wanted = {w["ward_id"]: demo.meetings_scheduled(w) for w in expected["wards"]}
    district = next(u for u in expected["units"] if u["level"] == "district")
    token = stack.issue_token("district_official", "district", district["unit_id"], "demo")
    reports_url = stack.service_url("reports")
    notices_wanted = demo.expected_notices(generated)
    prefix = generated.district.config.id_prefix
    deadline = time.monotonic() + timeout_s
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with httpx.Client(timeout=10) as client, Progress(*columns, console=console) as progress:
        total = sum(wanted.values())
        in_report = progress.add_task("meetings in the reports view", total=total)
        # Quiet hours (22:00-06:00 Hà Nội) hold notices back: "held" counts as done here.
        in_mail = progress.add_task("petition notices sent or held", total=notices_wanted)
        while True:
            counts = demo.report_counts(client, reports_url, token)
            notices = demo.notice_counts(stack.database_url, prefix)
            done = notices.get("sent", 0) + notices.get("held", 0)
            progress.update(
                in_report, completed=sum(min(counts.get(w, 0), n) for w, n in wanted.items())
            )
            progress.update(in_mail, completed=min(done, notices_wanted))
            if all(counts.get(w, 0) >= n for w, n in wanted.items()) and done >= notices_wanted:
                break
            if time.monotonic() > deadline:
                console.print("[red]✗ results did not arrive in time; see the logs:[/red]")
                for name in SERVICES:
                    console.print(f"  {name}: {stack.log_path(name)}", soft_wrap=True)
                raise typer.Exit(1)
            time.sleep(0.2)  # polling interval of a progress display, not a wait for an event
    console.print(
        f"[green]✓[/green] petition notices: {notices.get('sent', 0):,} e-mailed to cell "
        f"and ward officials, {notices.get('held', 0):,} held until quiet hours end (06:00); "
        "the month's meeting notices are history (stale), see docs/notifications.md"
    )

    label = f"{year}-{month:02d}"
    rollup, diffs = _demo_rollup(reports_url, district["unit_id"], label, token, expected, deadline)
    table = Table(title=f"{rollup['title']} — {district['name']} (from the reports service)")
    for column in (
        "đảng bộ", "chi bộ", "phải dự", "đúng", "muộn", "không", "dự %",
        "<90%", "điểm", "KN", "báo cáo",
    ):  # fmt: skip
        if column == "đảng bộ":
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    short_status = {
        "submitted_on_time": "đúng hạn",
        "submitted_late": "muộn",
        "overdue": "quá hạn",
        "awaiting": "trong hạn",
        "in_progress": "—",
    }

    def row(name: str, f: dict[str, Any], status: str) -> None:
        regular, attendance = f["regular_meetings"], f["attendance"]
        rate = attendance["rate"]
        table.add_row(
            name,
            str(f["cells"]),
            str(f["members"]["counted"]),
            str(regular["held_on_planned_day"]),
            str(regular["held_late"]),
            str(regular["not_held"]),
            "—" if rate is None else f"{rate * 100:.1f}",
            str(attendance["cells_below_target"]),
            str(f["quality"]["average_score"] or "—"),
            str(f["petitions"]["raised"]),
            status,
        )

    for ward in rollup["wards"]:
        name = ward["unit"]["name"].removeprefix("Đảng bộ ")
        row(name, ward["figures"], short_status[ward["status"]["state"]])
    table.add_section()
    row("Tổng cộng", rollup["figures"], "")
    Console(width=max(console.width, 110)).print(table)  # a report table, not a log line
    if diffs:
        console.print(f"[red]✗ {len(diffs)} figures differ from the generator's:[/red]")
        for line in diffs[:20]:
            console.print(f"  {line}", soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(
        f"[green]✓[/green] every figure of the {len(rollup['wards'])} wards and the district "
        "equals the generator's own computation"
    )
    saved = _save_reports(reports_url, rollup, label, token, out)
    meetings_url = stack.service_url("meetings")
    first_ward = expected["wards"][0]["ward_id"]
    where = [
        f"  report (HTML) {saved}",
        f"  report (JSON) curl -H 'Authorization: Bearer {token}' "
        f"{reports_url}/v1/reports/{district['unit_id']}/{label}",
        f"                ?format=csv|html; a ward's: /v1/reports/{first_ward}/{label}",
        f"  API docs      {meetings_url}/docs",
        f"  e-mails       {stack.maildir}/new",
        "  lag, DLQ      .venv/bin/chibo lag    .venv/bin/chibo dlq list",
        *(
            f"  {name:<13} {stack.service_url(name)}/metrics   log: {stack.log_path(name)}"
            for name in SERVICES
        ),
        f"  kafka         {stack.kafka_bootstrap}   log: {stack.log_path('kafka')}",
        f"  postgres      {redact_url(stack.database_url)}",
    ]
    console.print(
        "\n[bold]Where to look[/bold] (the stack keeps running; stop it with `make down`):"
    )
    for line in where:
        console.print(line, soft_wrap=True)  # paths stay whole, to copy and paste


def _demo_rollup(
    reports_url: str,
    unit_id: str,
    month: str,
    token: str,
    expected: dict[str, Any],
    deadline: float,
) -> tuple[dict[str, Any], list[str]]:
    """The district roll-up once it equals the generator's figures (the last events may
    still be on their way), or as it is at the deadline, with the differences."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30, headers=headers) as client:
        while True:
            answer = client.get(f"{reports_url}/v1/reports/{unit_id}/{month}")
            answer.raise_for_status()
            rollup = answer.json()
            diffs = demo.report_differences(expected, rollup)
            if not diffs or time.monotonic() > deadline:
                return rollup, diffs
            time.sleep(0.2)  # polling interval of a progress display, not a wait for an event


def _save_reports(
    reports_url: str, rollup: dict[str, Any], month: str, token: str, out: Path
) -> Path:
    """The printable HTML of the district and of each ward, as the service serves it."""
    headers = {"Authorization": f"Bearer {token}"}
    units = [rollup["unit"]["unit_id"], *(w["unit"]["unit_id"] for w in rollup["wards"])]
    with httpx.Client(timeout=30, headers=headers) as client:
        for unit in units:
            page = client.get(f"{reports_url}/v1/reports/{unit}/{month}?format=html")
            page.raise_for_status()
            (out / f"report-{unit}.html").write_text(page.text, encoding="utf-8")
    return out / f"report-{units[0]}.html"


# -- operations: streams, DLQs, lag ---------------------------------------------------------
# Data access lives in ops/streams.py, ops/dlq.py and ops/lag.py; here is only the rendering.
# Exit codes: 0 done, 1 failed, 2 bad usage, 3 not found or unreachable.
# Against the local stack by default; KAFKA_BOOTSTRAP_SERVERS (and the other KAFKA_*
# settings) and DATABASE_URL point the commands at a deployment.

stream_app = typer.Typer(help="Streams in the event store (meetings.events), read-only.")
app.add_typer(stream_app, name="stream")
dlq_app = typer.Typer(help="The dead-letter topics: list what was refused, and re-drive it.")
app.add_typer(dlq_app, name="dlq")
app.add_typer(notifications_cli.notifications_app, name="notifications")

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


class DlqTopic(enum.StrEnum):
    commands = "commands"
    events = "events"


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(message: str, code: int) -> NoReturn:
    _err().print(f"[red]✗ {escape(message)}[/red]")
    raise typer.Exit(code=code)


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async data call; Unreachable and NotFound become exit 3, an unsupported
    PostgreSQL or a topic configuration Kafka will not show exit 1, with the message.

    Inside a running event loop (an async caller) the call gets a loop of its own on a
    worker thread."""
    # aiokafka logs every failed connection attempt; the CLI reports the outcome itself.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(make())
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, make()).result()
    except Unreachable as exc:
        variable = {"Kafka": "KAFKA_BOOTSTRAP_SERVERS", "PostgreSQL": "DATABASE_URL"}[exc.part]
        if os.environ.get(variable):
            hint = f"check {variable} and that {exc.part} is up there"
        else:
            hint = (
                f"this is the local stack's {exc.part}: start it with `chibo stack up`, "
                f"or set {variable} to use a deployment's"
            )
        _fail(f"{exc}\n  {hint}" if hint else str(exc), 3)
    except NotFound as exc:
        _fail(str(exc), 3)
    except UnsupportedPostgres as exc:
        _fail(str(exc), 1)
    except TopicConfigUnreadable as exc:
        _fail(f"{exc}: the CLI's Kafka user needs DescribeConfigs on the topic", 1)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _local(at: datetime | None, short: bool = False) -> str:
    if at is None:
        return "—"
    local = at.astimezone(LOCAL_TZ)
    return f"{local:%Y-%m-%d %H:%M:%S}" if short else local.isoformat(sep=" ", timespec="seconds")


def _clip(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _reading_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@stream_app.command("show")
def stream_show(
    stream_id: Annotated[str, typer.Argument(help="The stream, e.g. a meeting id.")],
    as_json: JsonOption = False,
) -> None:
    """A stream's events in order: version, global position, type and schema version, when
    it happened and was recorded (Asia/Ho_Chi_Minh), who and through which system, the
    correlation id, and the payload. Exit 3 if the stream does not exist."""
    target = target_or_exit()
    events = _run(lambda: stream_data.stream_events(target.database_url, stream_id))
    if as_json:
        _echo_json({"stream_id": stream_id, "events": [e.as_json() for e in events]})
        return
    out = _out()
    out.print(
        f"[bold]{escape(stream_id)}[/bold]  ward {escape(events[0].ward_id)}, "
        f"version {events[-1].stream_version}, {len(events)} event(s); "
        "times in Asia/Ho_Chi_Minh"
    )
    for event in events:
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="dim")
        facts.add_column()
        facts.add_row("global position", str(event.global_position))
        facts.add_row("event id", event.event_id)
        facts.add_row("occurred at", _local(event.occurred_at))
        facts.add_row("recorded at", _local(event.recorded_at))
        facts.add_row("actor", escape(event.actor))
        facts.add_row("source", escape(event.source))
        facts.add_row("correlation id", event.correlation_id or "—")
        if event.causation_id:
            facts.add_row("causation id", event.causation_id)
        payload = JSON(json.dumps(event.payload, ensure_ascii=False), indent=2)
        title = f"v{event.stream_version}  {event.event_type} (schema v{event.schema_version})"
        out.print(Panel(Group(facts, payload), title=escape(title), title_align="left"))


@stream_app.command("list")
def stream_list(
    ward: Annotated[str, typer.Option("--ward", help="The ward id, e.g. nam-ngan.")],
    limit: Annotated[int, typer.Option(min=1, help="At most this many streams.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """The ward's streams with their current versions. Exit 3 if the ward has none."""
    target = target_or_exit()
    streams = _run(lambda: stream_data.ward_streams(target.database_url, ward, limit))
    if as_json:
        _echo_json({"ward_id": ward, "streams": [s.as_json() for s in streams]})
        return
    table = Table(title=f"Streams of ward {escape(ward)}")
    table.add_column("stream")
    table.add_column("version", justify="right")
    table.add_column("first event")
    table.add_column("last recorded (Asia/Ho_Chi_Minh)")
    for s in streams:
        table.add_row(
            escape(s.stream_id),
            str(s.version),
            s.first_event_type or "—",
            _local(s.last_recorded_at),
        )
    out = _out()
    out.print(table)
    out.print(f"{len(streams)} stream(s); show one with: chibo stream show STREAM_ID")


def _read_dlq(target: Target, kind: DlqTopic, quiet: bool) -> dlq_data.DlqListing:
    topic = dlq_data.dlq_topic(target.kafka, kind.value)
    err = _err()
    if quiet or not err.is_terminal:
        return _run(lambda: dlq_data.read_dlq(target.kafka, topic))
    with _reading_progress(err) as progress:
        task = progress.add_task(f"reading {topic}", total=None)
        return _run(
            lambda: dlq_data.read_dlq(
                target.kafka,
                topic,
                on_total=lambda n: progress.update(task, total=n),
                on_record=lambda: progress.advance(task),
            )
        )


def _dlq_table(records: list[dlq_data.DlqRecord], title: str, with_consumer: bool) -> Table:
    table = Table(title=title, caption="times in Asia/Ho_Chi_Minh")
    table.add_column("when", min_width=10)
    table.add_column("reason", overflow="fold")
    if with_consumer:
        table.add_column("consumer", overflow="fold")
    table.add_column("detail", max_width=40)
    table.add_column("source", overflow="fold")
    table.add_column("message id", overflow="fold")
    table.add_column("key", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("DLQ p/o", overflow="fold")
    for r in records:
        row = [_local(r.dead_lettered_at, short=True), escape(r.reason)]
        if with_consumer:
            row.append(escape(r.consumer or "—"))
        row += [
            escape(_clip(r.detail, 96)),
            escape(r.source or "—"),
            escape(r.message_id or "—"),
            escape(r.key_text if r.key_text is not None else "—"),
            f"{len(r.value)} B",
            f"{r.partition}/{r.offset}",
        ]
        table.add_row(*row)
    return table


def _reasons_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{escape(reason)} {n}" for reason, n in counts.items()) or "none"


TopicOption = Annotated[
    DlqTopic,
    typer.Option("--topic", help="Which DLQ: commands (chibo.commands.dlq.v1) or events."),
]
ReasonOption = Annotated[
    list[str] | None,
    typer.Option("--reason", help="Only records with this dlq_reason (repeatable)."),
]


@dlq_app.command("list")
def dlq_list(
    topic: TopicOption = DlqTopic.commands,
    limit: Annotated[
        int, typer.Option(min=0, help="Show the latest N matching records; 0 shows all.")
    ] = 50,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
) -> None:
    """What was dead-lettered and why: reads the DLQ topic from the beginning to its end
    (as it was when the command started; no consumer group), then shows the latest
    records and a count by reason."""
    target = target_or_exit()
    listing = _read_dlq(target, topic, quiet=as_json)
    matching = dlq_data.select(listing.records, reasons=reason or ())
    shown = matching[-limit:] if limit else matching
    counts = dlq_data.DlqListing(listing.topic, matching).by_reason()
    if as_json:
        _echo_json(
            {
                "topic": listing.topic,
                "total": len(listing.records),
                "matching": len(matching),
                "by_reason": counts,
                "records": [r.as_json() for r in shown],
            }
        )
        return
    out = _out()
    if not matching:
        what = f" with reason {', '.join(reason)}" if reason else ""
        out.print(f"[green]✓[/green] {listing.topic}: no records{what}")
        return
    title = f"{listing.topic}: latest {len(shown)} of {len(matching)}"
    out.print(_dlq_table(shown, title, with_consumer=topic is DlqTopic.events))
    out.print(f"[bold]{len(matching)}[/bold] record(s) by reason: {_reasons_line(counts)}")
    for warning in dlq_data.redrive_warnings(topic.value, matching):
        out.print(f"[yellow]! {escape(warning)}[/yellow]")
    out.print(escape(dlq_data.listing_hint(topic.value)))


@dlq_app.command("redrive")
def dlq_redrive(
    topic: TopicOption = DlqTopic.commands,
    reason: ReasonOption = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="A DLQ record: PARTITION/OFFSET as `dlq list` shows it (DLQ p/o), or "
            "TOPIC/PARTITION/OFFSET of the DLQ record or of the original (its dlq_source). "
            "Repeatable.",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Select every record of the DLQ.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, send nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Publish selected DLQ records again: the original bytes, with the original key, to
    the topic they came from (chibo.commands.v1 for the commands DLQ, chibo.events.v1
    for the events DLQ), with a header redriven_from = the DLQ record's
    topic/partition/offset.

    Records go out in DLQ order (by partition and offset). It is safe to repeat. A command
    is carried out at most once per (source, message_id), so a command that was already
    carried out has no second effect; consumers drop an event at or below the stream
    version they already applied. Consumers apply each stream's events in order, so the
    events after a dead-lettered one were parked too (reason stream_gap): redrive them
    with it (e.g. --all, or --reason for both reasons) or after it. Fix the cause
    first (for unauthorised_source: allow-list the source; for newer_schema_version:
    upgrade the consumer): a record that meets the same check again is dead-lettered
    again, as a new DLQ record, and its stream's later ones with it. A copy cut short
    (dlq_truncated: the record was over 900,000 bytes) is sent whole, read again from its
    dlq_source; if that is gone, nothing is sent.

    Select with --reason, --source or --all (at least one)."""
    target = target_or_exit()
    positions = []
    for text in source or ():
        try:
            dlq_name = dlq_data.dlq_topic(target.kafka, topic.value)
            positions.append(dlq_data.parse_position(text, dlq=dlq_name))
        except ValueError as exc:
            _fail(f"--source {exc}", 2)
    if not (reason or positions or everything):
        _fail("say which records: --reason REASON, --source PARTITION/OFFSET, or --all", 2)
    listing = _read_dlq(target, topic, quiet=False)
    selected = dlq_data.select(listing.records, reasons=reason or (), positions=positions)
    missing = [p for p in positions if not any(r.matches({p}) for r in listing.records)]
    if missing:
        _fail(f"not in {listing.topic}: {', '.join(missing)}", 3)
    if not selected:
        _fail(f"no record of {listing.topic} matches the selection", 3)
    destination = dlq_data.origin_topic(target.kafka, topic.value)
    out = _out()
    out.print(
        _dlq_table(
            selected[:20],
            f"{len(selected)} record(s) of {listing.topic} → {destination}",
            with_consumer=topic is DlqTopic.events,
        )
    )
    if len(selected) > 20:
        out.print(f"… and {len(selected) - 20} more")
    for warning in dlq_data.redrive_warnings(topic.value, selected):
        out.print(f"[yellow]! {escape(warning)}[/yellow]")
    if dry_run:
        out.print(f"dry run: {len(selected)} record(s) would be re-sent to {destination}")
        return
    if not yes:
        typer.confirm(f"Re-send {len(selected)} record(s) to {destination}?", abort=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err(),
        disable=not _err().is_terminal,
    ) as progress:
        task = progress.add_task(f"re-sending to {destination}", total=len(selected))
        sent = _run(
            lambda: dlq_data.redrive(
                target.kafka, topic.value, selected, on_sent=lambda: progress.advance(task)
            )
        )
    out.print(
        f"[green]✓[/green] re-sent {sent} record(s) to {destination} "
        f"(header redriven_from); see the outcome with: chibo lag"
    )


@app.command("lag")
def lag(as_json: JsonOption = False) -> None:
    """How far behind each part is: each consumer group's lag per topic and partition
    (end offset minus committed offset), the relay's events committed but not yet
    published (and the age of the oldest), and how many records each DLQ holds.
    Exit 3 if Kafka or PostgreSQL is unreachable."""
    target = target_or_exit()
    report = _run(lambda: lag_data.measure(target))
    if as_json:
        _echo_json(report.as_json())
        return

    def behind(n: int, unit: str = "") -> str:
        text = f"{n}{unit}"
        return f"[green]{text}[/green]" if n == 0 else f"[yellow]{text}[/yellow]"

    table = Table(title=f"Lag at {_local(datetime.now(LOCAL_TZ))}")
    table.add_column("part")
    table.add_column("name")
    table.add_column("topic")
    table.add_column("behind", justify="right")
    table.add_column("detail")
    for group in report.groups:
        for topic_name in sorted({t for t, _ in group.partitions}):
            parts = sorted((p, n) for (t, p), n in group.partitions.items() if t == topic_name)
            table.add_row(
                "consumer group",
                group.group,
                topic_name,
                behind(sum(n for _, n in parts)),
                " ".join(f"p{p}={n}" for p, n in parts),
            )
    for relay in report.relays:
        age = f"oldest {relay.oldest_pending_s:.1f} s old; " if relay.pending_events else ""
        table.add_row(
            "relay",
            relay.relay,
            f"meetings.events → {target.kafka.events_topic}",
            behind(relay.pending_events, "+" if relay.capped else ""),
            f"{age}checkpoint at position {relay.global_position} ({_local(relay.checkpoint_at)})",
        )
    for size in report.dlqs:
        table.add_row(
            "DLQ",
            size.topic,
            "",
            behind(size.records),
            "records; see: chibo dlq list"
            + (" --topic events" if size.topic == target.kafka.events_dlq_topic else ""),
        )
    out = _out()
    out.print(table)
    out.print(f"Kafka {target.kafka.bootstrap_servers}, PostgreSQL {target.database_address}")


reports_app = typer.Typer(help="The reports service's projections.")
app.add_typer(reports_app, name="reports")


class _CurrentStderr:
    """A file that writes to the sys.stderr of the moment."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@reports_app.command("rebuild")
def reports_rebuild(
    batch_size: Annotated[int, typer.Option(min=1, max=50_000, help="Events per batch.")] = 5_000,
    if_outdated: Annotated[
        bool,
        typer.Option(
            "--if-outdated",
            help="Only when the tables were built by an older projection version (or never):"
            " a rebuild run before a rolling update, safe to run again.",
        ),
    ] = False,
    allow_downgrade: Annotated[
        bool,
        typer.Option(
            "--allow-downgrade",
            help="Rebuild even though a newer projection version built the tables: the"
            " rollback of a release, run with the older release's CLI.",
        ),
    ] = False,
    run_migrations: Annotated[
        bool,
        typer.Option(
            "--migrate",
            help="Apply the reports schema's migrations first, as a replica does at start.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Drop the report projections and rebuild them from the whole events topic, in one
    transaction: readers see the old projection until it commits, and the live consumer
    waits, then goes on (replicas of an older projection version stop consuming). Exit 3
    if Kafka or PostgreSQL is unreachable, 4 if the topic no longer holds its whole
    history, 5 if a newer projection version built the tables (see --allow-downgrade)."""
    target = target_or_exit()
    # Stdout is the result (--json); the services' log lines (migrations) go to stderr,
    # whichever stream sys.stderr is when they are written (a test runner swaps it).
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()))  # type: ignore[arg-type]
    started = time.monotonic()
    with _reading_progress(_err()) as bar:
        task = bar.add_task("Rebuilding the report projections", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            migrations, result = _run(
                lambda: rebuild_data.rebuild_reports(
                    target,
                    batch_size,
                    advance,
                    if_outdated=if_outdated,
                    allow_downgrade=allow_downgrade,
                    run_migrations=run_migrations,
                )
            )
        except HistoryTruncated as exc:
            _fail(str(exc), 4)
        except BuiltByNewerCode as exc:
            _fail(str(exc), 5)
    if migrations and not as_json:
        _out().print(f"[green]✓[/green] migrations applied: {', '.join(migrations)}")
    if result.already_current:
        if as_json:
            _echo_json({"migrations_applied": migrations, "already_current": True})
        else:
            _out().print("[green]✓[/green] the projections are already current: not rebuilt")
        return
    seconds = time.monotonic() - started
    summary = {
        "records": result.records,
        "applied": result.applied,
        "skipped": result.skipped,
        "seconds": round(seconds, 2),
        "events_per_second": round(result.records / seconds) if seconds else None,
        "migrations_applied": migrations,
        "already_current": False,
    }
    if as_json:
        _echo_json(summary)
        return
    _out().print(
        f"[green]✓[/green] rebuilt from {result.records:,} records in {seconds:.1f} s"
        f" ({summary['events_per_second'] or 0:,}/s): {result.applied:,} applied,"
        f" {result.skipped:,} unreadable or unknown skipped"
    )


events_app = typer.Typer(help="The events topic, published from the event store.")
app.add_typer(events_app, name="events")


def _republish_lines(plan: events_data.RepublishPlan) -> list[str]:
    topic = plan.topic
    if topic.partitions is None:
        on_kafka = f"{topic.name}: does not exist"
    else:
        starts = (
            f"partitions {topic.first_offsets} start past offset 0"
            if topic.truncated
            else "every partition starts at offset 0"
        )
        on_kafka = (
            f"{topic.name}: {len(topic.partitions)} partitions, {topic.records:,} records; {starts}"
        )
    at = (
        f"at global position {plan.checkpoint_position}"
        if plan.checkpoint_position is not None
        else "not started"
    )
    lines = [
        f"event store: {plan.events:,} events; relay {plan.relay} {at} "
        f"({plan.unpublished:,} not published yet)",
        on_kafka,
    ]
    if plan.new_topic is not None:
        what = "exists, empty" if plan.new_topic.exists else "to be created"
        lines.append(
            f"new topic {plan.new_topic.name}: {what}, {plan.new_topic_partitions} partitions, "
            "retention.ms=-1, retention.bytes=-1"
        )
    return lines


@events_app.command("republish")
def events_republish(
    to_topic: Annotated[
        str | None,
        typer.Option(
            "--to-topic",
            metavar="NAME",
            help="Re-publish into this new topic (created with the old one's partitions and "
            "unlimited retention) instead of the current one; then run every service with "
            "KAFKA_EVENTS_TOPIC=NAME.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Make the relay publish the whole event store (meetings.events) again, from its
    first event: for an events topic whose history is gone (the Kafka cluster was
    recreated empty) or incomplete (retention removed its first events).

    Stop every meetings replica first: holding the relay's lock, the command resets the
    relay's checkpoint to the start, and the next relay to lead publishes every event
    again in its order (each stream in version order). It refuses (exit 1, nothing
    changed) while a relay holds the lock. With --to-topic it first creates that topic;
    the services (and this CLI) must then be given KAFKA_EVENTS_TOPIC=NAME. Consumers
    drop what they already applied (by stream version), and a consumer group reads a
    topic it never read from its earliest offset. See docs/operations.md, "Re-publishing
    the events from the event store"."""
    target = Target.from_env()
    if to_topic is not None and to_topic == target.kafka.events_topic:
        _fail(f"--to-topic {to_topic} is the current events topic: name a new one", 2)
    if as_json and not (yes or dry_run):
        _fail("--json needs --yes (or --dry-run): there is no prompt to answer", 2)
    plan = _run(lambda: events_data.plan_republish(target, to_topic))
    refusal = plan.refusal()
    if as_json and (dry_run or refusal):
        _echo_json({"dry_run": dry_run, "refused": refusal, **plan.as_json()})
        if refusal and not dry_run:
            raise typer.Exit(code=1)
        return
    out = _out()
    if not as_json:
        for line in _republish_lines(plan):
            out.print(escape(line))
        for warning in plan.warnings():
            out.print(f"[yellow]! {escape(warning)}[/yellow]")
    if refusal and not dry_run:
        _fail(refusal, 1)
    if dry_run:
        if refusal:
            out.print(f"[yellow]! it would be refused: {escape(refusal)}[/yellow]")
        out.print(
            f"dry run: nothing changed; the relay would publish {plan.events:,} events "
            f"to {escape(plan.destination)} again"
        )
        return
    if not yes:
        typer.confirm(
            f"Reset relay {plan.relay} to the start, so that its next leader publishes "
            f"{plan.events:,} events to {plan.destination} again?",
            abort=True,
        )
    try:
        result = _run(lambda: events_data.republish(target, plan))
    except events_data.Refused as exc:
        _fail(str(exc), 1)
    if as_json:
        _echo_json(
            {
                "dry_run": False,
                "refused": None,
                **plan.as_json(),
                "events": result.events,
                "topic_created": result.topic_created,
            }
        )
        return
    if result.topic_created:
        out.print(
            f"[green]✓[/green] created {escape(result.topic)}: {plan.new_topic_partitions} "
            "partitions, retention.ms=-1, retention.bytes=-1"
        )
    out.print(
        f"[green]✓[/green] relay {plan.relay} reset to the start: the next relay to lead "
        f"publishes all {result.events:,} events to {escape(result.topic)} again"
    )
    if plan.settings:
        out.print(
            "Now set, for meetings, reports and notifications (every replica; the k8s "
            "ConfigMap chibo-config) and for this CLI:"
        )
        for name, value in plan.settings.items():
            out.print(f"  {name}={escape(value)}", soft_wrap=True)
        out.print("then start them; consumers read the new topic from its first record.")
    else:
        out.print("Now start meetings; consumers drop the events they already applied.")
    out.print("Follow it with: chibo lag (relay, then consumer groups, down to 0)")


if __name__ == "__main__":
    app()
