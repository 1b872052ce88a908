"""`chibo notifications`: the notifications' dead-letter state (deliveries given up after a
permanent failure or their last attempt), and resending them.

Exit codes: 0 done, 1 failed, 2 bad usage, 3 not found or unreachable."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from ops.target import target_or_exit
from services.notifications.domain.notices import QuietHours
from services.notifications.service_layer import resend as resend_service
from shared.clock import LOCAL_TZ, Clock, OffsetClock, SystemClock
from shared.postgres import UnsupportedPostgres, check_server_version

notifications_app = typer.Typer(help="Notifications: dead-lettered deliveries and resending.")
# Why a meeting notice or a deadline warning is not resent (the dispatcher's send-time
# check).
OUTDATED = {
    "superseded": "the meeting was moved or called off, or the petition resolved,"
    " escalated or given another deadline, since",
    "stale": "the meeting has begun, or the deadline warned of has passed",
}
dlq_app = typer.Typer(help="Deliveries given up (permanent failure, or retried too long).")
notifications_app.add_typer(dlq_app, name="dlq")


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        Console(stderr=True).print(f"[red]✗ PostgreSQL is unreachable: {exc}[/red]")
        raise typer.Exit(3) from exc
    except UnsupportedPostgres as exc:
        Console(stderr=True).print(f"[red]✗ {exc}[/red]")
        raise typer.Exit(1) from exc


async def _dead(database_url: str, limit: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        await check_server_version(conn)
        rows = await conn.fetch(
            "select delivery_id, trigger, channel, recipient, reason, attempts, last_error,"
            " created_at, subject from notifications.deliveries where status = 'dead'"
            " order by delivery_id desc limit $1",
            limit,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def _resend(
    database_url: str, ids: list[int] | None, quiet: QuietHours | None
) -> resend_service.Resent:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        await check_server_version(conn)
        return await resend_service.resend_dead(conn, ids, _clock().now(), quiet)
    finally:
        await conn.close()


def _clock() -> Clock:
    """The services' clock: moved by CLOCK_OFFSET_FILE in a test deployment, as theirs."""
    offset_file = os.environ.get("CLOCK_OFFSET_FILE")
    return OffsetClock(Path(offset_file)) if offset_file else SystemClock()


def _quiet_hours(text: str | None) -> QuietHours | None:
    """QUIET_HOURS as the notifications service reads it (its default when unset)."""
    if text is None:
        # Imported here: the service's settings pull in its whole app (slow to import).
        from services.notifications.bootstrap import NotificationsSettings

        text = str(NotificationsSettings.model_fields["quiet_hours"].default)
    try:
        return QuietHours.parse(text)
    except ValueError as exc:
        Console(stderr=True).print(f"[red]✗ --quiet-hours: {exc}[/red]")
        raise typer.Exit(2) from exc


def _local(at: datetime) -> str:
    return f"{at.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M:%S}"


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="The latest N.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False,
) -> None:
    """Dead-lettered deliveries, newest first, with the reason and the last error."""
    rows = _run(_dead(target_or_exit().database_url, limit))
    if as_json:
        typer.echo(json.dumps({"dead": rows}, ensure_ascii=False, default=str, indent=2))
        return
    out = Console(highlight=False)
    if not rows:
        out.print("[green]✓[/green] no dead-lettered deliveries")
        return
    table = Table(title="notifications.deliveries: dead", caption="times in Asia/Ho_Chi_Minh")
    for column in ("id", "created", "trigger", "channel", "person", "reason", "tries", "error"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            str(r["delivery_id"]),
            _local(r["created_at"]),
            r["trigger"],
            r["channel"],
            r["recipient"],
            r["reason"] or "—",
            str(r["attempts"]),
            (r["last_error"] or "")[:80],
        )
    out.print(table)
    out.print("Resend with: chibo notifications resend ID... (or --all)")


@notifications_app.command("resend")
def resend(
    ids: Annotated[list[int] | None, typer.Argument(help="Delivery ids (dlq list).")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every dead delivery.")] = False,
    quiet_hours: Annotated[
        str | None,
        typer.Option(
            "--quiet-hours",
            envvar="QUIET_HOURS",
            help="The deployment's quiet hours, as the notifications service's QUIET_HOURS"
            " (default 22:00-06:00, Asia/Ho_Chi_Minh; off: none).",
        ),
    ] = None,
) -> None:
    """Put dead-lettered deliveries back to pending. Exit 3 if an id is not dead-lettered.

    A notice goes out as a new one would: an urgent one at once, the others once quiet
    hours end. A meeting notice the meeting has made wrong or history (moved, called
    off: superseded; begun: stale), or a deadline warning the petition has (resolved,
    escalated, another deadline: superseded; the deadline passed: stale), is not resent:
    it stays dead-lettered, reported here.
    Safe to repeat: a delivery is sent again only while it is dead-lettered."""
    if bool(ids) == everything:
        Console(stderr=True).print("[red]✗ give delivery ids, or --all[/red]")
        raise typer.Exit(2)
    quiet = _quiet_hours(quiet_hours)
    done = _run(_resend(target_or_exit().database_url, None if everything else ids, quiet))
    missing = sorted(set(ids or ()) - set(done.not_before) - set(done.outdated))
    out = Console(highlight=False)
    now = sorted(i for i, at in done.not_before.items() if at <= _clock().now())
    held = sorted(i for i in done.not_before if i not in now)
    if now:
        out.print(f"[green]✓[/green] {len(now)} deliver(ies) back to pending, sent now: {now}")
    if held:
        until = _local(max(done.not_before[i] for i in held))
        out.print(
            f"[green]✓[/green] {len(held)} deliver(ies) back to pending, held by quiet hours"
            f" until {until}: {held}"
        )
    for reason, what in OUTDATED.items():
        skipped = sorted(i for i, r in done.outdated.items() if r == reason)
        if skipped:
            out.print(
                f"[yellow]! {len(skipped)} not resent, {what} ({reason}); they stay"
                f" dead-lettered: {skipped}[/yellow]"
            )
    if missing:
        Console(stderr=True).print(f"[red]✗ not dead-lettered: {missing}[/red]")
        raise typer.Exit(3)
    if not (done.not_before or done.outdated):
        out.print("nothing to resend")
