"""The ``eventcenter`` command line: run (serve), demo, version, dead letters, audit trail,
sources, RCA cases, tuning runs, load tests, API keys."""

from __future__ import annotations

import asyncio
import getpass
import importlib
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, NoReturn

import eventsourcing.persistence
import sqlalchemy.exc
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from typer.core import TyperGroup

from eventcenter.center import rca_views
from eventcenter.center.app import EventCenter
from eventcenter.center.audit_views import audit_table, explanation_view, parse_since
from eventcenter.center.demo import DemoResult, run_demo
from eventcenter.center.demo_source import SourceDemoResult
from eventcenter.center.demo_tuning import SERVICE as TUNING_SERVICE
from eventcenter.center.demo_tuning import SIGNATURE as TUNING_SIGNATURE
from eventcenter.center.demo_tuning import TuningDemoResult
from eventcenter.center.logs import FORMAT_ENV, LEVEL_ENV, LogFormat, LogLevel, configure_logging
from eventcenter.center.reader import CenterReader
from eventcenter.center.settings import CenterSettings, SourceSettings
from eventcenter.center.source_report import compare, source_report
from eventcenter.center.source_views import comparison, source_details, sources_table, when
from eventcenter.domain.errors import EventCenterError, InvalidPauseRequest
from eventcenter.domain.escalation import Answer
from eventcenter.domain.source_pause import PauseRequest
from eventcenter.domain.tuning_run import TuningRun
from eventcenter.projections.audit import DeadLetterRow, DecisionRow
from eventcenter.projections.queries import MAX_PAGE, AuditFilter
from eventcenter.storage.api_keys import ApiKey, ApiKeyStore
from eventcenter.storage.mailbox import Mailbox
from eventcenter.storage.rca_answers import AnswerBox
from eventcenter.storage.source_requests import SourceRequestBox

#: Exit codes: 1 when a command could not do its work (store unreachable, replay failed), 2 when
#: it was called wrongly (bad option, setting or --handlers); usage errors of typer also exit 2.
EXIT_FAILED = 1
EXIT_USAGE = 2

#: SQLAlchemy URL of the store the running command uses, so that a database error caught above
#: the command can name it. Set by :func:`_settings`.
_store_url: ContextVar[str | None] = ContextVar("eventcenter_cli_store_url", default=None)

#: Raised by SQLAlchemy (or by eventsourcing, which wraps it) when the database cannot be used.
_STORE_ERRORS = (sqlalchemy.exc.OperationalError, eventsourcing.persistence.OperationalError)


class _Commands(TyperGroup):
    """Every command runs inside :meth:`invoke`: one place turns errors into one line.

    An :class:`EventCenterError` (or a database error the library did not translate yet) becomes
    ``error: <message>`` on stderr and exit code 1, without a traceback. Anything else is a bug
    and keeps its traceback.
    """

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context (a private module)
        try:
            return super().invoke(ctx)
        except EventCenterError as error:
            _fail(str(error), EXIT_FAILED)
        except _STORE_ERRORS as error:
            _fail(_store_problem(error, _store_url.get()), EXIT_FAILED)


app = typer.Typer(
    cls=_Commands, help="eventcenter: an event-sourced processing center.", no_args_is_help=True
)
letters_app = typer.Typer(help="List and replay dead letters.", no_args_is_help=True)
app.add_typer(letters_app, name="dead-letters")
sources_app = typer.Typer(
    help="Data sources: mode, health and switches read from the store; what-if replays;"
    " pause and resume.",
    no_args_is_help=True,
)
app.add_typer(sources_app, name="sources")
tuning_app = typer.Typer(
    help="Tuning runs: deployments, their load tests and frequencies.", no_args_is_help=True
)
app.add_typer(tuning_app, name="tuning")
rca_app = typer.Typer(
    help="Root-cause analysis cases: list them, show one's story, answer an escalated one.",
    no_args_is_help=True,
)
app.add_typer(rca_app, name="rca")
projections_app = typer.Typer(
    help="The read model behind audit, explain and the API: its lag, a rebuild.",
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")
keys_app = typer.Typer(
    help="API keys of the HTTP API: create one for a tenant or an admin, list, revoke.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

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
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar=FORMAT_ENV,
        case_sensitive=False,
        help="log records on stderr: json (one object per line), console (for a person) or"
        " auto (console on a terminal, json otherwise)",
    ),
]
LogLevelOpt = Annotated[
    LogLevel | None,
    typer.Option(
        "--log-level",
        envvar=LEVEL_ENV,
        case_sensitive=False,
        help="least severe log records written [default: info for run, error for the others]",
        show_default=False,
    ),
]


def _logging(log_format: LogFormat, level: LogLevel | None, default: LogLevel) -> None:
    """Configure this process's log records once, before the command does anything."""
    configure_logging(log_format, level or default)


def _settings(config: Path | None, url: str | None, data_dir: Path | None) -> CenterSettings:
    overrides: dict[str, Any] = {}
    if url:
        overrides["database_url"] = url
    if data_dir:
        overrides["data_dir"] = data_dir
    try:
        settings = CenterSettings.load(config, **overrides)
    except ValidationError as error:
        found = error.errors(include_url=False)
        # An unknown key first: a typo also explains the "missing" error of the key it meant.
        first = next((e for e in found if e["type"] in _UNKNOWN_KEY), found[0])
        _fail(f"invalid setting '{_field(first['loc'])}': {first['msg']}")
    except EventCenterError as error:
        _fail(str(error))
    _store_url.set(settings.effective_url)
    return settings


_UNKNOWN_KEY = ("extra_forbidden", "unknown_option")


def _field(loc: tuple[int | str, ...]) -> str:
    """A setting's place as written in a file: ``sources[0].events.stream``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr (taken literally) and exit."""
    errors.print(Text.assemble(("error:", "red"), " ", _one_line(message)), soft_wrap=True)
    raise typer.Exit(code)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _shown_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _store_problem(error: Exception, url: str | None) -> str:
    """What went wrong with the database, naming its URL without the password."""
    cause: BaseException = error
    while not isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.__cause__ is not None:
        cause = cause.__cause__  # eventsourcing wraps the SQLAlchemy error
    detail = str(getattr(cause, "orig", None) or cause)
    where = "the database"
    if url is not None:
        where = _shown_url(url)
        password = make_url(url).password
        if password:
            detail = detail.replace(str(password), "***")
    return f"cannot use the store at {where}: {_one_line(detail)}"


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
    load_test: Annotated[
        bool,
        typer.Option(
            "--load-test/--no-load-test",
            help="end with a real deployment change: Locust against a sample target (~20 s)",
        ),
    ] = True,
    log_format: LogFormatOpt = LogFormat.AUTO,
    log_level: LogLevelOpt = None,
) -> None:
    """Run a realistic event stream through a center and summarise what it decided."""
    _logging(log_format, log_level, LogLevel.ERROR)
    settings = _settings(config, database_url, data_dir)
    settings = settings.model_copy(
        update={
            "processor": settings.processor.model_copy(
                update={"backoff_base": 0.01, "backoff_max": 0.2, "max_attempts": 4}
            ),
            "sources": [],  # the demo runs its own stream, not the config's data sources
        }
    )
    console.print(
        f"[bold]eventcenter demo[/]: {events} events from 3 tenants at ~{rate:.0f}/s,"
        f" store {escape(_shown_url(settings.effective_url))}"
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
            run_demo(
                settings,
                events=events,
                rate=rate,
                seed=seed,
                progress=progress,
                load_test=load_test,
            )
        )
    _print_demo(result)
    if result.dead_letters:
        # A letter that failed for good (a permanent failure) shows the whole story when
        # replayed: it fails again and becomes a new letter linked to this one.
        permanent = [r for r in result.dead_letters if r.error_type == "PermanentFailure"]
        letter = (permanent or result.dead_letters)[0]
        hint = _replay_hint(str(letter.id), config, database_url, data_dir)
        console.print(Text(f"replay a dead letter: {hint}"), soft_wrap=True)


def _replay_hint(
    letter_id: str, config: Path | None, database_url: str | None, data_dir: Path | None
) -> str:
    """The replay command for the demo's store, ready to run from the same directory.

    It repeats the options the demo was given (a URL's password is masked, so that one must
    be typed again) and registers the demo's handlers, to which the letters belong.
    """
    words = ["eventcenter", "dead-letters", "replay", letter_id]
    words += ["--handlers", "eventcenter.center.demo:register_demo_handlers"]
    if config is not None:
        words += ["--config", str(config)]
    if database_url:
        words += ["--database-url", _shown_url(database_url)]
    if data_dir is not None:
        words += ["--data-dir", str(data_dir)]
    return shlex.join(words)


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
            table.add_row(Text(str(name)), *(str(counts.get(c, 0)) for c in columns))
        console.print(table)

    console.print(_letters_table(result.dead_letters, "Dead letters"))
    console.print(_decisions_table(result.decisions, "Recorded decisions, in order"))
    if result.source is not None:
        _print_source_demo(result.source)
    if result.tuning is not None:
        _print_tuning_demo(result.tuning)
    console.print(
        f"processor state at the end: [bold]{result.final_state}[/];"
        f" shutdown {'clean' if result.shutdown_clean else 'left work dead-lettered'}"
    )


def _print_tuning_demo(tuning: TuningDemoResult) -> None:
    """The demo's deployment change: the load test's steps, the answer, what agents got."""
    console.print(
        Text(
            f"\nDeployment of {TUNING_SERVICE} {TUNING_SIGNATURE}: load-tested with Locust against"
            f" a sample target of {tuning.true_capacity:.0f} req/s (slots / service time),"
            f" tuned in {tuning.seconds:.0f}s"
        )
    )
    table = Table(title="Load test steps, as recorded", title_justify="left")
    for column in ("offered", "achieved", "p95 ms", "errors", "next"):
        table.add_column(column, justify="left" if column == "next" else "right")
    for step in tuning.steps:
        follow = step.get("next", {})
        table.add_row(
            f"{step['offered']:.0f}",
            f"{step['achieved']:.1f}",
            f"{step['p95'] * 1000:.0f}",
            f"{step['error_rate']:.1%}",
            Text(str(follow.get("reason", ""))),
        )
    console.print(table)
    measured = tuning.measured
    if measured is not None:
        console.print(
            f"maximum sustainable throughput [bold]{measured['max_rps']:.1f} req/s[/]"
            f" ({measured['verdict']}; true capacity {tuning.true_capacity:.0f} req/s)"
        )
    console.print(Text(f"run: {tuning.outcome}"))
    for name, update in sorted(tuning.agents.items()):
        interval = "paused" if update.interval is None else f"poll every {update.interval:.3g}s"
        console.print(
            Text(f"  {name} got version {update.version}: {update.rate:.1f} req/s, {interval}")
        )
    if tuning.reused:
        console.print(
            Text(
                f"deployed again: the recorded capacity was reused, no load test ({tuning.reused})"
            )
        )


def _print_source_demo(source: SourceDemoResult) -> None:
    """The demo source's mode timeline and the counts its subscription saw."""
    policy = source.policy
    console.print(
        Text(
            f"\nData source {source.key}: its local push path was cut, came back, then stalled"
            f" twice (event_timeout {policy['event_timeout']:g}s, failure/success thresholds"
            f" {policy['failure_threshold']}/{policy['success_threshold']}, polling every"
            f" {policy['polling_interval']:g}s)"
        )
    )
    table = Table(title=f"Mode timeline of {source.key}, as recorded", title_justify="left")
    for column in ("time", "from", "to", "reason"):
        table.add_column(column, justify="right" if column == "time" else "left")
    for row in source.timeline:
        table.add_row(f"+{row.at:.2f}s", row.previous, row.to, Text(row.reason))
    console.print(table)
    if source.thresholds:
        raised = ", then ".join(f"{f}/{s}" for f, s in source.thresholds)
        console.print(f"flapping raised the thresholds to {raised} (failure/success)")
    paths = ", ".join(f"{path} {count}" for path, count in sorted(source.by_path.items()))
    console.print(
        f"produced {source.produced}, delivered {source.delivered},"
        f" duplicates {source.duplicates} (handled by {paths});"
        f" source mode at the end: {source.final_mode}"
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
    if status not in (None, "pending", "replaying", "replayed"):
        _fail(f"--status must be pending, replaying or replayed, not {status!r}")
    with CenterReader(_settings(config, database_url, data_dir)) as reader:
        rows = reader.dead_letters(status)
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
    log_format: LogFormatOpt = LogFormat.AUTO,
    log_level: LogLevelOpt = None,
) -> None:
    """Hand dead letters back to their subscriptions and wait for the outcome."""
    _logging(log_format, log_level, LogLevel.ERROR)
    register = _import_register(handlers) if handlers else None
    # A replay runs a center only to hand letters back: the config's data sources stay off.
    settings = _settings(config, database_url, data_dir).model_copy(update={"sources": []})
    if asyncio.run(_replay(settings, letter_ids, register)):
        raise typer.Exit(EXIT_FAILED)


async def _replay(
    settings: CenterSettings,
    letter_ids: list[str],
    register: Callable[[EventCenter], object] | None,
) -> bool:
    """Replay each letter and wait for the outcome; True if any of them failed (again)."""
    center = EventCenter(settings)
    try:
        if register is not None:
            register(center)
    except BaseException:
        center.close()
        raise
    failed = 0
    replayed: list[str] = []
    async with center:
        for letter_id in letter_ids:
            try:
                event = await center.replay_dead_letter(letter_id, reason="replayed from CLI")
            except EventCenterError as error:
                line = Text.assemble((letter_id, "red"), ": ", _one_line(str(error)))
                errors.print(line, soft_wrap=True)
                failed += 1
                continue
            replayed.append(letter_id)
            console.print(Text(f"{letter_id}: {event.type} {event.id} queued again"))
        await center.processor.join()
        outcomes = await asyncio.to_thread(lambda: [center.letter_status(i) for i in replayed])
    again = [
        (letter_id, o.failed_again_as) for letter_id, o in zip(replayed, outcomes, strict=True)
    ]
    again = [(letter_id, new) for letter_id, new in again if new]
    for letter_id, new in again:
        console.print(Text(f"{letter_id}: failed again; new dead letter {new}", style="yellow"))
    return bool(failed or again)


def _import_register(spec: str) -> Callable[[EventCenter], object]:
    """Load ``module:function``; modules in the working directory are found, as with -m."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        _fail(f"--handlers must look like module:function, got {spec!r}")
    cwd = os.getcwd()
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)
    try:
        register = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        _fail(f"cannot load {spec}: {error}")
    if not callable(register):
        _fail(f"{spec} is not callable")
    return register  # type: ignore[no-any-return]


# sample agent


@app.command("sample-agent")
def sample_agent(
    name: Annotated[str, typer.Option(help="the agent's name: updates for another are refused")] = (
        "agent-1"
    ),
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8082,
    log_format: LogFormatOpt = LogFormat.AUTO,
    log_level: LogLevelOpt = None,
) -> None:
    """Run a sample agent that takes frequency updates (POST /frequency) and prints each one
    it applies, until SIGTERM or Ctrl+C. GET / shows what it holds."""
    _logging(log_format, log_level, LogLevel.ERROR)
    # Imported here: only this command needs FastAPI and uvicorn, the others start faster.
    from eventcenter.pressure.sample_agent import FrequencyUpdate, create_agent_app, serve_agent

    def applied(update: FrequencyUpdate) -> None:
        console.print(Text(update.line()), soft_wrap=True)

    def started(url: str) -> None:
        console.print(
            Text(f"agent {name} takes frequency updates at {url}/frequency (Ctrl+C stops it)"),
            soft_wrap=True,
        )

    agent = create_agent_app(name, on_update=applied)
    try:
        why = asyncio.run(serve_agent(agent, host, port, on_start=started))
    except OSError as error:
        _fail(f"{error} (choose another with --host and --port)", EXIT_FAILED)
    console.print(Text(f"agent {name} stopped on {why}"), soft_wrap=True)


@app.command("serve")
@app.command("run")
def run_service(
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
    log_format: LogFormatOpt = LogFormat.AUTO,
    log_level: LogLevelOpt = None,
) -> None:
    """Run the center as a service: processor, sources and HTTP API (settings of the http
    table), until SIGTERM or Ctrl+C; prints one line of what was stopped. (run and serve are
    one command.)"""
    _logging(log_format, log_level, LogLevel.INFO)
    # Imported here: only this command needs FastAPI and uvicorn, the others start faster.
    from eventcenter.center.service import serve

    register = _import_register(handlers) if handlers else None
    center = EventCenter(_settings(config, database_url, data_dir))
    try:
        if register is not None:
            register(center)
    except BaseException:
        center.close()
        raise

    def announce(line: str) -> None:
        console.print(Text(line), soft_wrap=True)

    report = asyncio.run(serve(center, announce=announce))
    console.print(Text(report.line()), soft_wrap=True)
    if report.failure is not None:
        _fail(report.failure, EXIT_FAILED)


@rca_app.command("list")
def list_cases(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    open_only: Annotated[bool, typer.Option("--open", help="only cases not closed")] = False,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's cases")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """List RCA cases, newest first."""
    with CenterReader(_settings(config, database_url, data_dir)) as reader:
        rows = reader.rca_cases(open_only=open_only, tenant=tenant)
    if as_json:
        for row in rows:
            print(json.dumps(rca_views.case_dict(row)))
        return
    which = "open " if open_only else ""
    console.print(rca_views.cases_table(rows, f"{len(rows)} {which}rca case(s)"))


@tuning_app.command("list")
def list_tuning_runs(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    last: Annotated[int, typer.Option(min=1, max=10_000, help="runs to show")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """The latest tuning runs, newest first: deployment, status, capacity, what was sent."""
    with CenterReader(_settings(config, database_url, data_dir)) as reader:
        runs = reader.tuning_runs(limit=last)
    if as_json:
        for run in runs:
            print(json.dumps(_run_dict(run)))
        return
    table = Table(title=f"{len(runs)} tuning run(s), newest first", title_justify="left")
    for column in ("requested", "service", "signature", "status", "capacity", "steps", "outcome"):
        table.add_column(column, justify="right" if column == "steps" else "left")
    for run in runs:
        capacity = (
            "-" if run.capacity is None else f"{run.capacity:.4g} req/s ({run.capacity_source})"
        )
        table.add_row(
            when(run.requested_at),
            Text(run.service),
            Text(run.signature),
            run.status,
            capacity,
            str(len(run.steps)),
            Text(run.outcome or "-"),
        )
    console.print(table)


def _run_dict(run: TuningRun) -> dict[str, Any]:
    return {
        "run": str(run.id),
        "event_id": run.event_id,
        "correlation_id": run.correlation_id,
        "tenant": run.tenant,
        "service": run.service,
        "signature": run.signature,
        "previous_signature": run.previous_signature,
        "status": run.status,
        "requested_at": run.requested_at,
        "updated_at": run.updated_at,
        "capacity": run.capacity,
        "capacity_source": run.capacity_source,
        "steps": run.steps,
        "interruptions": run.interruptions,
        "outcome": run.outcome,
    }


@rca_app.command("show")
def show_case(
    case_id: Annotated[str, typer.Argument(help="the case id (rca list shows it)")],
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """The whole story of one case, step by step, with the correlation ids."""
    with CenterReader(_settings(config, database_url, data_dir)) as reader:
        steps = reader.rca_history(case_id)
    if as_json:
        for step in steps:
            print(json.dumps(rca_views.step_dict(step)))
        return
    console.print(rca_views.history_table(case_id, steps))


ByOpt = Annotated[
    str | None, typer.Option("--by", help="who answers (default: the user running this)")
]
WaitOpt = Annotated[
    float,
    typer.Option(help="seconds to wait for the running center to apply the answer (0: do not)"),
]


@rca_app.command("ack")
def acknowledge_case(
    case_id: Annotated[str, typer.Argument(help="the case id")],
    by: ByOpt = None,
    note: Annotated[str | None, typer.Option(help="what you are doing about it")] = None,
    wait: WaitOpt = 10.0,
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Take an escalated case: it is not re-notified any more; it stays open."""
    answer = Answer.acknowledge(by or getpass.getuser(), note or None)
    _answer(case_id, answer, wait, _settings(config, database_url, data_dir))


@rca_app.command("resolve")
def resolve_case(
    case_id: Annotated[str, typer.Argument(help="the case id")],
    note: Annotated[str | None, typer.Option(help="what was done (required)")] = None,
    by: ByOpt = None,
    wait: WaitOpt = 10.0,
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Close a case, saying what was done."""
    if note is None:  # checked here, not by typer: its refusal is a box of five lines
        _fail('rca resolve needs --note saying what was done, e.g. --note "rotated the key"')
    answer = Answer.resolve(by or getpass.getuser(), note)
    _answer(case_id, answer, wait, _settings(config, database_url, data_dir))


def _answer(case_id: str, answer: Answer, wait: float, settings: CenterSettings) -> None:
    """Check the case, leave the answer for the center, wait (up to ``wait`` s) for it."""
    with CenterReader(settings) as reader:
        steps = reader.rca_history(case_id)
    if steps[-1].name == "Closed":
        _fail(f"rca case {case_id} is closed already; nothing to answer", EXIT_FAILED)
    box = AnswerBox(settings.effective_url, settings.name, settings.shown_url)
    answer_id = box.answer(case_id, answer.action.value, answer.by, answer.note or "", time.time())
    _await_outcome(
        box,
        answer_id,
        wait,
        subject=f"rca case {case_id}",
        done=f"by {answer.by}",
        waiting="answer recorded",
    )


def _await_outcome(
    box: Mailbox, row_id: int, wait: float, *, subject: str, done: str, waiting: str
) -> None:
    """Wait (up to ``wait`` s) for the running center to apply what was left in ``box``; print
    the outcome (exit 1 if refused), or that it waits for a center."""
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        applied, outcome = box.outcome(row_id)
        if applied is not None:
            if outcome and outcome.startswith("refused"):
                _fail(f"{subject}: {outcome}", EXIT_FAILED)
            console.print(Text(f"{subject}: {outcome} {done}"))
            return
        if time.monotonic() >= deadline:
            console.print(
                Text(
                    f"{subject}: {waiting}; the center applies it when it runs"
                    " (no running center applied it yet)"
                )
            )
            return
        time.sleep(0.2)


@app.command()
def decisions(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    last: Annotated[int, typer.Option(min=1, help="show the last N")] = 50,
) -> None:
    """Show the audit trail: state transitions and decisions, in recorded order."""
    with CenterReader(_settings(config, database_url, data_dir)) as reader:
        rows = reader.decisions(last)
    console.print(_decisions_table(rows, f"last {len(rows)} decision(s)"))


@app.command()
def audit(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's decisions")] = None,
    source: Annotated[str | None, typer.Option(help="only this data source's decisions")] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(help="only this kind (mode.switched; a prefix as rca.*); repeatable"),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="from this long ago (1h, 30m) or this time (ISO 8601)")
    ] = None,
    until: Annotated[str | None, typer.Option(help="up to this long ago or this time")] = None,
    correlation: Annotated[
        str | None,
        typer.Option(help="follow one chain of cause and effect across all aggregates"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="decisions per page")] = 100,
    after: Annotated[
        str | None, typer.Option(help="continue after this cursor (printed after a full page)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
) -> None:
    """Print decisions in time order: FSM transitions, handler decisions, mode switches,
    threshold changes, reconciliations, breaker changes, RCA steps, measurements, dispatches."""
    flt = AuditFilter(
        tenant=tenant,
        source=source,
        kinds=tuple(kind or ()),
        since=parse_since(since) if since else None,
        until=parse_since(until) if until else None,
        correlation_id=correlation,
    )
    with CenterReader(_settings(config, database_url, data_dir)) as reader:
        page = reader.audit(flt, after=after, limit=limit)
    if as_json:
        for entry in page.entries:
            print(json.dumps(entry.as_dict()))
        if page.next:
            print(json.dumps({"next": page.next}))
        return
    title = f"{len(page.entries)} decision(s)" + (f" in chain {correlation}" if correlation else "")
    console.print(audit_table(page.entries, title))
    if page.next:
        console.print(Text(f"more: --after {page.next}", style="dim"), soft_wrap=True)


@app.command()
def explain(
    position: Annotated[int, typer.Argument(help="the decision's # (position) from audit")],
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Why did this happen? The inputs the policy saw, the rule that fired, and what came
    before and after in its chain, from the recorded events alone."""
    with CenterReader(_settings(config, database_url, data_dir)) as reader:
        explained = reader.explain(position)
    if explained is None:
        _fail(f"no decision #{position} in the store (see eventcenter audit)", EXIT_FAILED)
    if as_json:
        print(json.dumps(explained.as_dict()))
        return
    console.print(explanation_view(explained))


@projections_app.command("status")
def projections_status(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """How far the read model is behind the notification log (without catching up)."""
    with CenterReader(_settings(config, database_url, data_dir)) as reader:
        status = reader.projection_status()
    if as_json:
        print(json.dumps(status.as_dict()))
        return
    console.print(f"read model at position {status.position} of {status.head}: {status.lag} behind")


@projections_app.command("rebuild")
def projections_rebuild(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Empty the read model and fold the whole notification log into it again."""
    reader = CenterReader(_settings(config, database_url, data_dir))
    started = time.perf_counter()
    try:
        count = reader.rebuild()
    finally:
        reader.close()
    seconds = time.perf_counter() - started
    console.print(f"rebuilt the read model from {count} event(s) in {seconds:.1f} s")


def _letters_table(rows: list[DeadLetterRow], title: str, *, with_status: bool = False) -> Table:
    """One row per letter; the id is never folded, so it can be copied whole at 80 columns.

    The other facts share a second column that folds, which keeps the table readable on a
    narrow terminal. Every text comes from users or handlers and is shown literally.
    """
    table = Table(title=title, title_justify="left")
    table.add_column("id, at (UTC)", no_wrap=True, min_width=36)
    what = "event -> subscription, tries" + (", status" if with_status else "") + "; reason"
    table.add_column(what, overflow="fold")
    for row in rows:
        tries = f"{row.attempts} {'try' if row.attempts == 1 else 'tries'}"
        facts = f"{row.event_type} ({row.tenant}) -> {row.subscription}, {tries}"
        if with_status:
            facts += f", {row.status}"
        table.add_row(
            Text(f"{row.id}\n{row.at.strftime('%Y-%m-%d %H:%M:%S')}"),
            Text.assemble(facts, "\n", (f"{row.error_type}: {row.error}", "italic")),
        )
    return table


def _decisions_table(rows: list[DecisionRow], title: str) -> Table:
    """Transitions and decisions in order; reasons are shown literally (no markup)."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", no_wrap=True)
    table.add_column("at (UTC)", width=12, overflow="fold")  # the date above the time
    table.add_column("kind", no_wrap=True)
    table.add_column("what, why, tenant and correlation id", overflow="fold")
    for row in rows:
        tenant = f"{row.tenant} " if row.tenant else ""
        table.add_row(
            str(row.position),
            Text(row.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]),
            Text(row.kind),
            Text.assemble(
                f"{row.summary}\n" if row.summary else "",
                (row.reason, "italic"),
                "\n",
                (f"{tenant}{row.correlation_id[:8]}", "dim"),
            ),
        )
    return table


# data sources -----------------------------------------------------------------------------------


def _source_key(text: str, option: str) -> tuple[str, str]:
    tenant, slash, name = text.partition("/")
    if not slash or not tenant or not name or "/" in name:
        _fail(f"{option} must name a source as tenant/name (e.g. acme/orders), not {text!r}")
    return tenant, name


def _declared(settings: CenterSettings, tenant: str, name: str) -> SourceSettings | None:
    return next((s for s in settings.sources if (s.tenant, s.name) == (tenant, name)), None)


@sources_app.command("list")
def list_sources(
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Every source recorded in the store: mode, health, switches, items by push and poll.

    Read-only: works beside a running center (or after it stopped)."""
    settings = _settings(config, database_url, data_dir)
    with CenterReader(settings) as reader:
        now = time.time()
        reports = [
            source_report(
                row,
                reader.outcomes(row.tenant, row.name),
                now=now,
                declared=_declared(settings, row.tenant, row.name),
            )
            for row in reader.sources()
        ]
    console.print(sources_table(reports))


@sources_app.command("show")
def show_source(
    source: Annotated[str, typer.Argument(help="the source as tenant/name, e.g. acme/orders")],
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Everything about one source: mode, thresholds and level, cool-down, health and its
    factors, outcome counts, reconciliations, recent mode changes with their reasons."""
    tenant, name = _source_key(source, "the source")
    settings = _settings(config, database_url, data_dir)
    with CenterReader(settings) as reader:
        row = reader.source(tenant, name)
        report = source_report(
            row,
            reader.outcomes(tenant, name),
            now=time.time(),
            declared=_declared(settings, tenant, name),
        )
    console.print(source_details(report))


@sources_app.command("simulate")
def simulate_source(
    source: Annotated[
        str, typer.Option("--source", help="the source as tenant/name, e.g. acme/orders")
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML settings whose [[sources]] table for the source gives the hysteresis"
            " settings to replay through (and the store, unless given below)",
        ),
    ] = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Replay a source's recorded outcomes through the hysteresis settings a config gives it,
    beside what happened: switches, time in each mode, polls. Same settings: same switches."""
    tenant, name = _source_key(source, "--source")
    settings = _settings(config, database_url, data_dir)
    declared = _declared(settings, tenant, name)
    if declared is None:
        where = f"{config}" if config is not None else "the config (none was given: --config)"
        known = ", ".join(s.key for s in settings.sources) or "none"
        _fail(
            f"{where} declares no source {tenant}/{name} to take its hysteresis settings from"
            f" (it declares: {known}); add a [[sources]] table with tenant = {tenant!r} and"
            f" name = {name!r}"
        )
    with CenterReader(settings) as reader:
        row = reader.source(tenant, name)
        history = reader.mode_history(tenant, name)
        outcomes = reader.outcomes(tenant, name)
    if not outcomes:
        _fail(f"source {tenant}/{name} has no recorded outcomes to replay yet", EXIT_FAILED)
    result = compare(row, history, outcomes, declared.hysteresis(), declared.polling_interval)
    origin = str(config) if config is not None else "the config"
    console.print(comparison(result, origin))


RequestWaitOpt = Annotated[
    float,
    typer.Option(
        "--wait", help="seconds to wait for the running center to apply the request (0: do not)"
    ),
]
SourceArg = Annotated[str, typer.Argument(help="the source as tenant/name, e.g. acme/orders")]


@sources_app.command("pause")
def pause_source(
    source: SourceArg,
    reason: Annotated[str | None, typer.Option(help="why (required)")] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="who asks (default: the user running this)")
    ] = None,
    wait: RequestWaitOpt = 10.0,
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Pause a source: its engines stop and nothing is admitted from it until it is resumed;
    it stays paused across restarts. Its positions are kept, so nothing is lost."""
    if reason is None:  # checked here, not by typer: its refusal is a box of five lines
        _fail('sources pause needs --reason saying why, e.g. --reason "broker upgrade"')
    try:
        request = PauseRequest.pause(by or getpass.getuser(), reason)
    except InvalidPauseRequest as error:
        _fail(str(error))
    _request(source, request, wait, _settings(config, database_url, data_dir))


@sources_app.command("resume")
def resume_source(
    source: SourceArg,
    reason: Annotated[str, typer.Option(help="why (optional)")] = "",
    by: Annotated[
        str | None, typer.Option("--by", help="who asks (default: the user running this)")
    ] = None,
    wait: RequestWaitOpt = 10.0,
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Resume a paused source: its engines start again in the recorded mode and read on from
    their stored positions."""
    try:
        request = PauseRequest.resume(by or getpass.getuser(), reason)
    except InvalidPauseRequest as error:
        _fail(str(error))
    _request(source, request, wait, _settings(config, database_url, data_dir))


def _request(text: str, request: PauseRequest, wait: float, settings: CenterSettings) -> None:
    """Check the source, leave the request for the center, wait (up to ``wait`` s) for it."""
    tenant, name = _source_key(text, "the source")
    if _declared(settings, tenant, name) is None:  # a declared source may not have run yet
        with CenterReader(settings) as reader:
            reader.source(tenant, name)
    box = SourceRequestBox(settings.effective_url, settings.name, settings.shown_url)
    action = request.action.value
    request_id = box.request(tenant, name, action, request.by, request.reason, time.time())
    _await_outcome(
        box,
        request_id,
        wait,
        subject=f"source {tenant}/{name}",
        done=f"(asked by {request.by})",
        waiting=f"{action} request recorded",
    )


# load tests ------------------------------------------------------------------------------------

pressure_app = typer.Typer(
    help="Load tests: find a target's maximum sustainable throughput.", no_args_is_help=True
)
app.add_typer(pressure_app, name="pressure")


@pressure_app.command("run")
def pressure_run(
    target: Annotated[str, typer.Option("--target", help="URL every request GETs")],
    slo_p95: Annotated[
        str, typer.Option("--slo-p95", help="p95 latency a sustainable step keeps, e.g. 200ms")
    ],
    max_duration: Annotated[
        str, typer.Option(help="the whole search ends within this (hard limit), e.g. 5m")
    ] = "5m",
    start_rate: Annotated[float, typer.Option(help="first offered rate (req/s)")] = 10.0,
    max_rate: Annotated[float, typer.Option(help="highest rate ever offered (req/s)")] = 10_000.0,
    growth: Annotated[float, typer.Option(help="factor between two ramp steps")] = 1.5,
    warmup: Annotated[str, typer.Option(help="time at a step's rate before measuring")] = "2s",
    hold: Annotated[str, typer.Option(help="time each step is measured over")] = "10s",
    resolution: Annotated[
        float, typer.Option(help="stop refining when the bracket is this share of its base")
    ] = 0.05,
    repeats: Annotated[int, typer.Option(help="runs of every rate")] = 1,
    max_error_rate: Annotated[
        float, typer.Option(help="share of failed requests a sustainable step stays within")
    ] = 0.01,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the measurement and the knee as JSON only")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="write a chart (.png) or a report (.html)")
    ] = None,
    log_format: LogFormatOpt = LogFormat.AUTO,
    log_level: LogLevelOpt = None,
) -> None:
    """Offer rising request rates to the target (an open-model step search run by Locust) and
    print the highest rate it sustains within the SLO, with the curve that shows it."""
    _logging(log_format, log_level, LogLevel.ERROR)
    from eventcenter.center import pressure_report
    from eventcenter.domain.knee import KneeRule, Step, find_knee
    from eventcenter.domain.ports import LoadTest
    from eventcenter.domain.step_plan import StepPlan
    from eventcenter.pressure.tester import LocustPressureTester, rule_for

    if report is not None and report.suffix.lower() not in pressure_report.REPORT_SUFFIXES:
        _fail(f"--report must name a .png or .html file, not {str(report)!r}")
    try:
        rule = rule_for(KneeRule(slo_p95=slo_p95, max_error_rate=max_error_rate))
        plan = StepPlan(
            start_rate=start_rate,
            max_rate=max_rate,
            min_rate=min(1.0, start_rate),
            growth=growth,
            warmup=warmup,
            hold=hold,
            resolution=resolution,
            repeats=repeats,
            max_duration=max_duration,
        )
    except (ValidationError, EventCenterError) as error:
        _fail(_option_problem(error))
    out = errors if as_json else console
    out.print(
        Text(
            f"load test of {target}: SLO p95 {rule.slo_p95 * 1000:g} ms, from"
            f" {plan.start_rate:g} req/s, {plan.warmup:g}s + {plan.hold:g}s per step,"
            f" at most {plan.max_duration:g}s"
        ),
        soft_wrap=True,
    )

    async def on_step(step: Any, nxt: Any) -> None:
        then = "done" if nxt.done else f"{nxt.phase} {nxt.rate:.4g} req/s"
        out.print(
            Text(
                f"offered {step.offered:8.4g}  achieved {step.achieved:8.4g}  p95"
                f" {step.p95 * 1000:7.1f} ms  errors {step.error_rate:6.2%}"
                f"{'  generator saturated' if step.generator_saturated else ''}  -> {then}"
                f" ({nxt.reason})"
            ),
            soft_wrap=True,
        )

    tester = LocustPressureTester(grace=5.0)
    measurement = asyncio.run(tester.measure(LoadTest(target, rule, plan), on_step))
    knee = find_knee([Step.from_dict(s, i) for i, s in enumerate(measurement.curve)], rule)
    if report is not None:
        pressure_report.write_report(report, measurement, knee, rule, target)
    if as_json:
        print(json.dumps(pressure_report.as_json(measurement, knee), indent=2))
        return
    console.print(pressure_report.steps_table(measurement, knee))
    console.print(Text(knee.summary), soft_wrap=True)
    console.print(Text(pressure_report.headline(measurement)), soft_wrap=True)
    if report is not None:
        console.print(Text(f"report written to {report}"), soft_wrap=True)


def _option_problem(error: ValidationError | EventCenterError) -> str:
    if isinstance(error, EventCenterError):
        return str(error)
    first = error.errors(include_url=False)[0]
    where = _field(first["loc"]) or "options"
    return f"invalid {where.replace('_', '-')}: {first['msg']}"


@app.command("sample-target")
def sample_target(
    slots: Annotated[int, typer.Option(min=1, help="requests served at once")] = 4,
    service_ms: Annotated[
        float, typer.Option(min=0.001, help="milliseconds each request holds a slot")
    ] = 20.0,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free one)")] = 8081,
    queue: Annotated[
        int | None, typer.Option(min=0, help="requests that may wait for a slot; more get 503")
    ] = None,
    log_format: LogFormatOpt = LogFormat.AUTO,
    log_level: LogLevelOpt = None,
) -> None:
    """Serve an HTTP target whose capacity is known (slots / service time), to try load tests
    on, until Ctrl+C or SIGTERM."""
    _logging(log_format, log_level, LogLevel.ERROR)
    from eventcenter.pressure.sample_target import SampleTarget, serve_until_stopped

    target = SampleTarget(slots, service_ms, queue)
    waiting = "unbounded" if queue is None else f"at most {queue} waiting, then 503"

    def announce(line: str) -> None:
        console.print(
            Text(
                f"sample target: capacity {target.capacity:g} req/s ({slots} slots x"
                f" {service_ms:g} ms, queue {waiting}); {line}"
            ),
            soft_wrap=True,
        )

    try:
        asyncio.run(serve_until_stopped(target, host, port, announce))
    except OSError as error:
        _fail(f"cannot listen on {host}:{port}: {error.strerror or error}", EXIT_FAILED)
    console.print(
        Text(f"sample target stopped: {target.served} served, {target.refused} refused"),
        soft_wrap=True,
    )


# API keys ------------------------------------------------------------------------------------


@keys_app.command("create")
def create_key(
    tenant: Annotated[
        str | None, typer.Option(help="the tenant whose data the key reads and sends")
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="a key for every tenant and the admin routes")
    ] = False,
    label: Annotated[str, typer.Option(help="what the key is for, shown by keys list")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print the key as JSON")] = False,
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Make an API key and print it once: the store keeps only its sha256."""
    if (tenant is None) == (not admin):
        _fail("keys create needs either --tenant NAME or --admin (not both)")
    settings = _settings(config, database_url, data_dir)
    try:
        settings.ensure_data_dir()
    except OSError as error:
        _fail(f"cannot use the data dir {settings.data_dir}: {error.strerror or error}", 1)
    store = ApiKeyStore(settings.effective_url)
    try:
        row, key = store.create(tenant, label, time.time())
    finally:
        store.close()
    if as_json:
        print(json.dumps({**row.as_dict(), "key": key}))
        return
    whose = "admin key" if row.admin else f"key for tenant {row.tenant}"
    console.print(Text(f"created {whose}: {row.id}" + (f" ({row.label})" if row.label else "")))
    print(key)
    errors.print(
        Text("this is the only time the key is shown: keep it now (the store keeps its hash)")
    )


@keys_app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON lines")] = False,
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Every API key, oldest first: id, scope, tenant, label, created, revoked (never the key)."""
    settings = _settings(config, database_url, data_dir)
    CenterReader(settings).close()  # a store that is not there says so, and is not created
    store = ApiKeyStore(settings.effective_url)
    try:
        rows = store.all_keys()
    finally:
        store.close()
    if as_json:
        for row in rows:
            print(json.dumps(row.as_dict()))
        return
    console.print(_keys_table(rows))


def _keys_table(rows: list[ApiKey]) -> Table:
    table = Table(title=f"{len(rows)} API key(s)", title_justify="left")
    for column in ("id", "scope", "tenant", "label", "created (UTC)", "revoked (UTC)"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.id,
            row.scope,
            Text(row.tenant or "-"),
            Text(row.label or "-"),
            when(row.created_at),
            when(row.revoked_at) if row.revoked_at is not None else "-",
        )
    return table


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="the key's id (keys list shows it)")],
    config: ConfigOpt = None,
    database_url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Revoke an API key: a running server refuses it within key_cache seconds (5 by
    default, in the http table)."""
    settings = _settings(config, database_url, data_dir)
    CenterReader(settings).close()
    store = ApiKeyStore(settings.effective_url)
    try:
        row, revoked = store.revoke(key_id, time.time())
    finally:
        store.close()
    if revoked:
        console.print(
            Text(
                f"revoked key {row.id}; a running server refuses it within"
                f" {settings.http.key_cache:g} s"
            )
        )
    else:
        console.print(Text(f"key {row.id} was revoked already, at {when(row.revoked_at)} UTC"))
