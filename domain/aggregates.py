"""Event-sourced aggregates: the audit trail is their event history.

Commands are plain methods that check and raise; the ``@event`` methods record what happened
(past tense) and only mutate state. No transitions Machine is bound to an aggregate (it would
not survive snapshotting): the machine is rebuilt from :attr:`ProcessorLog.state`.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.errors import EventCenterError, ReplayRefused

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")


class ProcessorLog(Aggregate):
    """The decisions of one processor: state machine transitions and handler decisions.

    One per center (id derived from the center's name). Kept small: it holds the current state
    and counters; the decisions themselves are read from the notification log by projections.
    """

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(_NAMESPACE, f"processor/{name}")

    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "stable"
        self.transitions = 0
        self.decisions = 0

    def transition(self, change: Transition) -> None:
        """Record a state machine move; it must start from the state this log last recorded."""
        if change.source != self.state:
            raise EventCenterError(
                f"processor '{self.name}' is in state '{self.state}', not '{change.source}':"
                f" cannot record {change.trigger} -> {change.dest}"
            )
        self._transitioned(
            trigger=change.trigger,
            source=change.source,
            dest=change.dest,
            reason=change.reason,
            correlation_id=change.correlation_id,
        )

    @event("Transitioned")
    def _transitioned(
        self, trigger: str, source: str, dest: str, reason: str, correlation_id: str
    ) -> None:
        self.state = dest
        self.transitions += 1

    def decide(self, decision: Decision) -> None:
        """Record a handler's decision with its reason and the correlation id of its cause."""
        self._decided(
            kind=decision.kind,
            reason=decision.reason,
            correlation_id=decision.correlation_id,
            tenant=decision.tenant,
            details=dict(decision.details),
            cause=decision.cause,
        )

    @event("DecisionRecorded")
    def _decided(
        self,
        kind: str,
        reason: str,
        correlation_id: str,
        tenant: str,
        details: dict[str, Any],
        cause: str = "",
    ) -> None:
        self.decisions += 1


class DeadLetter(Aggregate):
    """An event that a subscription could not handle, kept with the reason until replayed.

    Replaying is claimed first (pending -> replaying), so two replays of one letter cannot both
    deliver it; the outcome then ends the replay: handled (-> replayed), or failed again, which
    makes a new letter (``replay_of`` links it back) and names it here (``failed_again_as``).
    """

    PENDING = "pending"
    REPLAYING = "replaying"
    REPLAYED = "replayed"

    @event("Recorded")
    def __init__(
        self,
        envelope: dict[str, Any],
        subscription: str,
        error_type: str,
        error: str,
        attempts: int,
        replay_of: str = "",
    ) -> None:
        self.envelope = envelope
        self.subscription = subscription
        self.error_type = error_type
        self.error = error
        self.attempts = attempts
        self.replay_of = replay_of
        self.status = self.PENDING
        self.replays = 0
        self.failed_again_as = ""

    def claim(self, reason: str) -> None:
        """Start a replay: only a pending letter can be claimed, once."""
        if self.status != self.PENDING:
            raise ReplayRefused(
                f"dead letter {self.id} is {self.status}, not pending: "
                + (
                    "another replay of it is in progress"
                    if self.status == self.REPLAYING
                    else "it was replayed already"
                    + (
                        f" (it failed again as {self.failed_again_as})"
                        if self.failed_again_as
                        else ""
                    )
                )
            )
        self._claimed(reason=reason)

    @event("ReplayClaimed")
    def _claimed(self, reason: str) -> None:
        self.status = self.REPLAYING

    def replay(self, reason: str) -> None:
        """End a replay as handled (a letter claimed earlier, or a pending one)."""
        if self.status == self.REPLAYED:
            raise ReplayRefused(f"dead letter {self.id} was already replayed")
        self._replayed(reason=reason)

    @event("Replayed")
    def _replayed(self, reason: str) -> None:
        self.status = self.REPLAYED
        self.replays += 1

    def failed_again(self, new_letter: str) -> None:
        """End a replay whose delivery failed again and became ``new_letter``."""
        if self.status == self.REPLAYED:
            raise ReplayRefused(f"dead letter {self.id} was already replayed")
        self._failed_again(new_letter=new_letter)

    @event("ReplayFailed")
    def _failed_again(self, new_letter: str) -> None:
        self.status = self.REPLAYED
        self.replays += 1
        self.failed_again_as = new_letter
