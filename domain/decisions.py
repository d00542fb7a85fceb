"""Decisions: what the center decided and why, recorded as events of the processor log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Transition:
    """One move of the processor state machine, with the cause that asked for it."""

    trigger: str
    source: str
    dest: str
    reason: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Decision:
    """A handler's decision (e.g. "reduce request frequency"), with its reason and cause.

    ``kind`` is a short dot-notation name (``frequency.reduce``); ``details`` plain JSON values.
    ``cause`` identifies what caused it (event id, subscription, kind and ordinal, set by the
    processor for decisions taken inside a handler): the store records one decision per cause,
    so a redelivery after a crash or a retry after an ambiguous commit does not record it twice.
    """

    kind: str
    reason: str
    correlation_id: str
    tenant: str = "default"
    details: dict[str, Any] = field(default_factory=dict)
    cause: str = ""


def frequency_factor(observed_ms: float, threshold_ms: float, floor: float = 0.25) -> float:
    """Factor to multiply request frequency by when latency exceeds its threshold.

    Proportional to how far over the threshold we are (threshold/observed), never below
    ``floor`` so one wild sample cannot throttle a service to nothing. 1.0 means "no change".
    """
    if threshold_ms <= 0:
        raise ValueError(f"threshold_ms must be positive, got {threshold_ms}")
    if observed_ms <= threshold_ms:
        return 1.0
    return max(floor, round(threshold_ms / observed_ms, 3))
