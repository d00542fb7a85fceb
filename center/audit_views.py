"""How ``eventcenter audit`` and ``explain`` print decisions: rich output for people, JSON
for scripts. Every text comes from the store and is shown literally (no markup)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from eventcenter.domain.durations import parse_duration
from eventcenter.domain.errors import EventCenterError
from eventcenter.projections.catalog import AuditEntry
from eventcenter.projections.explain import Explanation

__all__ = ["audit_table", "explanation_view", "parse_since"]


def parse_since(text: str, now: float | None = None) -> float:
    """A ``--since``/``--until`` value as a time in seconds: a duration back from now
    (``90s``, ``15m``, ``1h``, ``2d``) or an ISO 8601 date and time (UTC when no zone)."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except (ValueError, EventCenterError):
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EventCenterError(
            f"{text!r} is neither a duration (90s, 15m, 1h, 2d) nor a date and time"
            " (2026-12-03T14:00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _what(entry: AuditEntry) -> Text:
    subject = entry.subject or entry.source
    change = f"{entry.from_state} -> {entry.to_state}" if entry.to_state else ""
    where = " ".join(part for part in (entry.tenant, subject) if part)
    return Text.assemble(
        (where + "\n" if where else "", "bold"),
        change + ("\n" if change else ""),
        (entry.reason, "italic"),
    )


def audit_table(entries: Sequence[AuditEntry], title: str) -> Table:
    """One row per decision: position, date and time, kind, what (from -> to), why, and the
    correlation id (whole: it is what ``--correlation`` takes)."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", no_wrap=True)
    table.add_column("at (UTC)", width=12, overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("what, from -> to, why", overflow="fold")
    table.add_column("correlation id", overflow="fold")
    for entry in entries:
        table.add_row(
            str(entry.position),
            Text(_when(entry.at)),
            Text(entry.kind),
            _what(entry),
            Text(entry.correlation_id, style="dim"),
        )
    return table


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list) and len(str(value)) > 200:
        return str(value)[:200] + " ..."
    return str(value)


def explanation_view(explained: Explanation) -> Group:
    """The decision, the rule that fired, its inputs, the state before it and its chain."""
    e = explained.entry
    head = Text.assemble(
        (f"#{e.position} {e.kind}", "bold"),
        f"  {_when(e.at)} UTC\n",
        _what(e),
        "\n",
        ("correlation id: ", "dim"),
        e.correlation_id or "(none)",
        ("  cause: ", "dim"),
        e.cause or "(none)",
    )
    rule = Text.assemble(("rule: ", "bold"), explained.rule)
    inputs = Table(title="inputs recorded with the decision", title_justify="left")
    inputs.add_column("field", no_wrap=True)
    inputs.add_column("value", overflow="fold")
    for key, value in explained.inputs.items():
        inputs.add_row(key, Text(_value(value)))
    parts: list[Any] = [head, rule, inputs]
    if explained.state:
        state = Table(title="state when it was decided", title_justify="left")
        state.add_column("what", no_wrap=True)
        state.add_column("value", overflow="fold")
        for key, value in explained.state.items():
            state.add_row(key, Text(_value(value)))
        parts.append(state)
    if explained.before:
        parts.append(audit_table(explained.before, "before it, in its chain"))
    if explained.after:
        parts.append(audit_table(explained.after, "after it, in its chain"))
    if not explained.before and not explained.after:
        parts.append(Text("nothing else in its chain", style="dim"))
    return Group(*parts)
