"""The decisions about one data source, as an event-sourced aggregate.

One :class:`SourceLog` per (tenant, source), its id derived from both, so every process finds
the same log. Its events are the audit trail (``ModeSwitched`` with reason and counts,
``ThresholdRaised``/``ThresholdDecayed``, ``SwitchRolledBack``, ``Reconciled``,
``Reconfigured``, ``Paused``/``Resumed``, ``TimeoutExtended``); projections read them from the
notification log. The aggregate itself keeps only what the policy needs to resume and ``sources
show`` prints: the mode, the threshold level, the cool-down, the last :data:`RECENT` switches,
an extension of the event timeout still running, and whether an operator paused the source
(see :mod:`eventcenter.domain.source_pause`). Every attribute is a
plain JSON value (no Machine bound to it), so snapshots work and loading costs the same however
long the history.

A switch is recorded when the policy decides it (the attempt counts for flapping); if its mode
could not start, ``SwitchRolledBack`` follows. A center killed in between resumes in the mode
the log holds and, if that cannot start, rolls back then.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from eventcenter.domain.errors import SourceModeRefused
from eventcenter.domain.hysteresis import (
    HysteresisConfig,
    HysteresisDecision,
    HysteresisState,
    Switch,
    ThresholdDecayed,
    ThresholdRaised,
)
from eventcenter.domain.source_modes import initial_mode, supported_modes
from eventcenter.domain.source_pause import PauseState

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")

#: How many switches the log keeps in its state (the full history is in its events).
RECENT = 20


class SourceLog(Aggregate):
    """The decisions of one source: mode switches, threshold changes, rollbacks, reconciliations.

    Commands take the policy's decision values (:meth:`record`) and refuse what does not follow
    from the state held (a switch from another mode); recording the latest decision again
    changes nothing, so a retry after an ambiguous save does not record it twice.

    The pause is a flag beside the mode, not a mode: the policy's mode stays what it was (a
    paused source resumes in it), and a decision taken on outcomes from before the pause may
    still be recorded while it is paused.
    """

    # Class-level defaults: a log recorded (or snapshotted) before pausing existed loads as
    # not paused.
    paused: bool = False
    current_pause: dict[str, Any] | None = None  # at, reason, by of the pause in effect
    # Likewise for the event timeout's extension (a log from before it was recorded has none).
    timeout_factor: float = 1.0
    extended_until: float | None = None

    @staticmethod
    def create_id(tenant: str, source: str) -> UUID:
        return uuid5(_NAMESPACE, f"source/{tenant}/{source}")

    @event("Registered")
    def __init__(
        self,
        tenant: str,
        source: str,
        at: float,
        has_push: bool,
        has_poll: bool,
        config: dict[str, Any],
    ) -> None:
        self.tenant = tenant
        self.source = source
        self.has_push = has_push
        self.has_poll = has_poll
        self.config = dict(config)
        self.mode = initial_mode(has_push, has_poll)
        self.level = 0
        self.cool_down_until: float | None = None
        self.stable_since = at
        self.changed_at = at  # time of the latest decision recorded
        self.switches = 0
        self.rollbacks = 0
        self.reconciliations = 0
        self.recent: list[dict[str, Any]] = []
        self.last_reconciled: dict[str, Any] | None = None

    @classmethod
    def register(
        cls,
        tenant: str,
        source: str,
        *,
        at: float,
        has_push: bool,
        has_poll: bool,
        config: HysteresisConfig,
    ) -> SourceLog:
        """A new log for a source with these paths and this policy configuration."""
        initial_mode(has_push, has_poll)  # refuses a source with no path before recording
        return cls(tenant, source, at, has_push, has_poll, config.as_dict())

    @property
    def name(self) -> str:
        return f"{self.tenant}/{self.source}"

    @property
    def hysteresis_config(self) -> HysteresisConfig:
        return HysteresisConfig.from_dict(self.config)

    def hysteresis_state(self, now: float) -> HysteresisState:
        """The policy's state to resume with at ``now`` (after a restart): mode, level, flap
        history, cool-down and a longer event timeout still running from the log; the streaks
        start over and silence is measured from ``now``. Times later than ``now`` (another
        clock) are brought back to ``now``."""
        config = self.hysteresis_config
        times = [min(entry["at"], now) for entry in self.recent[-config.flap_switches :]]
        cooling = self.cool_down_until
        if cooling is not None:
            cooling = min(cooling, now + config.cool_down)
        factor, until = 1.0, self.extended_until
        if until is not None and until > now:  # an extension still running goes on
            factor, until = self.timeout_factor, min(until, now + config.decay_period)
        else:
            until = None
        return HysteresisState(
            mode=self.mode,
            has_push=self.has_push,
            has_poll=self.has_poll,
            level=min(self.level, config.max_level),
            last_push_at=now,
            switch_times=tuple(times),
            cool_down_until=cooling,
            stable_since=min(self.stable_since, now),
            clock=now,
            timeout_factor=factor,
            extended_until=until,
        )

    # commands ------------------------------------------------------------------------------------

    def reconfigure(
        self, *, at: float, has_push: bool, has_poll: bool, config: HysteresisConfig
    ) -> None:
        """Record a new configuration (the source was declared again with other settings).

        Nothing is recorded when nothing changed. If the current mode needs a path the source
        no longer has, it moves to the mode its paths start in; the threshold level is kept
        within the new ceiling.
        """
        values = config.as_dict()
        if (has_push, has_poll, values) == (self.has_push, self.has_poll, self.config):
            return
        mode = self.mode
        if mode not in supported_modes(has_push, has_poll):
            mode = initial_mode(has_push, has_poll)
        self._reconfigured(
            at=at,
            has_push=has_push,
            has_poll=has_poll,
            config=values,
            mode=mode,
            level=min(self.level, config.max_level),
        )

    @event("Reconfigured")
    def _reconfigured(
        self,
        at: float,
        has_push: bool,
        has_poll: bool,
        config: dict[str, Any],
        mode: str,
        level: int,
    ) -> None:
        self.has_push = has_push
        self.has_poll = has_poll
        self.config = dict(config)
        self.mode = mode
        self.level = level
        self.changed_at = at

    def record(self, decision: HysteresisDecision) -> None:
        """Record one decision of the hysteresis policy."""
        if isinstance(decision, Switch):
            self.switch(decision)
        elif isinstance(decision, ThresholdRaised):
            self.raise_threshold(decision)
        else:
            self.decay_threshold(decision)

    def switch(self, decision: Switch) -> None:
        """Record a mode switch; it must start from the mode this log holds."""
        last = self.recent[-1] if self.recent else None
        if last and (last["at"], last["previous"], last["to"]) == (
            decision.at,
            decision.previous,
            decision.to,
        ):
            return
        if decision.previous != self.mode:
            raise SourceModeRefused(
                self.name,
                "switch",
                self.mode,
                f"cannot record a switch {decision.previous} -> {decision.to}",
            )
        self._mode_switched(
            at=decision.at,
            previous=decision.previous,
            to=decision.to,
            reason=decision.reason,
            failures=decision.failures,
            successes=decision.successes,
            threshold=decision.threshold,
            cool_down_until=decision.cool_down_until,
        )

    @event("ModeSwitched")
    def _mode_switched(
        self,
        at: float,
        previous: str,
        to: str,
        reason: str,
        failures: int,
        successes: int,
        threshold: int,
        cool_down_until: float | None,
    ) -> None:
        self.mode = to
        self.cool_down_until = cool_down_until
        self.stable_since = self.changed_at = at
        self.switches += 1
        entry = {"at": at, "previous": previous, "to": to, "reason": reason}
        self.recent = [*self.recent[-(RECENT - 1) :], entry]

    def raise_threshold(self, decision: ThresholdRaised) -> None:
        """Record that flapping raised the thresholds one step."""
        if (decision.level, decision.at) == (self.level, self.changed_at):
            return
        self._check_level(decision.level, self.level + 1, "raise_threshold")
        self._threshold_raised(
            at=decision.at,
            level=decision.level,
            failure_threshold=decision.failure_threshold,
            success_threshold=decision.success_threshold,
            reason=decision.reason,
        )

    @event("ThresholdRaised")
    def _threshold_raised(
        self, at: float, level: int, failure_threshold: int, success_threshold: int, reason: str
    ) -> None:
        self.level = level
        self.changed_at = at

    def decay_threshold(self, decision: ThresholdDecayed) -> None:
        """Record that a quiet period brought the thresholds down one step."""
        if (decision.level, decision.at) == (self.level, self.changed_at):
            return
        self._check_level(decision.level, self.level - 1, "decay_threshold")
        self._threshold_decayed(
            at=decision.at,
            level=decision.level,
            failure_threshold=decision.failure_threshold,
            success_threshold=decision.success_threshold,
            reason=decision.reason,
        )

    @event("ThresholdDecayed")
    def _threshold_decayed(
        self, at: float, level: int, failure_threshold: int, success_threshold: int, reason: str
    ) -> None:
        self.level = level
        self.stable_since = self.changed_at = at

    def roll_back(self, *, at: float, attempted: str, landed: str, reason: str) -> None:
        """Record that the switch to ``attempted`` could not start; the source is in ``landed``."""
        if self.mode != attempted:
            raise SourceModeRefused(
                self.name,
                "roll_back",
                self.mode,
                f"the last switch recorded did not go to {attempted}",
            )
        if landed not in supported_modes(self.has_push, self.has_poll):
            raise SourceModeRefused(
                self.name, "roll_back", self.mode, f"the source cannot run in {landed}"
            )
        self._rolled_back(at=at, attempted=attempted, to=landed, reason=reason)

    @event("SwitchRolledBack")
    def _rolled_back(self, at: float, attempted: str, to: str, reason: str) -> None:
        self.mode = to
        self.rollbacks += 1
        self.changed_at = at

    def reconciled(self, *, at: float, missing: int, changed: int, deleted: int) -> None:
        """Record a reconciliation: how many items were missing, changed and deleted (each
        corrected by an event of its own)."""
        self._reconciled(at=at, missing=missing, changed=changed, deleted=deleted)

    @event("Reconciled")
    def _reconciled(self, at: float, missing: int, changed: int, deleted: int) -> None:
        self.reconciliations += 1
        self.last_reconciled = {
            "at": at,
            "missing": missing,
            "changed": changed,
            "deleted": deleted,
        }

    def extend_timeout(self, *, at: float, factor: float, until: float, reason: str) -> None:
        """Record that the push path's event timeout is ``factor`` times the configured one
        until ``until`` (a healing strategy restarted the stream with a longer timeout), so a
        restarted center resumes with it. Recording the extension held again changes nothing."""
        if factor <= 0 or until < at:
            raise ValueError(f"an extension needs a positive factor and an end after {at}")
        if (factor, until) == (self.timeout_factor, self.extended_until):
            return
        self._timeout_extended(at=at, factor=factor, until=until, reason=reason)

    @event("TimeoutExtended")
    def _timeout_extended(self, at: float, factor: float, until: float, reason: str) -> None:
        self.timeout_factor = factor
        self.extended_until = until

    @property
    def pause_state(self) -> PauseState | None:
        """The pause in effect (None: not paused)."""
        held = self.current_pause
        if not self.paused or held is None:
            return None
        return PauseState(held["at"], held["reason"], held["by"])

    def pause(self, *, at: float, reason: str, by: str) -> bool:
        """Record that ``by`` paused the source for ``reason``; False (nothing recorded) if it
        is paused already. Validate the request first (``PauseRequest``)."""
        if self.paused:
            return False
        self._paused(at=at, reason=reason, by=by)
        return True

    @event("Paused")
    def _paused(self, at: float, reason: str, by: str) -> None:
        self.paused = True
        self.current_pause = {"at": at, "reason": reason, "by": by}

    def resume(self, *, at: float, reason: str, by: str) -> bool:
        """Record that ``by`` resumed the source; False (nothing recorded) if it is not
        paused."""
        if not self.paused:
            return False
        self._resumed(at=at, reason=reason, by=by)
        return True

    @event("Resumed")
    def _resumed(self, at: float, reason: str, by: str) -> None:
        self.paused = False
        self.current_pause = None

    def _check_level(self, level: int, expected: int, trigger: str) -> None:
        if level != expected:
            raise SourceModeRefused(
                self.name,
                trigger,
                self.mode,
                f"the log holds threshold level {self.level}, so the next level is {expected},"
                f" not {level}",
            )
