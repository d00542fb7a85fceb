"""The handler plug-in contract: a class with ``handle(event, ctx)``, or a decorated function."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from eventcenter.domain.errors import PermanentFailure
from eventcenter.domain.event import Event, invalid_event
from eventcenter.domain.priority import Priority
from eventcenter.handlers.context import Context

HandlerFunc = Callable[[Event, Context], Awaitable[None]]
EventFilter = Callable[[Event], bool]
PayloadT = TypeVar("PayloadT", bound=BaseModel)


class Handler(ABC):
    """Base class for handlers registered with ``processor.register(MyHandler())``.

    Class attributes say what it subscribes to; ``handle`` does the work. Raise
    :class:`~eventcenter.domain.errors.PermanentFailure` when retrying cannot help; any other
    exception is retried with back-off and finally dead-lettered.
    """

    patterns: ClassVar[tuple[str, ...]] = ()
    priority_min: ClassVar[Priority] = Priority.LOW
    max_in_flight: ClassVar[int | None] = None

    @property
    def name(self) -> str:
        """Subscription name; stable across restarts (dead letters are replayed to it)."""
        return type(self).__name__

    def accepts(self, event: Event) -> bool:
        """Filter hook: return False to skip an event that matches the patterns."""
        return True

    @abstractmethod
    async def handle(self, event: Event, ctx: Context) -> None: ...


def parse_payload(event: Event, model: type[PayloadT]) -> PayloadT:
    """Validate ``event.payload`` against ``model``; a bad payload is a permanent failure."""
    try:
        return model.model_validate(event.payload)
    except ValidationError as error:
        bad = invalid_event(error)
        raise PermanentFailure(
            f"{event.type} {event.id}: payload field '{bad.field}': {bad.reason}"
        ) from error
