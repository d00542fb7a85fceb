"""What a deployment can take: one event-sourced record per (service, deployment signature).

A deployment signature (an image digest, a version) names the code that runs; its capacity is
measured once and reused until something says it no longer holds. :class:`ThroughputRecorder`
keeps, per signature, the latest :class:`Measurement` (``Measured``: maximum sustainable
throughput, p50/p95/p99, error rate, the curve, how long the test took and the tester's
settings), a flag when it must be measured again (``FlaggedForRetest``: a latency spike, an
operator), and a capacity regression against the signature deployed before
(``CapacityRegressed``). Its id derives from service and signature, so every process finds the
same record; every attribute is a plain JSON value, so snapshots work.

The workflow asks two things of it: is there a usable record (:meth:`ThroughputRecorder.
has_usable_record`: measured, not flagged, not too old, and a figure to tune with), or why it
needs a test (:meth:`~ThroughputRecorder.retest_reason`). Recording the same decision twice
changes nothing, so a retry after an ambiguous save does not record it twice.

The regression gate (:func:`capacity_regression`) compares bounds, not just figures: a
measurement that only bounds the capacity from below (the generator was the limit, or no knee
was reached) can show that a previous signature was faster than the new one only when the new
one is a real capacity (or below range); a new lower bound never proves a regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event
from pydantic import BaseModel, ConfigDict, Field

from eventcenter.domain.errors import ThroughputRefused
from eventcenter.domain.knee import Knee, Step

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One load test's answer as recorded: the knee's figures (see :class:`~eventcenter.
    domain.knee.Knee`), the measured curve (one plain dict per step), the test's duration in
    seconds and the tester's settings (plain JSON: the plan, the rule, the generator)."""

    max_rps: float
    verdict: str
    lower: float
    upper: float | None
    p50: float
    p95: float
    p99: float
    error_rate: float
    duration: float
    curve: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_knee(
        cls, knee: Knee, steps: list[Step], *, duration: float, settings: dict[str, Any]
    ) -> Measurement:
        return cls(
            max_rps=knee.max_rps,
            verdict=knee.verdict,
            lower=knee.lower,
            upper=knee.upper,
            p50=knee.p50,
            p95=knee.p95,
            p99=knee.p99,
            error_rate=knee.error_rate,
            duration=duration,
            curve=[step.as_dict() for step in steps],
            settings=dict(settings),
        )

    @property
    def usable(self) -> bool:
        """A figure to tune with: a capacity or a lower bound (not "below the lowest rate")."""
        return self.verdict != "below_range"

    @property
    def at_least(self) -> float:
        """The capacity is at least this (0 when the test only bounds it from above)."""
        return 0.0 if self.verdict == "below_range" else self.max_rps

    @property
    def at_most(self) -> float:
        """The capacity as high as it can be said to be: the figure for a capacity, the lowest
        rate tried for below range, infinite for a lower bound."""
        if self.verdict == "capacity":
            return self.max_rps
        if self.verdict == "below_range" and self.upper is not None:
            return self.upper
        return math.inf

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_rps": self.max_rps,
            "verdict": self.verdict,
            "lower": self.lower,
            "upper": self.upper,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "error_rate": self.error_rate,
            "duration": self.duration,
            "curve": [dict(step) for step in self.curve],
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Measurement:
        return cls(**values)


class RegressionGate(BaseModel):
    """How far a new signature's capacity may fall below the previous one's unflagged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_drop: float = Field(
        0.2, gt=0, lt=1, description="share below the previous capacity that is a regression"
    )


@dataclass(frozen=True, slots=True)
class CapacityRegression:
    """The record of a regression: both signatures, both figures, the drop and the gate."""

    service: str
    signature: str
    previous_signature: str
    max_rps: float
    previous_rps: float
    drop: float
    max_drop: float
    verdict: str = "capacity"

    @property
    def reason(self) -> str:
        sustains = "sustains" if self.verdict == "capacity" else "sustains less than"
        return (
            f"{self.service} {self.signature} {sustains} {self.max_rps:.4g} req/s,"
            f" {self.drop:.0%} below {self.previous_signature} ({self.previous_rps:.4g} req/s);"
            f" the gate allows {self.max_drop:.0%}"
        )


def capacity_regression(
    gate: RegressionGate,
    *,
    service: str,
    previous_signature: str,
    previous: Measurement,
    signature: str,
    new: Measurement,
) -> CapacityRegression | None:
    """A regression when the most the new signature can take is more than ``max_drop`` below
    the least the previous one took (see the module docstring), else None."""
    before, after = previous.at_least, new.at_most
    if before <= 0 or not math.isfinite(after) or after >= before * (1 - gate.max_drop):
        return None
    return CapacityRegression(
        service=service,
        signature=signature,
        previous_signature=previous_signature,
        max_rps=after,
        previous_rps=before,
        drop=1 - after / before,
        max_drop=gate.max_drop,
        verdict=new.verdict,
    )


class ThroughputRecorder(Aggregate):
    """The capacity of one deployment signature of one service; see the module docstring."""

    @staticmethod
    def create_id(service: str, signature: str) -> UUID:
        return uuid5(_NAMESPACE, f"throughput/{service}/{signature}")

    @event("Registered")
    def __init__(self, service: str, signature: str, at: float) -> None:
        self.service = service
        self.signature = signature
        self.registered_at = at
        self.measurement: dict[str, Any] | None = None
        self.measured_at: float | None = None
        self.measured_by = ""  # correlation id of the latest measurement
        self.measurements = 0
        self.flag: dict[str, Any] | None = None  # {"at", "reason", "correlation_id"}
        self.regression: dict[str, Any] | None = None

    @classmethod
    def register(cls, service: str, signature: str, *, at: float) -> ThroughputRecorder:
        """A new, empty record for ``signature`` of ``service``."""
        for name, value in (("service", service), ("signature", signature)):
            if not value:
                raise ThroughputRefused(f"{service}@{signature}", "register", f"{name} is empty")
        return cls(service, signature, at)

    @property
    def name(self) -> str:
        return f"{self.service}@{self.signature}"

    # lookups ------------------------------------------------------------------------------------

    @property
    def latest(self) -> Measurement | None:
        """The latest measurement, if any."""
        return None if self.measurement is None else Measurement.from_dict(self.measurement)

    def retest_reason(self, now: float, max_age: float | None = None) -> str | None:
        """Why this signature must be measured (again) at ``now``, or None when its record can
        be used. ``max_age`` (seconds) makes an older measurement count as missing."""
        latest = self.latest
        if latest is None or self.measured_at is None:
            return "never measured"
        if self.flag is not None:
            return f"flagged for retest: {self.flag['reason']}"
        if not latest.usable:
            return "the last test found the capacity below its lowest rate: test lower"
        if max_age is not None and now - self.measured_at > max_age:
            return f"measured {now - self.measured_at:.0f}s ago, older than {max_age:g}s"
        return None

    def needs_retest(self, now: float, max_age: float | None = None) -> bool:
        return self.retest_reason(now, max_age) is not None

    def has_usable_record(self, now: float, max_age: float | None = None) -> bool:
        return self.retest_reason(now, max_age) is None

    # commands ----------------------------------------------------------------------------------

    def record_measurement(
        self, measurement: Measurement, *, at: float, correlation_id: str
    ) -> None:
        """Record a load test's answer; it clears a flag for retest. The same measurement for
        the same cause again changes nothing."""
        values = measurement.as_dict()
        if self.measured_by == correlation_id and self.measurement == values:
            return
        self._measured(at=at, correlation_id=correlation_id, **values)

    @event("Measured")
    def _measured(
        self,
        at: float,
        correlation_id: str,
        max_rps: float,
        verdict: str,
        lower: float,
        upper: float | None,
        p50: float,
        p95: float,
        p99: float,
        error_rate: float,
        duration: float,
        curve: list[dict[str, Any]],
        settings: dict[str, Any],
    ) -> None:
        self.measurement = {
            "max_rps": max_rps,
            "verdict": verdict,
            "lower": lower,
            "upper": upper,
            "p50": p50,
            "p95": p95,
            "p99": p99,
            "error_rate": error_rate,
            "duration": duration,
            "curve": [dict(step) for step in curve],
            "settings": dict(settings),
        }
        self.measured_at = at
        self.measured_by = correlation_id
        self.measurements += 1
        self.flag = None

    def flag_for_retest(self, reason: str, *, at: float, correlation_id: str) -> None:
        """Mark the record as no longer trusted; flagging a flagged record changes nothing."""
        if self.flag is not None:
            return
        if not reason:
            raise ThroughputRefused(self.name, "flag_for_retest", "say why it needs a retest")
        self._flagged(at=at, reason=reason, correlation_id=correlation_id)

    @event("FlaggedForRetest")
    def _flagged(self, at: float, reason: str, correlation_id: str) -> None:
        self.flag = {"at": at, "reason": reason, "correlation_id": correlation_id}

    def record_regression(
        self, regression: CapacityRegression, *, at: float, correlation_id: str
    ) -> None:
        """Record that this signature regressed against the previous one (after a
        measurement). The same regression again changes nothing."""
        if (regression.service, regression.signature) != (self.service, self.signature):
            raise ThroughputRefused(
                self.name,
                "record_regression",
                f"the regression is about {regression.service}@{regression.signature}",
            )
        if self.measurement is None:
            raise ThroughputRefused(
                self.name, "record_regression", "nothing was measured to regress"
            )
        values: dict[str, Any] = {
            "previous_signature": regression.previous_signature,
            "max_rps": regression.max_rps,
            "previous_rps": regression.previous_rps,
            "drop": regression.drop,
            "max_drop": regression.max_drop,
            "verdict": regression.verdict,
        }
        if self.regression is not None and {k: self.regression[k] for k in values} == values:
            return
        self._regressed(at=at, correlation_id=correlation_id, reason=regression.reason, **values)

    @event("CapacityRegressed")
    def _regressed(
        self,
        at: float,
        correlation_id: str,
        reason: str,
        previous_signature: str,
        max_rps: float,
        previous_rps: float,
        drop: float,
        max_drop: float,
        verdict: str,
    ) -> None:
        self.regression = {
            "at": at,
            "correlation_id": correlation_id,
            "reason": reason,
            "previous_signature": previous_signature,
            "max_rps": max_rps,
            "previous_rps": previous_rps,
            "drop": drop,
            "max_drop": max_drop,
            "verdict": verdict,
        }
