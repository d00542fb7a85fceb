"""Log records of a running eventcenter process: one configuration, made once at its start.

The library code (processor, sources, healing, storage) logs with the standard ``logging``
module and knows nothing of formats; a program that embeds the center configures logging as it
likes. The ``eventcenter`` commands that run a process call :func:`configure_logging` once,
which sends every record (the center's, uvicorn's, the user's handlers', through ``logging``
or through ``structlog``) to stderr in one of two formats:

- ``json``: one JSON object per line, ``{"timestamp": "2026-01-02T03:04:05.678Z", "level":
  "warning", "logger": "eventcenter.processor", "message": "...", ...}`` followed by what is
  known of the work in progress: ``tenant``, ``source``, ``event_id``, ``event_type``,
  ``correlation_id``, ``subscription`` and ``attempt`` inside a handler's delivery; ``tenant``,
  ``source`` and ``path`` in a data source's engines; ``tenant``, ``source``, ``case_id``,
  ``category`` and ``correlation_id`` in the RCA runner; plus any ``extra=`` fields of the call
  and anything bound with ``structlog.contextvars``. An exception is one field, ``exception``
  (the traceback as one string), so a record is always one line. The message is called
  ``message``, not structlog's ``event``, which would read as one of the center's events.
- ``console``: the same fields for a person, one record per line with the fields after the
  message (structlog's console renderer; in colour on a terminal unless ``NO_COLOR`` is set).

``auto`` (the default) picks ``console`` when stderr is a terminal and ``json`` otherwise: a
service's stderr that is not a terminal is read by a collector (journald, Docker, Kubernetes),
which wants one record per line with named fields.

Where the fields come from: the processor sets
:data:`~eventcenter.handlers.delivery.current_delivery` around each handler attempt, each data
source's tasks run with :data:`~eventcenter.sources.lifecycle.current_source` set and the RCA
runner sets :data:`~eventcenter.healing.rca.current_case`; :func:`add_work_context` reads the
most specific one when a record is formatted. These are context variables, so records from
code the handler calls (the user's own, libraries) carry the fields too, and concurrent
deliveries never mix them up.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from eventcenter.handlers.delivery import current_delivery
from eventcenter.healing.rca import current_case
from eventcenter.sources.lifecycle import current_source

__all__ = [
    "LogFormat",
    "LogLevel",
    "add_work_context",
    "configure_logging",
    "log_formatter",
    "resolve_format",
]

#: The environment variables the commands read when the options are not given.
FORMAT_ENV = "EVENTCENTER_LOG_FORMAT"
LEVEL_ENV = "EVENTCENTER_LOG_LEVEL"


class LogFormat(StrEnum):
    """How records are written: see the module docstring."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    """The least severe level written."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


#: The keys written first, in this order; the others follow as they were added.
_FIRST = ("timestamp", "level", "logger", "message")

#: Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

#: ``extra=`` fields that repeat the message for another renderer (uvicorn's coloured copy).
_NOISE = frozenset({"color_message"})

#: The fields that say what was being worked on (left out when empty).
_CONTEXT_KEYS = ("tenant", "source", "event_id", "event_type", "correlation_id", "subscription")

#: Libraries that log every request at INFO: shown from WARNING unless the level is DEBUG.
_CHATTY = ("httpx", "httpcore", "urllib3")


def resolve_format(chosen: LogFormat | str, stream: TextIO | None = None) -> LogFormat:
    """``json`` or ``console``: ``auto`` becomes ``console`` on a terminal, else ``json``."""
    chosen = LogFormat(chosen)
    if chosen is not LogFormat.AUTO:
        return chosen
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return LogFormat.CONSOLE if isatty is not None and isatty() else LogFormat.JSON


def add_work_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the fields of the delivery, RCA case or data source the current task works on.

    The most specific one wins (a delivery, then a case, then a source); fields the call gave
    itself (``extra=``, structlog keyword arguments) are kept as they are.
    """
    delivery = current_delivery.get()
    fields: MutableMapping[str, Any] | None = None
    if delivery is not None:
        fields = delivery.log_fields()
    else:
        work = current_case.get() or current_source.get()
        if work is not None:
            fields = dict(work)
    if fields:
        for key, value in fields.items():
            if value not in ("", None):
                event_dict.setdefault(key, value)
    return event_dict


def _add_extras(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The ``extra=`` fields of a stdlib record (the processor's event ids, a source's path)."""
    record = event_dict.get("_record")
    if record is not None:
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in _NOISE and not key.startswith("_"):
                event_dict.setdefault(key, value)
    return event_dict


def _timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """ISO 8601 in UTC with milliseconds, from the record's own creation time when there is
    one (so a record is stamped when it was made, not when it was written)."""
    record = event_dict.get("_record")
    created = record.created if record is not None else datetime.now(UTC).timestamp()
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    event_dict["timestamp"] = stamp.replace("+00:00", "Z")
    return event_dict


def _empty_fields_dropped(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """An event without a correlation id has ``""``: say nothing rather than an empty field."""
    for key in _CONTEXT_KEYS:
        if event_dict.get(key, None) == "":
            del event_dict[key]
    return event_dict


def _ordered(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    first = {key: event_dict.pop(key) for key in _FIRST if key in event_dict}
    return {**first, **event_dict}


def _dumps(value: Any, **_: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


#: Run on every record, from ``logging`` or from ``structlog``, before it is rendered.
_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    add_work_context,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    _timestamp,
]


def log_formatter(chosen: LogFormat | str, *, colors: bool = False) -> logging.Formatter:
    """The formatter of ``json`` or ``console`` records (``auto`` must be resolved first)."""
    chosen = LogFormat(chosen)
    if chosen is LogFormat.AUTO:
        raise ValueError("resolve 'auto' with resolve_format() first")
    final: list[Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        _empty_fields_dropped,
        structlog.processors.StackInfoRenderer(),
    ]
    if chosen is LogFormat.JSON:
        final += [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            _ordered,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        final.append(
            structlog.dev.ConsoleRenderer(
                colors=colors, exception_formatter=structlog.dev.plain_traceback
            )
        )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED[:2], _add_extras, *_SHARED[2:]],
        processors=final,
    )


def configure_logging(
    chosen: LogFormat | str = LogFormat.AUTO,
    level: LogLevel | str = LogLevel.INFO,
    *,
    stream: TextIO | None = None,
) -> LogFormat:
    """Send every log record of this process to ``stream`` (stderr) in one format.

    Replaces the root logger's handlers, sets its level, and routes ``structlog`` loggers
    through the same formatter. Call it once, at the start of a process (the commands do);
    returns the format chosen (``auto`` resolved).
    """
    stream = stream if stream is not None else sys.stderr
    resolved = resolve_format(chosen, stream)
    numeric = logging.getLevelName(LogLevel(level).value.upper())
    colors = (
        resolved is LogFormat.CONSOLE
        and "NO_COLOR" not in os.environ
        and resolve_format(LogFormat.AUTO, stream) is LogFormat.CONSOLE  # a terminal
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_formatter(resolved, colors=colors))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return resolved
