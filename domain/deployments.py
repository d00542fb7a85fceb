"""Which deployment signature of a service runs, and which ran before it.

The capacity regression gate compares a new signature with *the previous signature of the same
service*; which one that is depends on the order of deployments (a rollback to an older image
makes the one it replaced the previous), not on the signatures themselves. One
:class:`ServiceDeployments` per service keeps that order as ``Deployed`` events, each with the
correlation id of the deployment event that reported it. A signature reported again while it
is the current one changes nothing (a redelivered event, a restart re-reading it).
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from eventcenter.domain.errors import ThroughputRefused

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")

#: How many deployments the aggregate keeps in its state (the full history is in its events).
RECENT = 20


class ServiceDeployments(Aggregate):
    """The deployments of one service, in the order they were reported."""

    @staticmethod
    def create_id(service: str) -> UUID:
        return uuid5(_NAMESPACE, f"deployments/{service}")

    @event("Registered")
    def __init__(self, service: str, at: float) -> None:
        self.service = service
        self.current: str | None = None
        self.previous: str | None = None
        self.deployments = 0
        self.recent: list[dict[str, Any]] = []

    @classmethod
    def register(cls, service: str, *, at: float) -> ServiceDeployments:
        if not service:
            raise ThroughputRefused("?", "register", "a service needs a name")
        return cls(service, at)

    def deployed(self, signature: str, *, at: float, correlation_id: str) -> None:
        """Record that ``signature`` now runs; the one running until now becomes previous."""
        if not signature:
            raise ThroughputRefused(self.service, "deployed", "the signature is empty")
        if signature == self.current:
            return
        self._deployed(signature=signature, at=at, correlation_id=correlation_id)

    @event("Deployed")
    def _deployed(self, signature: str, at: float, correlation_id: str) -> None:
        self.previous = self.current
        self.current = signature
        self.deployments += 1
        entry = {"signature": signature, "at": at, "correlation_id": correlation_id}
        self.recent = [*self.recent[-(RECENT - 1) :], entry]
