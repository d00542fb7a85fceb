"""The questions the read model answers, for the CLI and the HTTP API alike.

Every function takes a SQLAlchemy session on the store and reads only the read model's tables
(:mod:`.tables`). Lists come in time order (the decision's time, then its position) and page
by keyset: a page's :attr:`AuditPage.next` is the cursor that starts the next one, so a page
costs the same however deep it is. ``tenant`` restricts every answer to one tenant (an API
caller's key); ``None`` sees all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import ColumnElement, Select, or_, select, tuple_
from sqlalchemy.orm import Session

from eventcenter.domain.errors import EventCenterError
from eventcenter.domain.source_log import SourceLog
from eventcenter.projections import tables
from eventcenter.projections.audit import DeadLetterRow, DecisionRow
from eventcenter.projections.catalog import AuditEntry
from eventcenter.projections.sources import ModeChange, ModeHistory, SourceRow, row_from_json

__all__ = [
    "MAX_PAGE",
    "AuditFilter",
    "AuditPage",
    "InvalidQuery",
    "audit_entry",
    "audit_page",
    "chain",
    "dead_letter",
    "dead_letters",
    "decisions",
    "mode_history",
    "parse_cursor",
    "source",
    "sources",
]

#: The largest page a query returns.
MAX_PAGE = 1000


class InvalidQuery(EventCenterError):
    """A filter or cursor that cannot be used; the message names it and says what is valid."""


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which decisions to list. ``kinds`` are exact kinds, or prefixes ending in ``.*``
    (``rca.*``); ``since``/``until`` are times in seconds (UNIX epoch), both inclusive."""

    tenant: str | None = None
    source: str | None = None
    kinds: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    correlation_id: str | None = None
    aggregate_id: str | None = None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of decisions; ``next`` continues after its last row (None: no more)."""

    entries: list[AuditEntry]
    next: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _cursor(entry: AuditEntry) -> str:
    return f"{entry.at!r}:{entry.position}"


def parse_cursor(text: str) -> tuple[float, int]:
    """The (time, position) a cursor from :attr:`AuditPage.next` stands for."""
    at, sep, position = text.rpartition(":")
    try:
        if not sep:
            raise ValueError
        return float(at), int(position)
    except ValueError:
        raise InvalidQuery(
            f"cursor {text!r} is not one this API returned (use the 'next' of a page)"
        ) from None


def _entry(row: Any) -> AuditEntry:
    values = dict(row._mapping)
    values["details"] = orjson.loads(values["details"])
    return AuditEntry(**values)


def _filtered(query: Select[Any], flt: AuditFilter) -> Select[Any]:
    t = tables.audit.c
    if flt.tenant is not None:
        query = query.where(t.tenant == flt.tenant)
    if flt.source is not None:
        query = query.where(t.source == flt.source)
    if flt.kinds:
        exact = [k for k in flt.kinds if not k.endswith(".*")]
        prefixes = [k[:-1] for k in flt.kinds if k.endswith(".*")]
        conditions: list[ColumnElement[bool]] = [t.kind.in_(exact)] if exact else []
        conditions += [t.kind.startswith(prefix, autoescape=True) for prefix in prefixes]
        query = query.where(or_(*conditions))
    if flt.since is not None:
        query = query.where(t.at >= flt.since)
    if flt.until is not None:
        query = query.where(t.at <= flt.until)
    if flt.correlation_id is not None:
        query = query.where(t.correlation_id == flt.correlation_id)
    if flt.aggregate_id is not None:
        query = query.where(t.aggregate_id == flt.aggregate_id)
    if flt.subject is not None:
        query = query.where(t.subject == flt.subject)
    return query


def audit_page(
    session: Session,
    flt: AuditFilter,
    *,
    after: str | None = None,
    limit: int = 100,
    newest_first: bool = False,
) -> AuditPage:
    """Decisions matching ``flt`` in time order (``newest_first``: the reverse), at most
    ``limit``, starting after the cursor ``after``."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    t = tables.audit.c
    query = _filtered(select(tables.audit), flt)
    if after is not None:
        # A row-value comparison, not "at < x OR (at = x AND position < y)": both databases
        # then start the index scan at the cursor instead of filtering every row before it.
        at, position = parse_cursor(after)
        here = tuple_(t.at, t.position)
        query = query.where(here < (at, position) if newest_first else here > (at, position))
    order = (t.at.desc(), t.position.desc()) if newest_first else (t.at, t.position)
    rows = session.execute(query.order_by(*order).limit(limit + 1)).all()
    entries = [_entry(row) for row in rows[:limit]]
    more = len(rows) > limit
    return AuditPage(entries, _cursor(entries[-1]) if more and entries else None)


def audit_entry(session: Session, position: int, tenant: str | None = None) -> AuditEntry | None:
    """The decision recorded at ``position`` (None if there is none, or not of ``tenant``)."""
    query = select(tables.audit).where(tables.audit.c.position == position)
    if tenant is not None:
        query = query.where(tables.audit.c.tenant == tenant)
    row = session.execute(query).first()
    return _entry(row) if row is not None else None


def chain(
    session: Session,
    entry: AuditEntry,
    *,
    tenant: str | None = None,
    before: int = 20,
    after: int = 20,
) -> tuple[list[AuditEntry], list[AuditEntry]]:
    """What came before and after ``entry`` in its chain of cause and effect: the decisions
    with its correlation id in time order, or (without one) those of its aggregate in the
    order it recorded them; oldest first."""
    t = tables.audit.c
    if entry.correlation_id:
        flt = AuditFilter(tenant=tenant, correlation_id=entry.correlation_id)
        order: tuple[Any, ...] = (t.at, t.position)
        here: Any = tuple_(t.at, t.position)
        mark: Any = (entry.at, entry.position)
    else:
        # One aggregate's own sequence, read from its (aggregate_id, position) index: in time
        # order a long history would be read whole (or the whole table scanned) to find 20.
        flt = AuditFilter(tenant=tenant, aggregate_id=entry.aggregate_id)
        order, here, mark = (t.position,), t.position, entry.position
    base = _filtered(select(tables.audit), flt)
    older = session.execute(
        base.where(here < mark).order_by(*(c.desc() for c in order)).limit(before)
    ).all()
    newer = session.execute(base.where(here > mark).order_by(*order).limit(after)).all()
    return [_entry(row) for row in reversed(older)], [_entry(row) for row in newer]


def history(
    session: Session,
    aggregate_id: str,
    until_position: int,
    *,
    kinds: Sequence[str] = (),
    last: int | None = None,
) -> list[AuditEntry]:
    """The decisions of one aggregate up to ``until_position`` (inclusive), in order: only
    those of ``kinds`` if given, and only the ``last`` ones if given (a processor log holds
    a large share of all decisions: read it whole and an answer takes seconds)."""
    t = tables.audit.c
    query = select(tables.audit).where(t.aggregate_id == aggregate_id, t.position <= until_position)
    if kinds:
        query = query.where(t.kind.in_(kinds))
    if last is None:
        return [_entry(row) for row in session.execute(query.order_by(t.position)).all()]
    rows = session.execute(query.order_by(t.position.desc()).limit(last)).all()
    return [_entry(row) for row in reversed(rows)]


# the processor's decisions (the ``decisions`` command) ----------------------------------------

_PROCESSOR = "ProcessorLog"


def decisions(session: Session, last: int | None = None) -> list[DecisionRow]:
    """Processor transitions and handler decisions, in recorded order (the ``last`` ones)."""
    t = tables.audit.c
    query = select(tables.audit).where(t.aggregate == _PROCESSOR)
    if last is not None:
        query = query.order_by(t.position.desc()).limit(last)
        rows = list(reversed(session.execute(query).all()))
    else:
        rows = list(session.execute(query.order_by(t.position)).all())
    return [_decision(_entry(row)) for row in rows]


def _decision(entry: AuditEntry) -> DecisionRow:
    when = datetime.fromtimestamp(entry.at, UTC)
    if entry.kind == "processor.transitioned":
        trigger = str(entry.details.get("trigger", ""))
        return DecisionRow(
            entry.position,
            when,
            "transition",
            f"{entry.from_state} -> {entry.to_state} ({trigger})",
            entry.reason,
            entry.correlation_id,
            "",
            {"trigger": trigger, "from": entry.from_state, "to": entry.to_state},
        )
    details = dict(entry.details.get("details") or {})
    return DecisionRow(
        entry.position,
        when,
        str(entry.details.get("kind", entry.kind)),
        " ".join(f"{k}={v}" for k, v in details.items()),
        entry.reason,
        entry.correlation_id,
        entry.tenant,
        details,
    )


# dead letters --------------------------------------------------------------------------------


def _letter(row: Any) -> DeadLetterRow:
    return DeadLetterRow(
        position=row.position,
        id=UUID(row.id),
        at=datetime.fromtimestamp(row.at, UTC),
        event=orjson.loads(row.envelope),
        subscription=row.subscription,
        error_type=row.error_type,
        error=row.error,
        attempts=row.attempts,
        status=row.status,
        replayed_at=(
            datetime.fromtimestamp(row.replayed_at, UTC) if row.replayed_at is not None else None
        ),
        replay_of=row.replay_of,
        failed_again_as=row.failed_again_as,
    )


def dead_letters(
    session: Session, status: str | None = None, tenant: str | None = None
) -> list[DeadLetterRow]:
    """Dead letters, oldest first; ``status`` (pending, replaying, replayed) filters."""
    t = tables.dead_letters.c
    query = select(tables.dead_letters)
    if status is not None:
        query = query.where(t.status == status)
    if tenant is not None:
        query = query.where(t.tenant == tenant)
    return [_letter(row) for row in session.execute(query.order_by(t.position)).all()]


def dead_letter(
    session: Session, letter_id: UUID, tenant: str | None = None
) -> DeadLetterRow | None:
    t = tables.dead_letters.c
    query = select(tables.dead_letters).where(t.id == str(letter_id))
    if tenant is not None:
        query = query.where(t.tenant == tenant)
    row = session.execute(query).first()
    return _letter(row) if row is not None else None


# data sources --------------------------------------------------------------------------------


def sources(session: Session, tenant: str | None = None) -> list[SourceRow]:
    """Every source recorded in the store, by tenant and name."""
    t = tables.sources.c
    query = select(t.row)
    if tenant is not None:
        query = query.where(t.tenant == tenant)
    rows = session.execute(query.order_by(t.tenant, t.name)).all()
    return [row_from_json(orjson.loads(row.row)) for row in rows]


def source(session: Session, tenant: str, name: str) -> SourceRow | None:
    t = tables.sources.c
    row = session.execute(
        select(t.row).where(t.aggregate_id == str(SourceLog.create_id(tenant, name)))
    ).first()
    return row_from_json(orjson.loads(row.row)) if row is not None else None


_MODE_KINDS = ("source.registered", "mode.switched", "mode.rolled_back", "source.reconfigured")


def mode_history(session: Session, tenant: str, name: str) -> ModeHistory:
    """Every mode change of one source, read from its rows of the audit trail."""
    found = ModeHistory(tenant=tenant, name=name)
    t = tables.audit.c
    rows = session.execute(
        select(tables.audit)
        .where(
            t.aggregate_id == str(SourceLog.create_id(tenant, name)),
            t.kind.in_(_MODE_KINDS),
        )
        .order_by(t.position)
    ).all()
    for entry in map(_entry, rows):
        d = entry.details
        if entry.kind == "source.registered":
            found.registered_at = entry.at
            found.initial = found.current = entry.to_state
            continue
        if entry.kind == "mode.switched":
            change = ModeChange(
                entry.at,
                "switch",
                entry.from_state,
                entry.to_state,
                entry.reason,
                int(d.get("failures", 0)),
                int(d.get("successes", 0)),
                int(d.get("threshold", 0)),
            )
        elif entry.kind == "mode.rolled_back":
            change = ModeChange(
                entry.at, "rollback", entry.from_state, entry.to_state, entry.reason
            )
        elif entry.to_state != entry.from_state:
            change = ModeChange(
                entry.at, "reconfigured", entry.from_state, entry.to_state, "reconfigured"
            )
        else:
            continue
        found.changes.append(change)
        found.current = change.to
    return found


def kinds_in(session: Session, tenant: str | None = None) -> Sequence[str]:
    """The kinds of decision recorded (for a filter's help)."""
    t = tables.audit.c
    query = select(t.kind).distinct()
    if tenant is not None:
        query = query.where(t.tenant == tenant)
    return sorted(row.kind for row in session.execute(query).all())
