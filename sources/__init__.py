"""Data sources: connectors (push, poll, listing) and the engines that run them under the
hysteresis manager. Items reach the processor only through the center's durable admission."""

from eventcenter.sources.clock import FakeClock, SystemClock
from eventcenter.sources.event_engine import EventEngine
from eventcenter.sources.outcomes import AdmissionFailed, PathOutcome
from eventcenter.sources.polling_engine import PollingEngine, effective_interval
from eventcenter.sources.reconciler import Reconciler

__all__ = [
    "AdmissionFailed",
    "EventEngine",
    "FakeClock",
    "PathOutcome",
    "PollingEngine",
    "Reconciler",
    "SystemClock",
    "effective_interval",
]
