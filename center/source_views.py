"""How ``eventcenter sources list|show|simulate`` lay out their reports (rich renderables).

Every text that comes from a user or a source (names, reasons, extra values) is shown
literally, never as markup. Times are UTC with milliseconds: switches a fraction of a second
apart stay apart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from eventcenter.center.source_report import Comparison, SourceReport
from eventcenter.domain.durations import format_duration
from eventcenter.domain.hysteresis import HysteresisConfig
from eventcenter.domain.source_modes import WORKING_MODES
from eventcenter.projections.sources import ModeChange

HEALTHY, DEGRADED = 0.8, 0.5


def when(at: float | None) -> str:
    """``at`` (epoch seconds) as UTC text with milliseconds; "never" for None."""
    if at is None:
        return "never"
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def span(seconds: float) -> str:
    """A length of time for a table: whole seconds from a minute up (``3m2s``), else one
    decimal (``27.6s``)."""
    seconds = max(seconds, 0.0)
    if seconds >= 60:
        return format_duration(round(seconds))
    return f"{seconds:.1f}s"


def verdict(score: float) -> str:
    """The module docstring's rule of thumb of :mod:`eventcenter.domain.source_health`."""
    if score >= HEALTHY:
        return "healthy"
    return "degraded" if score >= DEGRADED else "unhealthy"


def _change(change: ModeChange) -> str:
    arrow = f"{change.previous} -> {change.to}"
    if change.kind == "rollback":
        return f"rolled back {arrow}"
    if change.kind == "reconfigured":
        return f"{arrow} (reconfigured)"
    return arrow


def sources_table(reports: list[SourceReport]) -> Table:
    """``sources list``: one line per source."""
    table = Table(title=f"{len(reports)} source(s)", title_justify="left")
    table.add_column("source", overflow="fold")
    table.add_column("mode", no_wrap=True)
    table.add_column("health", no_wrap=True)
    table.add_column("switches", justify="right")
    table.add_column("last switch (UTC)", overflow="fold")
    table.add_column("items push / poll", justify="right", no_wrap=True)
    for report in reports:
        row = report.row
        if row.paused is not None:
            mode = f"{row.mode} (paused)"
        else:
            mode = row.mode if report.running else f"{row.mode} (stopped)"
        switches = str(row.switches)
        if row.rollbacks:
            switches += f" ({row.rollbacks} rolled back)"
        last = row.recent[-1] if row.recent else None
        score = report.health.score
        table.add_row(
            Text(row.key),
            mode,
            f"{score:.2f} {verdict(score)}",
            switches,
            "-" if last is None else f"{when(last.at)} {_change(last)}",
            f"{report.outcomes.push.items} / {report.outcomes.poll.items}",
        )
    return table


def _facts(title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    return table


def source_details(report: SourceReport) -> RenderableType:
    """``sources show``: every fact about one source, then its recent mode changes."""
    row, health, summary = report.row, report.health, report.outcomes
    config = row.hysteresis_config
    facts = _facts(f"source {row.key}")
    state = "running" if report.running else f"stopped at {when(summary.stopped_at)}"
    if summary.last_at is None:
        state = "no outcome recorded yet"
    paused = row.paused
    if paused is not None:
        state = "paused: resumes in this mode"
    facts.add_row("mode", f"{row.mode} since {when(row.since)} ({state})")
    if paused is not None:
        facts.add_row(
            "paused",
            Text(f"since {when(paused.at)} by {paused.by}: {paused.reason}"),
        )
    facts.add_row("paths", Text(_paths(report)))
    failure, success = row.thresholds
    facts.add_row(
        "thresholds",
        f"failure {failure}, success {success} (level {row.level} of {config.max_level};"
        f" configured {config.failure_threshold} / {config.success_threshold},"
        f" ceiling {config.max_hysteresis})",
    )
    cooling = row.cool_down_until
    facts.add_row(
        "cool-down",
        f"{format_duration(config.cool_down)} after flapping;"
        + (
            " none running"
            if cooling is None or cooling <= report.at
            else f" until {when(cooling)}"
        ),
    )
    facts.add_row("event timeout", Text(_event_timeout(report)))
    facts.add_row(
        "policy",
        f"event_timeout {format_duration(config.event_timeout)}, flapping at"
        f" {config.flap_switches} switches within {format_duration(config.flap_window)},"
        f" decay after {format_duration(config.decay_period)} without a switch",
    )
    facts.add_row(
        "health",
        f"{health.score:.2f} {verdict(health.score)} at {when(report.at)}" + _taken_at(report),
    )
    if health.factors is not None:
        f = health.factors
        facts.add_row(
            "  factors",
            f"mode {f.mode:.2f} x freshness {f.freshness:.2f} x streak {f.streak:.2f}"
            f" x reliability {f.reliability:.2f} (error rate {health.error_rate:.2f})",
        )
    facts.add_row(
        "  last",
        f"success {when(health.last_success)}, failure {when(health.last_failure)},"
        f" {health.consecutive_failures} consecutive failure(s) now;"
        f" polling interval {format_duration(report.polling_interval)}"
        + ("" if report.declared is not None else " (default: not declared in the config)"),
    )
    facts.add_row(
        "outcomes",
        f"push {summary.push.ok} ok / {summary.push.failed} failed, {summary.push.items} items;"
        f" poll {summary.poll.ok} ok / {summary.poll.failed} failed, {summary.poll.items} items;"
        f" {summary.starts} start(s), {summary.stops} stop(s), {summary.rollbacks} rollback(s)"
        + (
            ""
            if summary.first_at is None
            else f"; {when(summary.first_at)} to {when(summary.last_at)}"
        ),
    )
    facts.add_row(
        "switches",
        f"{row.switches}, {row.rollbacks} rolled back; threshold changes {row.threshold_changes}",
    )
    last = row.last_reconcile
    facts.add_row(
        "reconciliations",
        f"{row.reconciliations}"
        + (
            ""
            if last is None
            else f"; last at {when(last.at)}: missing {last.missing}, changed {last.changed},"
            f" deleted {last.deleted}"
        ),
    )
    if report.declared is not None and report.declared.extra:
        extra = ", ".join(f"{key}={value}" for key, value in report.declared.extra.items())
        facts.add_row("extra", Text(extra))
    return Group(facts, "", changes_table(list(row.recent), "Recent mode changes"))


def _event_timeout(report: SourceReport) -> str:
    """The event timeout at the report's time: configured, or extended (how long, why)."""
    row = report.row
    configured = row.hysteresis_config.event_timeout
    until = row.extension_end(report.at)
    if until is None:
        return f"{format_duration(configured)} (configured)"
    return (
        f"{format_duration(row.event_timeout(report.at))} ({row.timeout_factor:g}x the"
        f" configured {format_duration(configured)}) until {when(until)}: {row.extension_reason}"
    )


def _taken_at(report: SourceReport) -> str:
    """What the time health was taken at is, for a source not running."""
    if report.running or report.outcomes.last_at is None:
        return ""
    return " (its pause)" if report.row.paused is not None else " (its stop)"


def _paths(report: SourceReport) -> str:
    declared = report.declared
    if declared is None:
        return ", ".join(report.row.paths)
    parts = []
    for label, connector in (
        ("push", declared.events),
        ("poll", declared.poll),
        ("reconcile", declared.reconcile),
    ):
        if connector is not None:
            parts.append(f"{label} ({connector.kind})")
    return ", ".join(parts)


def changes_table(changes: list[ModeChange], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("change", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for change in changes:
        table.add_row(when(change.at), _change(change), Text(change.reason))
    return table


def _policy(config: HysteresisConfig) -> list[tuple[str, str]]:
    return [
        ("failure / success", f"{config.failure_threshold} / {config.success_threshold}"),
        ("max_hysteresis", str(config.max_hysteresis)),
        ("event_timeout", format_duration(config.event_timeout)),
        ("flapping", f"{config.flap_switches} in {format_duration(config.flap_window)}"),
        (
            "cool_down / decay",
            f"{format_duration(config.cool_down)} / {format_duration(config.decay_period)}",
        ),
    ]


def comparison(result: Comparison, origin: str) -> RenderableType:
    """``sources simulate``: the replay beside the record, then the switches side by side."""
    period = span(result.until - result.start)
    head = Text(
        f"{result.key}: {result.outcomes} recorded outcomes from {when(result.start)} to"
        f" {when(result.until)} ({period}), replayed through {origin}"
    )
    notes: list[RenderableType] = []
    if not result.fresh:
        notes.append(
            Text(
                "note: the outcomes do not begin with the source's registration (older ones"
                " were purged); the replay starts from the recorded mode with fresh counts"
            )
        )
    summary = Table(title="recorded vs simulated", title_justify="left")
    summary.add_column("")
    summary.add_column("recorded", justify="right")
    summary.add_column("simulated", justify="right")
    for (label, before), (_, after) in zip(
        _policy(result.recorded_config), _policy(result.config), strict=True
    ):
        summary.add_row(label, before, after)
    recorded, simulated = result.recorded, result.simulated
    summary.add_row("switches", str(len(recorded.switches)), str(len(simulated.switches)))
    summary.add_row("rollbacks", str(len(recorded.rollbacks)), str(len(simulated.rollbacks)))
    for mode in WORKING_MODES:
        summary.add_row(
            f"time in {mode}",
            span(recorded.time_in_mode.get(mode, 0.0)),
            span(simulated.time_in_mode.get(mode, 0.0)),
        )
    summary.add_row(
        "polls",
        f"{recorded.polls} made",
        f"{simulated.polls} (one per {format_duration(result.polling_interval)})",
    )
    changes = Table(title="Mode changes side by side", title_justify="left")
    changes.add_column("at (UTC)", no_wrap=True)
    changes.add_column("change", no_wrap=True)
    changes.add_column("recorded", overflow="fold")
    changes.add_column("simulated", overflow="fold")
    for line in result.timeline():
        left = Text("-" if line.recorded is None else line.recorded)
        if line.simulated is None:
            right = Text("-")
        else:
            right = Text("same" if line.simulated == line.recorded else line.simulated)
        changes.add_row(when(line.at), line.change, left, right)
    counts = (
        f"{len(simulated.switches)} switch(es), {len(simulated.rollbacks)} rollback(s)",
        f"{len(recorded.switches)} switch(es), {len(recorded.rollbacks)} rollback(s)",
    )
    if result.same_switches:
        verdict_line = f"the replay made exactly the recorded mode changes ({counts[1]})"
    else:
        verdict_line = f"the replay differs from the record: {counts[0]} instead of {counts[1]}"
    return Group(head, *notes, summary, changes, Text(verdict_line))
