"""The EventProcessor, the handler contract and the built-in handlers."""

from eventcenter.handlers.base import Handler, parse_payload
from eventcenter.handlers.config import ProcessorSettings
from eventcenter.handlers.context import Context
from eventcenter.handlers.processor import EventProcessor, ShutdownReport

__all__ = [
    "Context",
    "EventProcessor",
    "Handler",
    "ProcessorSettings",
    "ShutdownReport",
    "parse_payload",
]
