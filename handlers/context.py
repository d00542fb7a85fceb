"""What a handler receives besides the event: the center's collaborators, as protocols."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventcenter.domain.decisions import Decision
from eventcenter.domain.errors import RecordingFailed
from eventcenter.domain.event import Event
from eventcenter.domain.ports import DecisionLog, Publisher
from eventcenter.handlers.state import StateGuard


class CauseScope:
    """The delivery a handler is running, so its decisions carry a stable cause.

    The n-th decision of a kind taken while handling event E for subscription S has the cause
    ``E/S/kind/n``: running the same delivery again (a redelivery after a crash, a retry) gives
    the same causes, and the store records each once.
    """

    __slots__ = ("counts", "event_id", "pending", "subscription")

    def __init__(self, event_id: str, subscription: str) -> None:
        self.event_id = event_id
        self.subscription = subscription
        self.counts: dict[str, int] = {}
        self.pending: list[Decision] = []  # committed with the end of the attempt

    def cause(self, kind: str) -> str:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        return f"{self.event_id}/{self.subscription}/{kind}/{n}"


#: Set by the processor around each handler attempt (durable mode).
current_scope: ContextVar[CauseScope | None] = ContextVar("eventcenter_scope", default=None)


@dataclass(frozen=True)
class Context:
    """Shared by all handlers of one processor. Tests build one from in-memory parts.

    - ``state``: the processor state machine (fire triggers, hold exclusive work)
    - ``decisions``: make a decision durable (``await ctx.decide(...)`` is the short form)
    - ``publish``: publish a follow-up event
    - ``clock``: monotonic seconds
    - ``services``: further collaborators wired by the composition root, by name (the
      center's ``tuning`` workflow among them)
    """

    state: StateGuard
    decisions: DecisionLog
    publish: Publisher
    clock: Callable[[], float]
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("eventcenter.handlers"))
    services: dict[str, Any] = field(default_factory=dict)

    async def decide(self, kind: str, reason: str, cause: Event, **details: Any) -> Decision:
        """Record a decision caused by ``cause`` (its correlation id and tenant are carried).

        Inside a handler of a center with a store, a decision caused by the event being handled
        is committed in the same transaction that ends the attempt (handled, retried or
        dead-lettered): a delivery's decisions and its outcome are stored together or not at
        all, and the call returns at once. Running the same delivery again records each of its
        decisions once (its n-th decision of a kind has the same cause). Elsewhere the call
        returns once the decision is stored.
        """
        try:
            orjson.dumps(details)
        except TypeError as error:  # refused now, in the handler, not later by the store
            raise RecordingFailed(
                f"the store cannot keep decision '{kind}': its details are not JSON ({error})"
            ) from None
        scope = current_scope.get()
        own = scope is not None and scope.event_id == str(cause.id)
        decision = Decision(
            kind=kind,
            reason=reason,
            correlation_id=cause.correlation_id,
            tenant=cause.tenant,
            details=details,
            cause=scope.cause(kind) if own and scope is not None else "",
        )
        if own and scope is not None:
            scope.pending.append(decision)
            return decision
        await self.decisions.record_decision(decision)
        return decision
