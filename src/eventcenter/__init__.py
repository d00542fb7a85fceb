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
    "BreakerConfig": "eventcenter.domain.breaker",
    "BreakerRegistry": "eventcenter.healing.breaker",
    "CallNotPermitted": "eventcenter.domain.errors",
    "CallTimedOut": "eventcenter.domain.errors",
    "CenterSettings": "eventcenter.center.settings",
    "CircuitBreaker": "eventcenter.healing.breaker",
    "Context": "eventcenter.handlers.context",
    "DataSource": "eventcenter.sources.source",
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
    "SourceError": "eventcenter.domain.sources",
    "SourceItem": "eventcenter.domain.sources",
    "TransitionRefused": "eventcenter.domain.errors",
    "WebhookPath": "eventcenter.sources.webhook",
    "callable_poll": "eventcenter.sources.connectors",
    "http_list": "eventcenter.sources.connectors",
    "http_poll": "eventcenter.sources.connectors",
    "iterator_path": "eventcenter.sources.connectors",
    "nats_jetstream": "eventcenter.sources.connectors",
    "pg_notify": "eventcenter.sources.connectors",
    "redis_stream": "eventcenter.sources.connectors",
}

__all__ = [
    "Backpressure",
    "BreakerConfig",
    "BreakerRegistry",
    "CallNotPermitted",
    "CallTimedOut",
    "CenterSettings",
    "CircuitBreaker",
    "Context",
    "DataSource",
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
    "SourceError",
    "SourceItem",
    "TransitionRefused",
    "WebhookPath",
    "__version__",
    "callable_poll",
    "http_list",
    "http_poll",
    "iterator_path",
    "nats_jetstream",
    "pg_notify",
    "redis_stream",
]

if TYPE_CHECKING:
    from eventcenter.center.app import EventCenter
    from eventcenter.center.settings import CenterSettings
    from eventcenter.domain.breaker import BreakerConfig
    from eventcenter.domain.decisions import Decision
    from eventcenter.domain.errors import (
        Backpressure,
        CallNotPermitted,
        CallTimedOut,
        EventCenterError,
        InvalidBatch,
        InvalidEvent,
        PermanentFailure,
        ProcessorClosed,
        TransitionRefused,
    )
    from eventcenter.domain.event import EnvelopeLimits, Event
    from eventcenter.domain.priority import Priority
    from eventcenter.domain.sources import SourceError, SourceItem
    from eventcenter.handlers.base import Handler
    from eventcenter.handlers.context import Context
    from eventcenter.handlers.processor import EventProcessor
    from eventcenter.healing.breaker import BreakerRegistry, CircuitBreaker
    from eventcenter.sources.connectors import (
        callable_poll,
        http_list,
        http_poll,
        iterator_path,
        nats_jetstream,
        pg_notify,
        redis_stream,
    )
    from eventcenter.sources.source import DataSource
    from eventcenter.sources.webhook import WebhookPath


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
