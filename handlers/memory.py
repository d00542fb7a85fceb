"""In-memory implementations of the decision log and dead-letter ports.

For library use without persistence, for benchmarks and for tests of handler logic. They keep
everything in lists for the life of the process; the center uses the event-sourced ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID, uuid4

from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.event import Event


@dataclass
class MemoryDecisionLog:
    """Keeps transitions and decisions in the order they were recorded."""

    transitions: list[Transition] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    async def record_transition(self, transition: Transition) -> None:
        self.transitions.append(transition)

    async def record_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)


@dataclass(frozen=True)
class MemoryDeadLetter:
    id: UUID
    event: Event
    subscription: str
    error: BaseException
    attempts: int


@dataclass
class MemoryDeadLetters:
    """Keeps dead letters in a list."""

    letters: list[MemoryDeadLetter] = field(default_factory=list)

    async def add(
        self, event: Event, subscription: str, error: BaseException, attempts: int
    ) -> UUID:
        letter = MemoryDeadLetter(uuid4(), event, subscription, error, attempts)
        self.letters.append(letter)
        return letter.id
