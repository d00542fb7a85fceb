"""The deployment-change workflow as recorded: one :class:`TuningRun` per deployment event, one
:class:`ServiceTuning` per service.

A ``deployment.changed`` event becomes a run (``Requested``), queued until the center's one
tuning worker takes it: runs never overlap, and a run survives a restart because its state is
its events. The worker either reuses the signature's recorded capacity (``CapacityReused``) or
load-tests it (``TestStarted``, one ``StepMeasured`` per step, ``Measured``); a center that
stops or dies during the test records ``Interrupted`` when it next starts and resumes the
search from the steps already measured (the step plan is a pure function of them). The run
ends ``Tuned`` (frequencies computed and dispatched) or ``Failed`` (with the reason).

:class:`ServiceTuning` keeps what the AdjustmentCoordinator published for a service (each
``Adjusted`` carries the control's plain state, so a restarted center tunes on from it) and
what each agent was sent (``Dispatched`` / ``DispatchFailed`` per agent and version).

Every command is idempotent: the same step, outcome or adjustment again changes nothing, so a
retry after an ambiguous save records nothing twice.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from eventcenter.domain.errors import ThroughputRefused

_NAMESPACE = uuid5(NAMESPACE_URL, "https://eventcenter/aggregates")

QUEUED = "queued"
TESTING = "testing"
TUNED = "tuned"
FAILED = "failed"
OPEN_STATUSES = (QUEUED, TESTING)


class TuningRun(Aggregate):
    """What one deployment event set off; see the module docstring."""

    @staticmethod
    def create_id(event_id: str) -> UUID:
        return uuid5(_NAMESPACE, f"tuning-run/{event_id}")

    @event("Requested")
    def __init__(
        self,
        event_id: str,
        correlation_id: str,
        tenant: str,
        service: str,
        signature: str,
        previous_signature: str | None,
        target: str,
        agents: list[dict[str, Any]],
        at: float,
    ) -> None:
        self.event_id = event_id
        self.tenant = tenant
        self.previous_signature = previous_signature
        self.correlation_id = correlation_id
        self.service = service
        self.signature = signature
        self.target = target
        self.agents = [dict(agent) for agent in agents]
        self.requested_at = at
        self.updated_at = at
        self.status = QUEUED
        self.steps: list[dict[str, Any]] = []
        self.interruptions = 0
        self.capacity: float | None = None
        self.capacity_source = ""  # "measured" or "recorded"
        self.outcome = ""  # the reason it ended with

    @classmethod
    def request(
        cls,
        *,
        event_id: str,
        correlation_id: str,
        tenant: str,
        service: str,
        signature: str,
        previous_signature: str | None,
        target: str,
        agents: list[dict[str, Any]],
        at: float,
    ) -> TuningRun:
        for name, value in (("service", service), ("signature", signature)):
            if not value:
                raise ThroughputRefused(f"{service}@{signature}", "request", f"{name} is empty")
        return cls(
            event_id,
            correlation_id,
            tenant,
            service,
            signature,
            previous_signature,
            target,
            agents,
            at,
        )

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    # commands ----------------------------------------------------------------------------------

    def start_test(self, reason: str, *, at: float) -> None:
        """The load test begins (or resumes after an interruption, from its steps)."""
        self._check_open("start_test")
        if self.status == TESTING:
            return
        self._test_started(reason=reason, at=at)

    @event("TestStarted")
    def _test_started(self, reason: str, at: float) -> None:
        self.status = TESTING
        self.updated_at = at

    def record_step(
        self, index: int, step: dict[str, Any], next_step: dict[str, Any], *, at: float
    ) -> None:
        """Step number ``index`` (0-based) of the search; a step recorded already changes
        nothing, a gap is refused (steps arrive in order)."""
        self._check_open("record_step")
        if index < len(self.steps):
            return
        if index > len(self.steps):
            raise ThroughputRefused(
                self.name, "record_step", f"step {index} arrived after {len(self.steps)} step(s)"
            )
        self._step_measured(index=index, step=dict(step), next_step=dict(next_step), at=at)

    @event("StepMeasured")
    def _step_measured(
        self, index: int, step: dict[str, Any], next_step: dict[str, Any], at: float
    ) -> None:
        self.steps.append({**step, "next": next_step})
        self.updated_at = at

    def interrupt(self, reason: str, *, at: float) -> None:
        """The test stopped with the center; the run waits to resume from its steps."""
        if self.status != TESTING:
            return
        self._interrupted(reason=reason, at=at)

    @event("Interrupted")
    def _interrupted(self, reason: str, at: float) -> None:
        self.status = QUEUED
        self.interruptions += 1
        self.updated_at = at

    def capacity_known(self, capacity: float, source: str, reason: str, *, at: float) -> None:
        """The capacity the run tunes with: ``measured`` now or ``recorded`` before."""
        self._check_open("capacity_known")
        if self.capacity is not None:
            return
        self._capacity_known(capacity=capacity, source=source, reason=reason, at=at)

    @event("CapacityKnown")
    def _capacity_known(self, capacity: float, source: str, reason: str, at: float) -> None:
        self.capacity = capacity
        self.capacity_source = source
        self.updated_at = at

    def tuned(self, version: int, reason: str, *, at: float) -> None:
        """Frequencies computed (version ``version``) and dispatched: the run is over."""
        if self.status == TUNED:
            return
        self._check_open("tuned")
        self._tuned(version=version, reason=reason, at=at)

    @event("Tuned")
    def _tuned(self, version: int, reason: str, at: float) -> None:
        self.status = TUNED
        self.outcome = reason
        self.updated_at = at

    def fail(self, reason: str, *, at: float) -> None:
        """The run ends without tuning (the test failed, the target is unreachable ...)."""
        if self.status == FAILED:
            return
        self._check_open("fail")
        self._failed(reason=reason, at=at)

    @event("Failed")
    def _failed(self, reason: str, at: float) -> None:
        self.status = FAILED
        self.outcome = reason
        self.updated_at = at

    @property
    def name(self) -> str:
        return f"{self.service}@{self.signature} (run of event {self.event_id})"

    def _check_open(self, command: str) -> None:
        if not self.is_open:
            raise ThroughputRefused(self.name, command, f"the run is {self.status} already")


class ServiceTuning(Aggregate):
    """What was published for one service and sent to each of its agents."""

    @staticmethod
    def create_id(service: str) -> UUID:
        return uuid5(_NAMESPACE, f"service-tuning/{service}")

    @event("Registered")
    def __init__(self, service: str, at: float) -> None:
        self.service = service
        self.control: dict[str, Any] | None = None
        self.endpoints: list[dict[str, Any]] = []
        self.adjustment: dict[str, Any] | None = None
        self.adjusted_by = ""
        self.dispatches: dict[str, dict[str, Any]] = {}  # agent -> last outcome

    @classmethod
    def register(cls, service: str, *, at: float) -> ServiceTuning:
        if not service:
            raise ThroughputRefused("?", "register", "a service needs a name")
        return cls(service, at)

    @property
    def name(self) -> str:
        return f"tuning of {self.service}"

    @property
    def published_version(self) -> int:
        """The version of the last adjustment recorded (0: none yet)."""
        return 0 if self.adjustment is None else int(self.adjustment["version"])

    def adjusted(
        self,
        adjustment: dict[str, Any],
        control: dict[str, Any],
        endpoints: list[dict[str, Any]],
        *,
        correlation_id: str,
    ) -> None:
        """Record a published adjustment with the control's state after it; an older or equal
        version with the same control changes nothing."""
        if (
            self.adjustment is not None
            and int(adjustment["version"]) <= self.published_version
            and control == self.control
        ):
            return
        self._adjusted(
            adjustment=dict(adjustment),
            control=dict(control),
            endpoints=[dict(e) for e in endpoints],
            correlation_id=correlation_id,
        )

    @event("Adjusted")
    def _adjusted(
        self,
        adjustment: dict[str, Any],
        control: dict[str, Any],
        endpoints: list[dict[str, Any]],
        correlation_id: str,
    ) -> None:
        self.adjustment = adjustment
        self.control = control
        self.endpoints = endpoints
        self.adjusted_by = correlation_id

    def dispatch_outcome(self, outcome: dict[str, Any], *, at: float, correlation_id: str) -> None:
        """Record what sending ``outcome['agent']`` version ``outcome['version']`` came to;
        the same outcome again changes nothing."""
        agent = str(outcome["agent"])
        last = self.dispatches.get(agent)
        if (
            last is not None
            and last["version"] == outcome["version"]
            and last["ok"] == outcome["ok"]
        ):
            return
        if outcome["ok"]:
            self._dispatched(outcome=dict(outcome), at=at, correlation_id=correlation_id)
        else:
            self._dispatch_failed(outcome=dict(outcome), at=at, correlation_id=correlation_id)

    @event("Dispatched")
    def _dispatched(self, outcome: dict[str, Any], at: float, correlation_id: str) -> None:
        self.dispatches[str(outcome["agent"])] = {**outcome, "at": at}

    @event("DispatchFailed")
    def _dispatch_failed(self, outcome: dict[str, Any], at: float, correlation_id: str) -> None:
        self.dispatches[str(outcome["agent"])] = {**outcome, "at": at}
