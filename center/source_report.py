"""What ``eventcenter sources`` prints, computed from what the store holds.

A CLI beside a running center (or after it stopped) cannot ask the center; it reads the
source's log (:class:`~eventcenter.projections.sources.SourceRow`) and the outcomes its runner
recorded (one row per push batch received, poll, failure, rollback, start and stop, with the
item count), and rebuilds from them:

- the **health** (:func:`source_report`): the outcomes go through the same
  :class:`~eventcenter.domain.source_health.HealthTally` the runner keeps, in order, so the
  score and its factors follow the documented formula. The figures cover the outcomes the
  store still holds (they are purged after the key retention), across restarts; the running
  center's own tally starts over at each start. Lag is not recorded, so it is not shown. For
  a source whose last outcome is a stop, health is taken at the stop: a stopped source is not
  failing, it is not running;
- the **what-if** (:func:`compare`): the outcomes replayed through a hysteresis configuration
  with :func:`~eventcenter.domain.simulate.simulate`, beside what the log recorded over the
  same period (its switches, the time in each mode, the polls made). Through the configuration
  the source ran with, the replay gives the recorded switches back exactly (the policy is a
  pure function of the outcomes and their times), with two exceptions the simulator documents:
  outcomes purged before the period, and a crash (no stop recorded) after which silence is not
  charged for the time before the restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from eventcenter.center.source_config import SourceSettings
from eventcenter.domain.hysteresis import Hysteresis, HysteresisConfig, Outcome
from eventcenter.domain.simulate import Simulation, simulate
from eventcenter.domain.source_health import HealthTally, SourceHealth
from eventcenter.domain.source_modes import WORKING_MODES
from eventcenter.projections.sources import ModeChange, ModeHistory, SourceRow
from eventcenter.storage.source_state import OutcomeRow

#: The polling interval assumed for a source the loaded configuration does not declare.
DEFAULT_POLLING_INTERVAL: float = SourceSettings.model_fields["polling_interval"].default


@dataclass(frozen=True, slots=True)
class PathCounts:
    """Outcomes of one path: calls that worked, that failed, and the items they brought."""

    ok: int = 0
    failed: int = 0
    items: int = 0


@dataclass(frozen=True, slots=True)
class OutcomeSummary:
    """The recorded outcomes of a source, counted."""

    push: PathCounts
    poll: PathCounts
    starts: int
    stops: int
    rollbacks: int
    first_at: float | None
    last_at: float | None
    stopped_at: float | None  # the last outcome, if it is a stop

    @property
    def total(self) -> int:
        return (
            self.push.ok
            + self.push.failed
            + self.poll.ok
            + self.poll.failed
            + self.starts
            + self.stops
            + self.rollbacks
        )


def summarize(outcomes: Sequence[OutcomeRow]) -> OutcomeSummary:
    counts = {"push": [0, 0, 0], "poll": [0, 0, 0]}
    other = {"start": 0, "stop": 0, "rollback": 0}
    for row in outcomes:
        if row.path in counts:
            tally = counts[row.path]
            tally[0 if row.ok else 1] += 1
            tally[2] += row.items
        elif row.path in other:
            other[row.path] += 1
    last = outcomes[-1] if outcomes else None
    return OutcomeSummary(
        push=PathCounts(*counts["push"]),
        poll=PathCounts(*counts["poll"]),
        starts=other["start"],
        stops=other["stop"],
        rollbacks=other["rollback"],
        first_at=outcomes[0].at if outcomes else None,
        last_at=None if last is None else last.at,
        stopped_at=last.at if last is not None and last.path == "stop" else None,
    )


@dataclass(frozen=True, slots=True)
class SourceReport:
    """Everything ``sources list|show`` prints about one source.

    ``at`` is when the health was taken (now, or the stop of a stopped source);
    ``declared`` the source's table in the loaded configuration, if it has one (its
    polling interval is then the one health uses; otherwise the default).
    """

    row: SourceRow
    outcomes: OutcomeSummary
    health: SourceHealth
    at: float
    polling_interval: float
    declared: SourceSettings | None

    @property
    def running(self) -> bool:
        """Whether the source's last recorded outcome is not a stop (it runs, or its center
        ended without stopping it)."""
        return self.outcomes.stopped_at is None and self.outcomes.last_at is not None


def source_report(
    row: SourceRow,
    outcomes: Sequence[OutcomeRow],
    *,
    now: float,
    declared: SourceSettings | None = None,
) -> SourceReport:
    """The source's health rebuilt from its outcomes (see the module docstring)."""
    summary = summarize(outcomes)
    tally = HealthTally(row.registered_at)
    for outcome in outcomes:
        if outcome.path not in ("push", "poll"):
            continue
        if outcome.ok:
            tally.succeeded(outcome.path, outcome.at, outcome.items)
        else:
            tally.failed(outcome.path, outcome.at)
    at = summary.stopped_at if summary.stopped_at is not None else now
    interval = declared.polling_interval if declared is not None else DEFAULT_POLLING_INTERVAL
    health = tally.health(
        now=at,
        mode=row.mode,
        has_push=row.has_push,
        failure_threshold=row.thresholds[0],
        event_timeout=row.hysteresis_config.event_timeout,
        polling_interval=interval,
    )
    return SourceReport(row, summary, health, at, interval, declared)


# what if -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRun:
    """What happened over the replayed period, from the source's log and its outcomes."""

    changes: tuple[ModeChange, ...]  # switches, rollbacks and reconfigurations in the period
    time_in_mode: dict[str, float]
    polls: int  # poll calls recorded (each attempt, retries included)

    @property
    def switches(self) -> tuple[ModeChange, ...]:
        return tuple(change for change in self.changes if change.kind == "switch")

    @property
    def rollbacks(self) -> tuple[ModeChange, ...]:
        return tuple(change for change in self.changes if change.kind == "rollback")


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One line of the side-by-side: a mode change recorded, simulated, or both (same time,
    same change). ``change`` reads ``event_only -> hybrid`` or ``rolled back to event_only``;
    a reason is None on the side that did not make the change."""

    at: float
    change: str
    recorded: str | None
    simulated: str | None


def _recorded_line(change: ModeChange) -> tuple[float, str, str]:
    if change.kind == "rollback":
        return change.at, f"rolled back to {change.to}", change.reason
    if change.kind == "reconfigured":
        return change.at, f"{change.previous} -> {change.to} (reconfigured)", change.reason
    return change.at, f"{change.previous} -> {change.to}", change.reason


@dataclass(frozen=True, slots=True)
class Comparison:
    """A replay of ``outcomes`` recorded outcomes through ``config`` beside the record.

    ``fresh`` is False when the period does not begin with the source's registration (older
    outcomes were purged): the replay then starts from the recorded mode at ``start`` with
    fresh counts, so it may differ from the record near the beginning.
    """

    tenant: str
    name: str
    outcomes: int
    start: float
    until: float
    fresh: bool
    recorded_config: HysteresisConfig
    config: HysteresisConfig
    polling_interval: float
    recorded: RecordedRun
    simulated: Simulation

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.name}"

    @property
    def same_switches(self) -> bool:
        """True when the replay decided exactly the recorded switches (times, modes, reasons)
        and rolled back exactly the recorded rollbacks."""
        recorded = [(c.at, c.previous, c.to, c.reason) for c in self.recorded.switches]
        simulated = [(s.at, s.previous, s.to, s.reason) for s in self.simulated.switches]
        rollbacks = [(c.at, c.to) for c in self.recorded.rollbacks]
        return recorded == simulated and rollbacks == list(self.simulated.rollbacks)

    def timeline(self) -> list[TimelineRow]:
        """Recorded and simulated mode changes merged by time; a change both made (same time,
        same modes) is one row. A replay rolls back only where the record did, so a simulated
        rollback's reason is the recorded one."""
        recorded = [_recorded_line(change) for change in self.recorded.changes]
        reasons = {(at, change): reason for at, change, reason in recorded}
        simulated = [(s.at, f"{s.previous} -> {s.to}", s.reason) for s in self.simulated.switches]
        for at, mode in self.simulated.rollbacks:
            change = f"rolled back to {mode}"
            simulated.append((at, change, reasons.get((at, change), "rolled back")))
        simulated.sort(key=lambda line: line[0])  # stable: a rollback follows its switch
        rows: list[TimelineRow] = []
        i = j = 0
        while i < len(recorded) or j < len(simulated):
            r = recorded[i] if i < len(recorded) else None
            s = simulated[j] if j < len(simulated) else None
            if r is not None and s is not None and r[:2] == s[:2]:
                rows.append(TimelineRow(r[0], r[1], r[2], s[2]))
                i, j = i + 1, j + 1
            elif s is None or (r is not None and r[0] <= s[0]):
                assert r is not None
                rows.append(TimelineRow(r[0], r[1], r[2], None))
                i += 1
            else:
                rows.append(TimelineRow(s[0], s[1], None, s[2]))
                j += 1
        return rows


def compare(
    row: SourceRow,
    history: ModeHistory,
    outcomes: Sequence[OutcomeRow],
    config: HysteresisConfig,
    polling_interval: float,
) -> Comparison:
    """Replay ``outcomes`` through ``config`` and set it beside the record (module doc).

    The source's paths are the recorded ones: the what-if changes the policy, not the source.
    """
    if not outcomes:
        raise ValueError(f"source '{row.key}' has no recorded outcomes to replay")
    start, until = outcomes[0].at, outcomes[-1].at
    fresh = (
        history.registered_at is not None
        and outcomes[0].path == "start"
        and not any(change.at < start for change in history.changes)
    )
    replayed = [Outcome.from_row((o.at, o.path, o.ok, o.reason, o.mode)) for o in outcomes]
    mode_at_start = history.mode_at(start) or history.initial
    initial = None
    if not fresh:
        initial = Hysteresis.start(
            config, now=start, has_push=row.has_push, has_poll=row.has_poll, mode=mode_at_start
        ).state
    simulation = simulate(
        replayed,
        config,
        polling_interval=polling_interval,
        start=start,
        until=until,
        has_push=row.has_push,
        has_poll=row.has_poll,
        initial=initial,
    )
    changes = tuple(c for c in history.changes if start <= c.at <= until)
    timeline = [(start, mode_at_start), *((c.at, c.to) for c in changes)]
    recorded = RecordedRun(
        changes=changes,
        time_in_mode=_time_in_mode(timeline, until),
        polls=sum(1 for o in outcomes if o.path == "poll"),
    )
    return Comparison(
        tenant=row.tenant,
        name=row.name,
        outcomes=len(outcomes),
        start=start,
        until=until,
        fresh=fresh,
        recorded_config=row.hysteresis_config,
        config=config,
        polling_interval=polling_interval,
        recorded=recorded,
        simulated=simulation,
    )


def _time_in_mode(timeline: list[tuple[float, str]], end: float) -> dict[str, float]:
    spent = dict.fromkeys(WORKING_MODES, 0.0)
    for (at, mode), (next_at, _) in pairwise([*timeline, (end, "")]):
        if mode in spent:
            spent[mode] += max(0.0, next_at - at)
    return spent
