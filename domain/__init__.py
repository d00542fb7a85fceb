"""The pure model: envelope, priorities, state machine, aggregates, errors and ports.

No I/O, no asyncio, no database: everything here is tested without sleeping or connecting.
"""

from eventcenter.domain.aggregates import DeadLetter, ProcessorLog
from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.errors import (
    Backpressure,
    ConfigurationError,
    DeadLetterNotFound,
    EventCenterError,
    InvalidBatch,
    InvalidEvent,
    InvalidPattern,
    PermanentFailure,
    ProcessorClosed,
    RecordingFailed,
    SubscriptionError,
    TransitionRefused,
)
from eventcenter.domain.event import EnvelopeLimits, Event, parse_json, parse_json_batch
from eventcenter.domain.fsm import ProcessorStateMachine
from eventcenter.domain.priority import Priority

__all__ = [
    "Backpressure",
    "ConfigurationError",
    "DeadLetter",
    "DeadLetterNotFound",
    "Decision",
    "EnvelopeLimits",
    "Event",
    "EventCenterError",
    "InvalidBatch",
    "InvalidEvent",
    "InvalidPattern",
    "PermanentFailure",
    "Priority",
    "ProcessorClosed",
    "ProcessorLog",
    "ProcessorStateMachine",
    "RecordingFailed",
    "SubscriptionError",
    "Transition",
    "TransitionRefused",
    "parse_json",
    "parse_json_batch",
]
