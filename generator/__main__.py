"""Generate a demo district's month, and optionally publish it.

    python -m generator --seed 2026 [--month 2026-10] [--wards 34] [--cells 311] \\
        [--no-district] [--prefix ID] --out PATH \\
        [--publish --bootstrap HOST:PORT --database-url URL [--timeout 600]]

Writes ``PATH/commands.jsonl`` (one ``InboundCommand`` envelope a line, in publishing
order; the record key of each is its payload's ``ward_id``, or for RegisterUnit its
``parent_id`` or else its ``unit_id``) and ``PATH/expected.json`` (see
``generator/expected.py``).

The month defaults to the PREVIOUS month in Asia/Ho_Chi_Minh: the meetings service
refuses a meeting opened or closed in the future (more than five minutes ahead of its
clock), so only a month wholly in the past can be published. ``--publish`` refuses a
month that has not ended yet. Ids start with the prefix (``demo<seed>``, plus the sizes
when they are not the defaults): publish another month of the same district into the same
stack with another ``--prefix``, or its registrations are refused as already done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from generator.build import generate
from generator.model import GeneratorConfig
from generator.month import at, parse_month, previous_month


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generator", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--month", help="YYYY-MM (default: the previous month)")
    parser.add_argument("--wards", type=int, default=34)
    parser.add_argument("--cells", type=int, default=311)
    parser.add_argument("--no-district", action="store_true", help="province → wards only")
    parser.add_argument("--prefix", help="id prefix (default demo<seed>[-<w>w<c>c])")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--publish", action="store_true")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers, HOST:PORT")
    parser.add_argument("--database-url", help="the meetings service's PostgreSQL")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    args = parser.parse_args(argv)
    console = Console(stderr=True)

    now = datetime.now(UTC)
    year, month = parse_month(args.month) if args.month else previous_month(now)
    config = GeneratorConfig(args.seed, args.wards, args.cells, prefix=args.prefix)
    if args.no_district:
        config = config.without_district()
    t0 = time.monotonic()
    generated = generate(config, year, month)
    district, month_obj, commands = generated.district, generated.month, generated.commands
    expected = generated.expected
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "commands.jsonl").open("w", encoding="utf-8") as f:
        for c in commands:
            f.write(json.dumps(c.envelope_json(), ensure_ascii=False) + "\n")
    (args.out / "expected.json").write_text(
        json.dumps(expected, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    console.print(
        f"[green]✓[/green] {month_obj.label}: {len(district.wards)} wards, "
        f"{len(district.cells)} cells, {district.member_count} members, "
        f"{len(commands)} commands in {time.monotonic() - t0:.1f}s → {args.out}"
    )
    if not args.publish:
        return 0
    if not (args.bootstrap and args.database_url):
        console.print("[red]✗ --publish needs --bootstrap and --database-url[/red]")
        return 2
    if at(month_obj.last_day, 23, 59) > now:
        console.print(
            f"[red]✗ {month_obj.label} has not ended: the service refuses meetings held in"
            " the future. Use a past month (the default is the previous one).[/red]"
        )
        return 2
    from generator.publish import publish

    report = asyncio.run(
        publish(
            commands, args.bootstrap, args.database_url, timeout_s=args.timeout, console=console
        )
    )
    rate = report.total / report.total_seconds if report.total_seconds else 0.0
    console.print(
        f"published {report.total} in {report.produce_seconds:.1f}s; all accounted for in"
        f" {report.total_seconds:.1f}s ({rate:.0f}/s): {report.accepted} accepted,"
        f" {len(report.rejected)} rejected, {len(report.missing)} missing"
    )
    for r in report.rejected[:50]:
        console.print(f"[red]✗ {r.message_id} {r.command_type}: {r.reason}: {r.detail}[/red]")
    if report.missing:
        console.print(f"[red]✗ not accounted for in time, e.g. {report.missing[:5]}[/red]")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
