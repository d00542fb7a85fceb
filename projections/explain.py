"""Why did this happen? One decision explained from the recorded events alone.

:func:`explain` takes a decision's position on the audit trail and answers with what the
policy saw at that moment (the counts, thresholds, rates and figures recorded with the
decision, and what the aggregate's earlier events say about its state then: the source's
configuration and threshold level, a breaker's or a case's earlier steps), the rule that fired,
and what came before and after it in its chain of cause and effect. Nothing is read from a
running center: the same answer comes from a copy of the store, years later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from eventcenter.projections import queries
from eventcenter.projections.catalog import AuditEntry

__all__ = ["Explanation", "explain"]

#: Earlier decisions of the same aggregate shown as its history at the time.
HISTORY = 10


@dataclass(frozen=True, slots=True)
class Explanation:
    """A decision, the rule that fired, the inputs it saw, and its chain."""

    entry: AuditEntry
    rule: str
    inputs: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    history: list[AuditEntry] = field(default_factory=list)
    before: list[AuditEntry] = field(default_factory=list)
    after: list[AuditEntry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.entry.as_dict(),
            "rule": self.rule,
            "inputs": self.inputs,
            "state": self.state,
            "history": [e.as_dict() for e in self.history],
            "before": [e.as_dict() for e in self.before],
            "after": [e.as_dict() for e in self.after],
        }


def _pct(value: Any) -> str:
    try:
        return f"{float(value):.0%}"
    except (TypeError, ValueError):
        return str(value)


def _rule(entry: AuditEntry) -> str:
    """The rule that fired, in words, from the figures recorded with the decision."""
    d = entry.details
    kind = entry.kind
    if kind == "mode.switched":
        failures, successes = int(d.get("failures", 0)), int(d.get("successes", 0))
        threshold = d.get("threshold", 0)
        if failures and failures >= int(threshold or 0):
            why = f"{failures} consecutive push failures reached the failure threshold {threshold}"
        elif successes and successes >= int(threshold or 0):
            why = (
                f"{successes} consecutive push successes reached the success threshold {threshold}"
            )
        else:
            why = entry.reason or "the hysteresis policy decided it"
        cool = d.get("cool_down_until")
        tail = f"; no further switch before {cool:g} (cool-down)" if cool else ""
        return f"{why}: {entry.from_state} -> {entry.to_state}{tail}"
    if kind in ("threshold.raised", "threshold.decayed"):
        verb = "raised" if kind == "threshold.raised" else "lowered"
        return (
            f"{entry.reason}: thresholds {verb} to {d.get('failure_threshold')} failures /"
            f" {d.get('success_threshold')} successes ({entry.from_state} -> {entry.to_state})"
        )
    if kind == "mode.rolled_back":
        return (
            f"mode {entry.from_state} could not start ({entry.reason}): rolled back to"
            f" {entry.to_state}"
        )
    if entry.aggregate == "BreakerLog" and kind == "breaker.opened":
        return (
            f"failure rate {_pct(d.get('failure_rate'))}, slow-call rate"
            f" {_pct(d.get('slow_rate'))} over {d.get('calls')} calls crossed the breaker's"
            f" thresholds: open for {d.get('wait')} s (opened again {d.get('reopens', 0)}"
            f" times before)"
        )
    if kind == "processor.transitioned":
        return (
            f"trigger '{d.get('trigger')}' moved the processor {entry.from_state} ->"
            f" {entry.to_state}: {entry.reason}"
        )
    if kind == "throughput.measured":
        return (
            f"knee rule: verdict {d.get('verdict')}, {d.get('max_rps')} requests/s sustainable"
            f" (bracket {d.get('lower')}-{d.get('upper')}, p95 {d.get('p95')}, errors"
            f" {_pct(d.get('error_rate'))})"
        )
    if kind == "throughput.capacity_regressed":
        return (
            f"capacity {d.get('max_rps')} requests/s against {d.get('previous_rps')} for"
            f" {d.get('previous_signature')}: a drop of {_pct(d.get('drop'))}, more than the"
            f" {_pct(d.get('max_drop'))} allowed"
        )
    if entry.reason:
        return entry.reason
    return f"{kind} recorded (no rule attached: the recorded fields are its inputs)"


def _state(session: Session, entry: AuditEntry, history: list[AuditEntry]) -> dict[str, Any]:
    """What the aggregate's earlier events say about its state when the decision was taken
    (``history``: its latest decisions before this one)."""
    state: dict[str, Any] = {}
    if entry.aggregate == "SourceLog":

        def latest(kinds: tuple[str, ...], last: int = 1) -> list[AuditEntry]:
            return queries.history(
                session, entry.aggregate_id, entry.position - 1, kinds=kinds, last=last
            )

        for earlier in latest(("source.registered", "source.reconfigured")):
            state["config"] = earlier.details.get("config", {})
            state["paths"] = {
                "push": earlier.details.get("has_push"),
                "poll": earlier.details.get("has_poll"),
            }
        for earlier in latest(("threshold.raised", "threshold.decayed")):
            state["level"] = earlier.details.get("level")
        switches = latest(("mode.switched",), 5)
        state["switches_before"] = [
            {"at": e.at, "from": e.from_state, "to": e.to_state, "ago_s": entry.at - e.at}
            for e in switches[-5:]
        ]
        state["mode_before"] = entry.from_state
    elif entry.aggregate in ("BreakerLog", "RcaCase", "TuningRun"):
        state["steps_before"] = [f"{e.kind} ({e.to_state or e.reason})" for e in history[-5:]]
    return state


def explain(
    session: Session, position: int, *, tenant: str | None = None, chain: int = 10
) -> Explanation | None:
    """The explanation of the decision at ``position`` (None if there is none, or not one of
    ``tenant``)."""
    entry = queries.audit_entry(session, position, tenant)
    if entry is None:
        return None
    history = queries.history(session, entry.aggregate_id, entry.position - 1, last=HISTORY)
    before, after = queries.chain(session, entry, tenant=tenant, before=chain, after=chain)
    return Explanation(
        entry=entry,
        rule=_rule(entry),
        inputs=dict(entry.details),
        state=_state(session, entry, history),
        history=history,
        before=before,
        after=after,
    )
