"""Failures the center reports to whoever watches them (the RCA runner), as plain records.

A source's failures are :class:`~eventcenter.domain.sources.SourceFailure`; a handler's are
:class:`HandlerFailure`. Both carry what an analysis needs and nothing that could change under
it: strings, numbers, times (epoch seconds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HandlerFailure:
    """One failed handler attempt: the subscription, the event it was handling (type, id,
    tenant, correlation id), the error (its class name and text), the attempt number, whether
    the delivery was given up (dead-lettered) with it, and when (epoch seconds)."""

    subscription: str
    tenant: str
    event_type: str
    event_id: str
    correlation_id: str
    error_type: str
    error: str
    attempt: int
    final: bool
    at: float

    @property
    def permanent(self) -> bool:
        """Raised as :class:`~eventcenter.domain.errors.PermanentFailure` (no retry)."""
        return self.error_type == "PermanentFailure"
