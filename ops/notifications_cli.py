"""`chibo notifications`: the notifications' dead-letter state (deliveries given up after a
permanent failure or their last attempt), and resending them.

Exit codes: 0 done, 1 failed, 2 bad usage, 3 not found or unreachable."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from ops.target import Target
from shared.clock import LOCAL_TZ

notifications_app = typer.Typer(help="Notifications: dead-lettered deliveries and resending.")
dlq_app = typer.Typer(help="Deliveries given up (permanent failure, or retried too long).")
notifications_app.add_typer(dlq_app, name="dlq")


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        Console(stderr=True).print(f"[red]✗ PostgreSQL is unreachable: {exc}[/red]")
        raise typer.Exit(3) from exc


async def _dead(database_url: str, limit: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows = await conn.fetch(
            "select delivery_id, trigger, channel, recipient, reason, attempts, last_error,"
            " created_at, subject from notifications.deliveries where status = 'dead'"
            " order by delivery_id desc limit $1",
            limit,
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def _resend(database_url: str, ids: list[int] | None) -> list[int]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        # Back to pending with fresh attempts; the dispatcher picks them up within a second.
        rows = await conn.fetch(
            "update notifications.deliveries set status = 'pending', attempts = 0,"
            " first_attempt_at = null, reason = null, next_attempt_at = now(),"
            " claimed_until = null"
            " where status = 'dead' and ($1::bigint[] is null or delivery_id = any($1))"
            " returning delivery_id",
            ids,
        )
    finally:
        await conn.close()
    return sorted(r["delivery_id"] for r in rows)


def _local(at: datetime) -> str:
    return f"{at.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M:%S}"


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, help="The latest N.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False,
) -> None:
    """Dead-lettered deliveries, newest first, with the reason and the last error."""
    rows = _run(_dead(Target.from_env().database_url, limit))
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
) -> None:
    """Put dead-lettered deliveries back to pending. Exit 3 if an id is not dead-lettered.

    Safe to repeat: a delivery is sent again only while it is dead-lettered."""
    if bool(ids) == everything:
        Console(stderr=True).print("[red]✗ give delivery ids, or --all[/red]")
        raise typer.Exit(2)
    done = _run(_resend(Target.from_env().database_url, None if everything else ids))
    missing = sorted(set(ids or ()) - set(done))
    out = Console(highlight=False)
    if done:
        out.print(f"[green]✓[/green] {len(done)} deliver(ies) back to pending: {done}")
    if missing:
        Console(stderr=True).print(f"[red]✗ not dead-lettered: {missing}[/red]")
        raise typer.Exit(3)
    if not done:
        out.print("nothing to resend")
