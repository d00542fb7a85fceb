"""The moves of one circuit breaker, as an event-sourced aggregate.

One :class:`BreakerLog` per (center, breaker name), its id derived from both, so a restarted
center finds the log of each of its breakers (and two centers sharing a store keep their own:
a breaker's state is the view of the process that makes the calls). Its events are the audit
trail: ``Opened`` (reason, failure and slow-call rates, calls, wait, openings in a row),
``HalfOpened``, ``Closed`` (the trial's figures), ``ForcedOpen``, ``Disabled``, ``Reset``.

The aggregate keeps what a restart needs (:meth:`BreakerLog.saved`): the state, when the wait
in open ends as WALL-CLOCK time (epoch seconds: monotonic time starts over with the process),
and the openings in a row, so a breaker that keeps failing keeps waiting longer. Every
attribute is a plain JSON value, so snapshots work.

A transition is recorded as the breaker made it; the log refuses one that is not a move of the
breaker's table (:data:`~eventcenter.domain.breaker.TRANSITIONS`) or does not start from the
state it holds, and recording the latest transition again changes nothing (a retry after an
ambiguous save records it once).
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from eventcenter.domain.breaker import (
    CLOSED,
    DISABLED,
    FORCED_OPEN,
    HALF_OPEN,
    OPEN,
    BreakerState,
    BreakerTransition,
    next_state,
)
from eventcenter.domain.errors import BreakerRefused

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")


class BreakerLog(Aggregate):
    """The recorded moves of one breaker; see the module docstring."""

    @staticmethod
    def create_id(center: str, name: str) -> UUID:
        return uuid5(_NAMESPACE, f"breaker/{center}/{name}")

    @event("Registered")
    def __init__(self, center: str, name: str, at: float) -> None:
        self.center = center
        self.name = name
        self.state = CLOSED
        self.open_until: float | None = None
        self.reopens = 0
        self.opened = 0  # times opened, in all
        self.changed_at = at
        self.last: dict[str, Any] | None = None  # the latest transition recorded

    @classmethod
    def register(cls, center: str, name: str, *, at: float) -> BreakerLog:
        """A new log for breaker ``name`` of center ``center``, closed."""
        if not name:
            raise BreakerRefused(name, "register", CLOSED, "a breaker needs a name")
        return cls(center, name, at)

    def saved(self) -> BreakerState:
        """What the breaker resumes from after a restart."""
        return BreakerState(self.name, self.state, self.open_until, self.reopens)

    def record(self, transition: BreakerTransition) -> None:
        """Record one move of the breaker (see the module docstring for what is refused)."""
        if transition.name != self.name:
            raise BreakerRefused(
                self.name,
                transition.trigger,
                self.state,
                f"a transition of breaker '{transition.name}' does not belong in this log",
            )
        key = _key(transition)
        if key == self.last:
            return
        if transition.previous != self.state:
            raise BreakerRefused(
                self.name,
                transition.trigger,
                self.state,
                f"the log holds {self.state}, so it cannot record a move from"
                f" {transition.previous}",
            )
        dest = next_state(self.name, transition.trigger, transition.previous)
        if dest != transition.state:
            raise BreakerRefused(
                self.name,
                transition.trigger,
                self.state,
                f"'{transition.trigger}' leads to {dest}, not {transition.state}",
            )
        at, previous, reason = transition.at, transition.previous, transition.reason
        if transition.trigger == "reset":
            self._reset(at, previous, reason)
        elif dest == OPEN:
            if transition.wait is None:
                raise BreakerRefused(
                    self.name, transition.trigger, self.state, "an opening needs its wait"
                )
            self._opened(
                at,
                previous,
                reason,
                failure_rate=transition.failure_rate,
                slow_rate=transition.slow_rate,
                calls=transition.calls,
                wait=transition.wait,
                reopens=transition.reopens,
            )
        elif dest == HALF_OPEN:
            self._half_opened(at, previous, reason)
        elif dest == CLOSED:
            self._closed(
                at,
                previous,
                reason,
                failure_rate=transition.failure_rate,
                slow_rate=transition.slow_rate,
                calls=transition.calls,
            )
        elif dest == FORCED_OPEN:
            self._forced_open(at, previous, reason)
        elif dest == DISABLED:
            self._disabled(at, previous, reason)

    @event("Opened")
    def _opened(
        self,
        at: float,
        previous: str,
        reason: str,
        failure_rate: float | None,
        slow_rate: float | None,
        calls: int | None,
        wait: float,
        reopens: int,
    ) -> None:
        self._moved(at, previous, OPEN, "trip")
        self.open_until = at + wait
        self.reopens = reopens
        self.opened += 1

    @event("HalfOpened")
    def _half_opened(self, at: float, previous: str, reason: str) -> None:
        self._moved(at, previous, HALF_OPEN, "probe")

    @event("Closed")
    def _closed(
        self,
        at: float,
        previous: str,
        reason: str,
        failure_rate: float | None,
        slow_rate: float | None,
        calls: int | None,
    ) -> None:
        self._moved(at, previous, CLOSED, "close")
        self.reopens = 0

    @event("ForcedOpen")
    def _forced_open(self, at: float, previous: str, reason: str) -> None:
        self._moved(at, previous, FORCED_OPEN, "force_open")

    @event("Disabled")
    def _disabled(self, at: float, previous: str, reason: str) -> None:
        self._moved(at, previous, DISABLED, "disable")
        self.reopens = 0

    @event("Reset")
    def _reset(self, at: float, previous: str, reason: str) -> None:
        self._moved(at, previous, CLOSED, "reset")
        self.reopens = 0

    def _moved(self, at: float, previous: str, state: str, trigger: str) -> None:
        self.state = state
        self.changed_at = at
        self.open_until = None
        self.last = {"at": at, "trigger": trigger, "previous": previous, "state": state}


def _key(transition: BreakerTransition) -> dict[str, Any]:
    return {
        "at": transition.at,
        "trigger": transition.trigger,
        "previous": transition.previous,
        "state": transition.state,
    }
