"""``python -m bench [NAMES...] [--quick] [--keep-stack] [--output bench/results.json]``

Runs the chosen benchmarks (all when no name is given) on the local stack, prints a table
of figures beside their ceilings, and writes the results file. See docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import signal
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bench.harness import (
    BenchContext,
    BenchStack,
    Figure,
    load_benchmarks,
    run_one,
    select,
    utc_now,
    write_results,
)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"

app = typer.Typer(add_completion=False, help=__doc__)
console = Console()


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MiB"


def figures_table(figures: list[Figure]) -> Table:
    table = Table(title="Benchmarks", title_justify="left")
    table.add_column("figure", style="bold", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("ceiling / peer")
    table.add_column("ratio", justify="right")
    table.add_column("peak RSS", justify="right")
    for fig in figures:
        if fig.ceiling_name == fig.name:
            ceiling = "[dim]itself[/dim]"
        else:
            ceiling = f"{fig.ceiling_name} = {_number(fig.ceiling_value)}"
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}"
        table.add_row(
            fig.name, _number(fig.value), fig.unit, ceiling, ratio, _mib(fig.peak_rss_mib)
        )
    return table


def _list_benchmarks() -> None:
    table = Table(title="Registered benchmarks", title_justify="left")
    for column in ("name", "needs", "requires", "description"):
        table.add_column(column)
    for bench in load_benchmarks().values():
        table.add_row(
            bench.name, ", ".join(bench.needs), ", ".join(bench.requires), bench.description
        )
    console.print(table)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _terminate(_signum: int, frame: FrameType | None) -> None:
    """SIGTERM does what Ctrl-C does, so the stack is torn down in the `finally` below.

    Inside ``asyncio.run`` the SIGINT handler is asyncio's, which cancels the running
    benchmark so that its own clean-up (closing clients) runs; elsewhere it raises
    KeyboardInterrupt."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


@app.command()
def main(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Benchmarks to run (names or globs); all when none is given."),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small workloads, for a smoke run.")
    ] = False,
    keep_stack: Annotated[
        bool, typer.Option("--keep-stack", help="Leave the local stack running at the end.")
    ] = False,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the results (JSON).")
    ] = DEFAULT_OUTPUT,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the registered benchmarks and exit.")
    ] = False,
) -> None:
    """Run benchmarks on the local stack and report each figure beside its ceiling."""
    if list_only:
        _list_benchmarks()
        return
    registry = load_benchmarks()
    try:
        order = select(names or (), registry)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(2) from None

    signal.signal(signal.SIGTERM, _terminate)
    # aiokafka logs retriable errors (e.g. the group coordinator of a fresh broker not being
    # ready yet) as warnings; they would scribble over the progress bar.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    # Service code run in-process (the command bus alone) must not log more than a service
    # does: unconfigured, structlog printed its debug line per command. Warnings only, so
    # that nothing scribbles over the progress bar either.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    generated_at = utc_now()
    ctx = BenchContext(quick=quick)
    stack = BenchStack(keep=keep_stack)
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=4,
    )
    task: TaskID | None = None
    interrupted = False

    def on_phase(description: str, total: float | None) -> None:
        if task is not None:
            progress.reset(task, total=total, description=description)

    def on_advance(amount: float) -> None:
        if task is not None:
            progress.advance(task, amount)

    def on_step(step: str) -> None:
        if task is not None:
            progress.update(task, description=f"{ctx.current or 'stack'}: {step}")

    ctx.on_phase = on_phase
    ctx.on_advance = on_advance
    ctx.pids = stack.pids

    try:
        with progress:
            for name in order:
                bench = registry[name]
                ctx.current = name
                task = progress.add_task(name, total=None)
                missing = [dep for dep in bench.requires if dep in failed]
                if missing:
                    failed[name] = f"skipped: {', '.join(missing)} failed"
                    progress.update(task, description=f"{name}: skipped", total=1, completed=0)
                    continue
                started = time.perf_counter()
                try:
                    stack.provide(bench.needs, ctx, on_step)
                    figures = run_one(bench, ctx)
                except Exception as exc:
                    failed[name] = f"{type(exc).__name__}: {exc}"
                    progress.update(task, description=f"{name}: [red]failed[/red]")
                    console.print(f"[red]{name} failed[/red]\n{traceback.format_exc()}")
                    continue
                finally:
                    # A benchmark's services never outlive it: the next starts clean.
                    stack.stop_services()
                    seconds[name] = round(time.perf_counter() - started, 2)
                ctx.figures.extend(figures)
                total = next(t.total for t in progress.tasks if t.id == task) or 1
                progress.update(task, description=f"{name}: done", total=total, completed=total)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stack_info = stack.describe()
        pids = stack.pids()
        if keep_stack:
            _print_kept(stack_info, pids)
        else:
            # A second Ctrl-C (or SIGTERM) must not leave the broker or the database behind.
            previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in _STOP_SIGNALS}
            try:
                with console.status("stopping the local stack"):
                    logs = stack.close(keep_logs=bool(failed))
                if logs is not None:
                    console.print(f"[yellow]logs of the local stack kept in {logs}[/yellow]")
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    if interrupted:
        console.print("[red]interrupted[/red]; no results written")
        raise typer.Exit(130)

    if ctx.figures:
        console.print(figures_table(ctx.figures))
        for fig in ctx.figures:
            if fig.notes:
                console.print(f"[dim]{fig.name}: {fig.notes}[/dim]")
    document = write_results(
        output,
        ctx.figures,
        generated_at=generated_at,
        run={
            "benchmarks": order,
            "quick": quick,
            "seconds": seconds,
            "stack": {k: v for k, v in stack_info.items() if k not in ("root",)},
            "failed": failed,
        },
    )
    console.print(f"wrote {len(document['figures'])} figures to {output}")
    if failed:
        for name, reason in failed.items():
            console.print(f"[red]{name}: {reason}[/red]")
        raise typer.Exit(1)


def _print_kept(info: dict[str, object], pids: dict[str, int | None]) -> None:
    if not pids:
        return
    console.print(f"[yellow]the local stack is still running[/yellow] under {info.get('root')}")
    for key in ("kafka_bootstrap", "database_url"):
        if key in info:
            console.print(f"  {key}: {info[key]}")
    if "kafka_bootstrap" in info:
        console.print(
            f"  reuse it: BENCH_KAFKA_BOOTSTRAP={info['kafka_bootstrap']}"
            + (f" BENCH_DATABASE_URL={info['database_url']}" if "database_url" in info else "")
            + " python -m bench ..."
        )
    for part, pid in pids.items():
        if pid is not None:
            console.print(f"  stop {part}: kill -- -{pid}")


if __name__ == "__main__":
    app()
