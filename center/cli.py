"""The ``eventcenter`` command line: demo, version, dead letters, audit trail."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url

from eventcenter.center.app import EventCenter
from eventcenter.center.demo import DemoResult, run_demo
from eventcenter.center.settings import CenterSettings
from eventcenter.domain.errors import EventCenterError
from eventcenter.projections.audit import DeadLetterRow, DecisionRow

app = typer.Typer(help="eventcenter: an event-sourced processing center.", no_args_is_help=True)
letters_app = typer.Typer(help="List and replay dead letters.", no_args_is_help=True)
app.add_typer(letters_app, name="dead-letters")

console = Console()
errors = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (eventcenter.toml)")
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL; default: SQLite under the data dir"),
]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="where the SQLite file lives")]


def _settings(config: Path | None, url: str | None, data_dir: Path | None) -> CenterSettings:
    overrides: dict[str, Any] = {}
    if url:
        overrides["database_url"] = url
    if data_dir:
        overrides["data_dir"] = data_dir
    try:
        return CenterSettings.load(config, **overrides)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        _fail(f"invalid setting '{field}': {first['msg']}")
    except EventCenterError as error:
        _fail(str(error))


def _fail(message: str) -> NoReturn:
    errors.print(f"[red]error:[/] {message}")
    raise typer.Exit(2)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    app()


@app.command()
def version() -> None:
    """Print the installed version."""
    from importlib.metadata import version as installed

    console.print(f"eventcenter {installed('eventcenter')}")


@app.command()
def demo(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    events: Annotated[int, typer.Option(min=10, max=100_000, help="ordinary events")] = 2000,
    rate: Annotated[float, typer.Option(min=10, help="events published per second")] = 1500.0,
    seed: Annotated[int, typer.Option(help="random seed of the stream")] = 7,
) -> None:
    """Run a realistic event stream through a center and summarise what it decided."""
    settings = _settings(config, database_url, data_dir)
    settings = settings.model_copy(
        update={
            "processor": settings.processor.model_copy(
                update={"backoff_base": 0.01, "backoff_max": 0.2, "max_attempts": 4}
            )
        }
    )
    console.print(
        f"[bold]eventcenter demo[/]: {events} events from 3 tenants at ~{rate:.0f}/s,"
        f" store {make_url(settings.effective_url).render_as_string(hide_password=True)}"
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("deliveries", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = asyncio.run(
            run_demo(settings, events=events, rate=rate, seed=seed, progress=progress)
        )
    _print_demo(result)


def _print_demo(result: DemoResult) -> None:
    snap = result.snapshot
    totals = snap["totals"]
    console.print(
        f"\n[bold]{result.published}[/] events published in {result.seconds:.1f}s:"
        f" {totals.get('handled', 0)} deliveries handled, {totals.get('retried', 0)} retried,"
        f" {totals.get('dead_lettered', 0)} dead-lettered, {totals.get('unrouted', 0)} unrouted;"
        f" publish->handler p50 {snap['dispatch_latency']['p50_ms']} ms,"
        f" p99 {snap['dispatch_latency']['p99_ms']} ms"
    )
    columns = ("published", "handled", "failed", "retried", "dead_lettered")
    for title, key in (("type", "by_type"), ("priority", "by_priority"), ("tenant", "by_tenant")):
        table = Table(title=f"Events routed per {title}", title_justify="left")
        table.add_column(title)
        for column in columns:
            table.add_column(column.replace("_", " "), justify="right")
        for name, counts in snap[key].items():
            table.add_row(name, *(str(counts.get(c, 0)) for c in columns))
        console.print(table)

    console.print(
        _letters_table(
            result.dead_letters, "Dead letters (replay: eventcenter dead-letters replay ID)"
        )
    )
    console.print(_decisions_table(result.decisions, "Recorded decisions, in order"))
    console.print(
        f"processor state at the end: [bold]{result.final_state}[/];"
        f" shutdown {'clean' if result.shutdown_clean else 'left work dead-lettered'}"
    )


@letters_app.command("list")
def list_letters(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    status: Annotated[str | None, typer.Option(help="pending or replayed")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """List dead letters, oldest first."""
    if status not in (None, "pending", "replayed"):
        _fail(f"--status must be pending or replayed, not {status!r}")
    center = EventCenter(_settings(config, database_url, data_dir), builtin_handlers=False)
    try:
        rows = center.dead_letters(status)
    finally:
        center.close()
    if as_json:
        for row in rows:
            print(
                json.dumps(
                    {
                        "id": str(row.id),
                        "at": row.at.isoformat(),
                        "status": row.status,
                        "subscription": row.subscription,
                        "attempts": row.attempts,
                        "error_type": row.error_type,
                        "error": row.error,
                        "event": row.event,
                    }
                )
            )
        return
    console.print(_letters_table(rows, f"{len(rows)} dead letter(s)", with_status=True))


@letters_app.command("replay")
def replay_letters(
    letter_ids: Annotated[list[str], typer.Argument(help="dead letter ids to replay")],
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    handlers: Annotated[
        str | None,
        typer.Option(
            help="module:function that registers your handlers on the center, e.g."
            " myapp.events:register (the built-in handlers are always registered)"
        ),
    ] = None,
) -> None:
    """Hand dead letters back to their subscriptions and wait for the outcome."""
    register = _import_register(handlers) if handlers else None
    settings = _settings(config, database_url, data_dir)
    code = asyncio.run(_replay(settings, letter_ids, register))
    raise typer.Exit(code)


async def _replay(
    settings: CenterSettings,
    letter_ids: list[str],
    register: Callable[[EventCenter], object] | None,
) -> int:
    center = EventCenter(settings)
    if register is not None:
        register(center)
    failed = 0
    async with center:
        for letter_id in letter_ids:
            try:
                event = await center.replay_dead_letter(letter_id, reason="replayed from CLI")
            except EventCenterError as error:
                errors.print(f"[red]{letter_id}[/]: {error}")
                failed += 1
                continue
            console.print(f"{letter_id}: {event.type} {event.id} queued again")
        await center.processor.join()
        dead = center.processor.snapshot().totals.get("dead_lettered", 0)
    if dead:
        console.print(f"[yellow]{dead} replayed event(s) failed again and are new dead letters[/]")
    return 1 if failed or dead else 0


def _import_register(spec: str) -> Callable[[EventCenter], object]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        _fail(f"--handlers must look like module:function, got {spec!r}")
    try:
        register = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        _fail(f"cannot load {spec}: {error}")
    if not callable(register):
        _fail(f"{spec} is not callable")
    return register  # type: ignore[no-any-return]


@app.command()
def decisions(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    last: Annotated[int, typer.Option(min=1, help="show the last N")] = 50,
) -> None:
    """Show the audit trail: state transitions and decisions, in recorded order."""
    center = EventCenter(_settings(config, database_url, data_dir), builtin_handlers=False)
    try:
        rows = center.decisions()[-last:]
    finally:
        center.close()
    console.print(_decisions_table(rows, f"last {len(rows)} decision(s)"))


def _letters_table(rows: list[DeadLetterRow], title: str, *, with_status: bool = False) -> Table:
    table = Table(title=title, title_justify="left")
    columns = ["id", "at (UTC)", "type", "tenant", "subscription", "tries", "reason"]
    if with_status:
        columns.insert(2, "status")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [
            str(row.id),
            row.at.strftime("%Y-%m-%d %H:%M:%S"),
            row.event_type,
            row.tenant,
            row.subscription,
            str(row.attempts),
            f"{row.error_type}: {row.error}",
        ]
        if with_status:
            cells.insert(2, row.status)
        table.add_row(*cells)
    return table


def _decisions_table(rows: list[DecisionRow], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("#", "at (UTC)", "kind"):
        table.add_column(column, no_wrap=True)
    table.add_column("what, why, tenant and correlation id", overflow="fold")
    for row in rows:
        what = f"{row.summary}\n" if row.summary else ""
        tenant = f"{row.tenant} " if row.tenant else ""
        table.add_row(
            str(row.position),
            row.at.strftime("%H:%M:%S.%f")[:-3],
            row.kind,
            f"{what}[italic]{row.reason}[/]\n[dim]{tenant}{row.correlation_id[:8]}[/]",
        )
    return table
