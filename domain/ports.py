"""Protocols the outer layers implement; handlers and engines depend on these, not on classes."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.event import Event


class DecisionLog(Protocol):
    """Makes transitions and decisions durable. Each call returns once the record is saved."""

    async def record_transition(self, transition: Transition) -> None: ...

    async def record_decision(self, decision: Decision) -> None: ...


class DeadLetterStore(Protocol):
    """Keeps events a subscription could not handle, with the reason; returns the letter's id."""

    async def add(
        self, event: Event, subscription: str, error: BaseException, attempts: int
    ) -> UUID: ...


class PressureTester(Protocol):
    """Measures a target's maximum sustainable throughput (requests/s). Completed by pressure/."""

    async def measure(self, target: str, signature: str) -> float: ...


class Publisher(Protocol):
    """Publishes follow-up events from inside a handler."""

    async def __call__(
        self, type: str, payload: dict[str, Any] | None = None, **fields: Any
    ) -> str: ...
