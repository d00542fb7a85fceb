"""Read models of the data sources, folded from their ``SourceLog`` events.

A running center knows its sources in memory; a CLI beside it (or after it stopped) knows
them only from what the store holds. These projections follow the notification log like the
audit trail does (:mod:`.audit`): :class:`SourceIndex` keeps one row per source (mode, paths,
threshold level, cool-down, counts, the last reconciliation and the recent mode changes),
:class:`ModeHistory` every mode change of one source (what ``sources simulate`` compares its
replay with). Both fold the same events the aggregate applies to itself, so a row holds what
the source's log holds.

Only ``Registered`` names the tenant and the source; the later events are matched to it by
their originator id (``SourceLog.create_id(tenant, source)``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from eventcenter.domain.hysteresis import HysteresisConfig
from eventcenter.domain.source_log import RECENT, SourceLog
from eventcenter.domain.source_modes import initial_mode
from eventcenter.projections.audit import Projection

REGISTERED = "SourceLog.Registered"
RECONFIGURED = "SourceLog.Reconfigured"
MODE_SWITCHED = "SourceLog.ModeSwitched"
THRESHOLD_RAISED = "SourceLog.ThresholdRaised"
THRESHOLD_DECAYED = "SourceLog.ThresholdDecayed"
SWITCH_ROLLED_BACK = "SourceLog.SwitchRolledBack"
RECONCILED = "SourceLog.Reconciled"

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
    """One data source as its log recorded it. ``since`` is when it entered ``mode``."""

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


@dataclass
class SourceIndex(Projection):
    """Every source recorded in the store, one :class:`SourceRow` each."""

    rows: dict[UUID, SourceRow] = field(default_factory=dict)

    def fold(self, position: int, name: str, domain_event: Any) -> None:
        e = domain_event
        if name == REGISTERED:
            self.rows[e.originator_id] = SourceRow(
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
            return
        row = self.rows.get(e.originator_id)
        if row is None:
            return  # not a source log's event
        if name == MODE_SWITCHED:
            row.recent.append(_switch(e))
            row.mode, row.since = e.to, e.at
            row.cool_down_until = e.cool_down_until
            row.switches += 1
        elif name == SWITCH_ROLLED_BACK:
            row.recent.append(_rollback(e))
            row.mode, row.since = e.to, e.at
            row.rollbacks += 1
        elif name in (THRESHOLD_RAISED, THRESHOLD_DECAYED):
            row.level = e.level
            row.threshold_changes += 1
        elif name == RECONFIGURED:
            if e.mode != row.mode:
                change = ModeChange(e.at, "reconfigured", row.mode, e.mode, "reconfigured")
                row.recent.append(change)
                row.mode, row.since = e.mode, e.at
            row.has_push, row.has_poll = e.has_push, e.has_poll
            row.config = dict(e.config)
            row.level = e.level
        elif name == RECONCILED:
            row.reconciliations += 1
            row.last_reconcile = Reconciliation(e.at, e.missing, e.changed, e.deleted)
        else:
            return
        row.position = position

    def find(self, tenant: str, name: str) -> SourceRow | None:
        return self.rows.get(SourceLog.create_id(tenant, name))

    def sorted(self) -> list[SourceRow]:
        """The rows by tenant, then name."""
        return sorted(self.rows.values(), key=lambda row: (row.tenant, row.name))


@dataclass
class ModeHistory(Projection):
    """Every mode change of one source, in recorded order (its log's state keeps only the
    recent ones; the full history is in its events). Build it with the source's tenant and
    name."""

    tenant: str = ""
    name: str = ""
    registered_at: float | None = None
    initial: str = ""  # the mode it was registered in
    current: str = ""
    changes: list[ModeChange] = field(default_factory=list)

    def fold(self, position: int, name: str, domain_event: Any) -> None:
        e = domain_event
        if e.originator_id != SourceLog.create_id(self.tenant, self.name):
            return
        change: ModeChange | None = None
        if name == REGISTERED:
            self.registered_at = e.at
            self.initial = self.current = initial_mode(e.has_push, e.has_poll)
        elif name == MODE_SWITCHED:
            change = _switch(e)
        elif name == SWITCH_ROLLED_BACK:
            change = _rollback(e)
        elif name == RECONFIGURED and e.mode != self.current:
            change = ModeChange(e.at, "reconfigured", self.current, e.mode, "reconfigured")
        if change is not None:
            self.changes.append(change)
            self.current = change.to

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
