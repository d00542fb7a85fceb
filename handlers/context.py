"""What a handler receives besides the event: the center's collaborators, as protocols."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventcenter.domain.decisions import Decision
from eventcenter.domain.event import Event
from eventcenter.domain.ports import DecisionLog, PressureTester, Publisher
from eventcenter.handlers.state import StateGuard


@dataclass(frozen=True)
class Context:
    """Shared by all handlers of one processor. Tests build one from in-memory parts.

    - ``state``: the processor state machine (fire triggers, hold exclusive work)
    - ``decisions``: make a decision durable (``await ctx.decide(...)`` is the short form)
    - ``publish``: publish a follow-up event
    - ``clock``: monotonic seconds
    - ``pressure``: the load tester, when one is configured
    - ``services``: further collaborators wired by the composition root, by name
    """

    state: StateGuard
    decisions: DecisionLog
    publish: Publisher
    clock: Callable[[], float]
    pressure: PressureTester | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("eventcenter.handlers"))
    services: dict[str, Any] = field(default_factory=dict)

    async def decide(self, kind: str, reason: str, cause: Event, **details: Any) -> Decision:
        """Record a decision caused by ``cause`` (its correlation id and tenant are carried)."""
        decision = Decision(
            kind=kind,
            reason=reason,
            correlation_id=cause.correlation_id,
            tenant=cause.tenant,
            details=details,
        )
        await self.decisions.record_decision(decision)
        return decision
