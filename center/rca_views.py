"""How ``eventcenter rca list|show`` print cases: rich tables for people, plain dicts for
``--json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from eventcenter.domain.rca_case import CaseRow, CaseStep

#: The fields of a step ``rca show`` prints, in this order, when the step has them.
STEP_FIELDS = (
    "category",
    "confidence",
    "strategy",
    "n",
    "action",
    "detail",
    "sink",
    "by",
    "note",
    "reason",
    "outcome",
    "kind",
    "message",
    "evidence",
    "correlation_id",
)


def when(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def case_dict(row: CaseRow) -> dict[str, Any]:
    values = asdict(row)
    return {"id": values.pop("case_id"), **values}


def cases_table(rows: Sequence[CaseRow], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("id", "opened", "tenant/source", "category", "status", "failures", "tries"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.case_id,
            when(row.opened_at),
            f"{row.tenant}/{row.source or '-'}",
            f"{row.category} ({row.confidence:.2f})",
            row.status,
            str(row.failures),
            f"{row.attempts} healing, {row.notifications} notices",
        )
    return table


def step_dict(step: CaseStep) -> dict[str, Any]:
    return {"version": step.version, "name": step.name, "at": step.at, **_plain(step.fields)}


def step_summary(step: CaseStep) -> str:
    """The fields of a step worth reading, as ``name: value`` pairs."""
    fields = dict(step.fields)
    analysis = fields.pop("analysis", None)
    if isinstance(analysis, Mapping):
        fields.update({k: v for k, v in analysis.items() if k in STEP_FIELDS})
    failure = fields.pop("failure", None)
    if isinstance(failure, Mapping):
        fields.update({k: failure.get(k) for k in ("kind", "message", "correlation_id")})
    parts = []
    for name in STEP_FIELDS:
        value = fields.get(name)
        if value in (None, "", [], ()):
            continue
        if isinstance(value, list | tuple):
            value = "; ".join(str(v) for v in value)
        elif isinstance(value, float):
            value = f"{value:.2f}"
        parts.append(f"{name}: {value}")
    return ", ".join(parts)


def history_table(case_id: str, steps: Sequence[CaseStep]) -> Table:
    opened = steps[0].fields if steps else {}
    where = f"{opened.get('tenant', '?')}/{opened.get('source') or '-'}"
    table = Table(title=f"rca case {case_id} ({where})", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("at (UTC)")
    table.add_column("step")
    table.add_column("what", overflow="fold")
    for step in steps:
        table.add_row(str(step.version), when(step.at), step.name, step_summary(step))
    return table


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
