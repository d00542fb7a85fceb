"""eventcenter: an event-sourced processing center with state-machine-guarded handlers.

The public names are loaded lazily: importing ``eventcenter`` costs nothing until a name is used,
and no layer ever imports this module (it would pull in the composition root).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Backpressure": "eventcenter.domain.errors",
    "CenterSettings": "eventcenter.center.settings",
    "Context": "eventcenter.handlers.context",
    "Decision": "eventcenter.domain.decisions",
    "EnvelopeLimits": "eventcenter.domain.event",
    "Event": "eventcenter.domain.event",
    "EventCenter": "eventcenter.center.app",
    "EventCenterError": "eventcenter.domain.errors",
    "EventProcessor": "eventcenter.handlers.processor",
    "Handler": "eventcenter.handlers.base",
    "InvalidBatch": "eventcenter.domain.errors",
    "InvalidEvent": "eventcenter.domain.errors",
    "PermanentFailure": "eventcenter.domain.errors",
    "Priority": "eventcenter.domain.priority",
    "ProcessorClosed": "eventcenter.domain.errors",
    "TransitionRefused": "eventcenter.domain.errors",
}

__all__ = [
    "Backpressure",
    "CenterSettings",
    "Context",
    "Decision",
    "EnvelopeLimits",
    "Event",
    "EventCenter",
    "EventCenterError",
    "EventProcessor",
    "Handler",
    "InvalidBatch",
    "InvalidEvent",
    "PermanentFailure",
    "Priority",
    "ProcessorClosed",
    "TransitionRefused",
    "__version__",
]

if TYPE_CHECKING:
    from eventcenter.center.app import EventCenter
    from eventcenter.center.settings import CenterSettings
    from eventcenter.domain.decisions import Decision
    from eventcenter.domain.errors import (
        Backpressure,
        EventCenterError,
        InvalidBatch,
        InvalidEvent,
        PermanentFailure,
        ProcessorClosed,
        TransitionRefused,
    )
    from eventcenter.domain.event import EnvelopeLimits, Event
    from eventcenter.domain.priority import Priority
    from eventcenter.handlers.base import Handler
    from eventcenter.handlers.context import Context
    from eventcenter.handlers.processor import EventProcessor


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'eventcenter' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
