"""`chibo`: the operator's command line (typer + rich)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from typing import Annotated

import httpx
import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops import demo
from ops.stack import SERVICES, Stack, StackSettings, StartupError
from shared.auth import Role, TokenService
from shared.clock import LOCAL_TZ

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


@app.command("demo")
def run_demo(
    timeout_s: float = typer.Option(120.0, help="How long to wait for the results."),
) -> None:
    """Bring the stack up, schedule a month of meetings for three wards through it,
    and show the reports view and the e-mails that came out the other end."""
    stack = _stack()
    _bring_up(stack)
    month = demo.next_month(datetime.now(LOCAL_TZ).date())
    planned = demo.plan_month(month)
    meetings_url, reports_url = stack.service_url("meetings"), stack.service_url("reports")
    progress_columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    tokens = {
        ward: stack.issue_token("ward_official", "ward", ward, f"demo.{ward}")
        for ward in demo.DEMO_WARDS
    }
    with httpx.Client(timeout=10) as client:
        with Progress(*progress_columns, console=console) as progress:
            task = progress.add_task(f"scheduling meetings for {month:%m/%Y}", total=len(planned))
            for meeting in planned:
                status = demo.send(client, meetings_url, meeting, tokens[meeting.ward_id])
                if status not in (200, 201):
                    console.print(f"[red]✗ {meeting.meeting_id}: HTTP {status}[/red]")
                    raise typer.Exit(code=1)
                progress.advance(task)

        expected = {ward: n for ward, n in demo.DEMO_WARDS.items()}
        deadline = time.monotonic() + timeout_s
        with Progress(*progress_columns, console=console) as progress:
            in_report = progress.add_task("visible in the reports view", total=len(planned))
            in_mail = progress.add_task("e-mails received by the SMTP sink", total=len(planned))
            while True:
                counts = demo.report_counts(client, reports_url)
                mails = demo.delivered_recipients(str(stack.maildir))
                seen = sum(min(counts.get(w, 0), n) for w, n in expected.items())
                progress.update(in_report, completed=seen)
                progress.update(in_mail, completed=min(len(set(mails)), len(planned)))
                if seen == len(planned) and len(set(mails)) >= len(planned):
                    break
                if time.monotonic() > deadline:
                    console.print("[red]✗ results did not arrive in time; see the logs:[/red]")
                    for name in SERVICES:
                        console.print(f"  {name}: {stack.log_path(name)}")
                    raise typer.Exit(code=1)
                time.sleep(0.2)  # polling interval of a progress display, not a wait for an event

        table = Table(title=f"Lịch sinh hoạt chi bộ tháng {month:%m/%Y} — reports view")
        table.add_column("ward")
        table.add_column("cells", justify="right")
        table.add_column("meetings in report", justify="right")
        table.add_column("e-mails sent", justify="right")
        for ward, cells in expected.items():
            mailed = sum(1 for m in set(mails) if f".{ward}." in m)
            table.add_row(ward, str(cells), str(counts.get(ward, 0)), str(mailed))
        console.print(table)
        sample = client.get(f"{reports_url}/v1/wards/nam-ngan/meetings").json()
        console.print_json(data={**sample, "meetings": sample["meetings"][:2]})

    console.print(
        "\n[bold]Where to look[/bold] (the stack keeps running; stop it with `make down`):"
    )
    console.print(f"  report view   {reports_url}/v1/wards/nam-ngan/meetings")
    console.print(f"  all wards     {reports_url}/v1/wards")
    console.print(f"  API docs      {meetings_url}/docs")
    console.print(f"  e-mails       {stack.maildir}/new")
    for name in SERVICES:
        console.print(
            f"  {name:<13} {stack.service_url(name)}/metrics   log: {stack.log_path(name)}"
        )
    console.print(f"  kafka         {stack.kafka_bootstrap}   log: {stack.log_path('kafka')}")
    console.print(f"  postgres      {stack.database_url}")


if __name__ == "__main__":
    app()
