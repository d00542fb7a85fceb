"""The data sources as the read model holds them, folded from their ``SourceLog`` events.

A running center knows its sources in memory; a CLI beside it (or after it stopped) knows
them only from what the store holds. The read model (:mod:`.view`) keeps one
:class:`SourceRow` per source (mode, paths, threshold level, cool-down, counts, the last
reconciliation, the recent mode changes, a longer event timeout), folded by
:func:`fold_source` from the same events the aggregate applies to itself, so a row holds
what the source's log holds.
:class:`ModeHistory` (every mode change of one source: what ``sources simulate`` compares its
replay with) is read from the audit trail's rows of the source.

Only ``Registered`` names the tenant and the source; the later events are matched to it by
their originator id (``SourceLog.create_id(tenant, source)``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from eventcenter.domain.hysteresis import HysteresisConfig
from eventcenter.domain.source_log import RECENT
from eventcenter.domain.source_log import SourceLog as _SourceLog
from eventcenter.domain.source_modes import initial_mode
from eventcenter.domain.source_pause import PauseState

#: The aggregates as mypy sees their event classes (made by eventsourcing's ``@event``).
SourceLog: Any = _SourceLog

ChangeKind = Literal["switch", "rollback", "reconfigured"]


@dataclass(frozen=True, slots=True)
class ModeChange:
    """A change of a source's mode: a switch the policy decided, a rollback of one that could
    not start, or a new configuration that moved it. ``failures``/``successes``/``threshold``
    are the switch's counts (0 for the others)."""

    at: float
    kind: ChangeKind
    previous: str
    to: str
    reason: str
    failures: int = 0
    successes: int = 0
    threshold: int = 0


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """A reconciliation's report: items corrected because missing, changed or deleted."""

    at: float
    missing: int
    changed: int
    deleted: int


@dataclass
class SourceRow:
    """One data source as its log recorded it. ``since`` is when it entered ``mode``;
    ``paused`` the pause in effect (the mode is the one it resumes in)."""

    tenant: str
    name: str
    registered_at: float
    has_push: bool
    has_poll: bool
    config: dict[str, Any]
    mode: str
    since: float
    level: int = 0
    cool_down_until: float | None = None
    switches: int = 0
    rollbacks: int = 0
    reconciliations: int = 0
    threshold_changes: int = 0
    last_reconcile: Reconciliation | None = None
    recent: deque[ModeChange] = field(default_factory=lambda: deque(maxlen=RECENT))
    position: int = 0  # the notification id of the last event folded into it
    paused: PauseState | None = None
    #: The last longer event timeout recorded (a healing strategy's): ``timeout_factor`` times
    #: the configured one until ``extended_until``, and why.
    timeout_factor: float = 1.0
    extended_until: float | None = None
    extension_reason: str = ""

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.name}"

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p, has in (("push", self.has_push), ("poll", self.has_poll)) if has)

    @property
    def hysteresis_config(self) -> HysteresisConfig:
        """The policy configuration the source last ran with."""
        return HysteresisConfig.from_dict(self.config)

    @property
    def thresholds(self) -> tuple[int, int]:
        """(failure, success) thresholds now: the configured ones raised by ``level``."""
        return self.hysteresis_config.thresholds(self.level)

    def extension_end(self, at: float) -> float | None:
        """When the longer event timeout running at ``at`` ends; None if none runs."""
        until = self.extended_until
        return until if until is not None and at < until else None

    def event_timeout(self, at: float) -> float:
        """The push path's event timeout at ``at``: the configured one, or longer while a
        recorded extension runs."""
        configured = self.hysteresis_config.event_timeout
        if self.extension_end(at) is None:
            return configured
        return configured * self.timeout_factor

    @property
    def last_switch(self) -> ModeChange | None:
        switches = [change for change in self.recent if change.kind == "switch"]
        return switches[-1] if switches else None


def _switch(e: Any) -> ModeChange:
    return ModeChange(
        e.at, "switch", e.previous, e.to, e.reason, e.failures, e.successes, e.threshold
    )


def _rollback(e: Any) -> ModeChange:
    return ModeChange(e.at, "rollback", e.attempted, e.to, e.reason)


def fold_source(row: SourceRow | None, position: int, event: Any) -> SourceRow | None:
    """``row`` after one event of its source's log (a new row for ``Registered``); None for an
    event of no source log. Folds what the aggregate applies to itself, so a row holds what
    the source's log holds."""
    e = event
    if isinstance(e, SourceLog.Registered):
        return SourceRow(
            tenant=e.tenant,
            name=e.source,
            registered_at=e.at,
            has_push=e.has_push,
            has_poll=e.has_poll,
            config=dict(e.config),
            mode=initial_mode(e.has_push, e.has_poll),
            since=e.at,
            position=position,
        )
    if row is None or not isinstance(e, SourceLog.Event):
        return row
    if isinstance(e, SourceLog.ModeSwitched):
        row.recent.append(_switch(e))
        row.mode, row.since = e.to, e.at
        row.cool_down_until = e.cool_down_until
        row.switches += 1
    elif isinstance(e, SourceLog.SwitchRolledBack):
        row.recent.append(_rollback(e))
        row.mode, row.since = e.to, e.at
        row.rollbacks += 1
    elif isinstance(e, SourceLog.ThresholdRaised | SourceLog.ThresholdDecayed):
        row.level = e.level
        row.threshold_changes += 1
    elif isinstance(e, SourceLog.Reconfigured):
        if e.mode != row.mode:
            row.recent.append(ModeChange(e.at, "reconfigured", row.mode, e.mode, "reconfigured"))
            row.mode, row.since = e.mode, e.at
        row.has_push, row.has_poll = e.has_push, e.has_poll
        row.config = dict(e.config)
        row.level = e.level
    elif isinstance(e, SourceLog.Reconciled):
        row.reconciliations += 1
        row.last_reconcile = Reconciliation(e.at, e.missing, e.changed, e.deleted)
    elif isinstance(e, SourceLog.TimeoutExtended):
        row.timeout_factor, row.extended_until = e.factor, e.until
        row.extension_reason = e.reason
    elif isinstance(e, SourceLog.Paused):
        row.paused = PauseState(e.at, e.reason, e.by)
    elif isinstance(e, SourceLog.Resumed):
        row.paused = None
    else:
        return row
    row.position = position
    return row


def row_to_json(row: SourceRow) -> dict[str, Any]:
    """``row`` as JSON values (what the read model stores)."""
    data = asdict(row)
    data["recent"] = [asdict(change) for change in row.recent]
    return data


def row_from_json(data: dict[str, Any]) -> SourceRow:
    """The row :func:`row_to_json` stored."""
    values = dict(data)
    values["recent"] = deque((ModeChange(**c) for c in values["recent"]), maxlen=RECENT)
    last = values.get("last_reconcile")
    values["last_reconcile"] = Reconciliation(**last) if last else None
    paused = values.get("paused")
    values["paused"] = PauseState(**paused) if paused else None
    return SourceRow(**values)


@dataclass
class ModeHistory:
    """Every mode change of one source, in recorded order (its log's state keeps only the
    recent ones; the full history is in its events), read from the audit trail's rows of that
    source (:func:`~eventcenter.projections.queries.mode_history`)."""

    tenant: str = ""
    name: str = ""
    registered_at: float | None = None
    initial: str = ""  # the mode it was registered in
    current: str = ""
    changes: list[ModeChange] = field(default_factory=list)

    def mode_at(self, at: float) -> str | None:
        """The mode the source was in at ``at`` (after the changes recorded at ``at``; None
        before it was registered)."""
        if self.registered_at is None or at < self.registered_at:
            return None
        mode = self.initial
        for change in self.changes:
            if change.at > at:
                break
            mode = change.to
        return mode
