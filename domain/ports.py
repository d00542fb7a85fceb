"""Protocols the outer layers implement; handlers and engines depend on these, not on classes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from eventcenter.domain.adjustment import Adjustment
from eventcenter.domain.breaker import BreakerTransition
from eventcenter.domain.decisions import Decision, Transition
from eventcenter.domain.event import Event
from eventcenter.domain.health import RecoveryStep
from eventcenter.domain.knee import KneeRule, Step
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.sources import Delivered, SourceProgress
from eventcenter.domain.step_plan import NextStep, StepPlan
from eventcenter.domain.throughput import Measurement


class DecisionLog(Protocol):
    """Makes transitions and decisions durable. Each call returns once the record is saved."""

    async def record_transition(self, transition: Transition) -> None: ...

    async def record_decision(self, decision: Decision) -> None: ...


class DeadLetterStore(Protocol):
    """Keeps events a subscription could not handle, with the reason; returns the letter's id."""

    async def add(
        self, event: Event, subscription: str, error: BaseException, attempts: int
    ) -> UUID: ...


@dataclass(frozen=True, slots=True)
class LoadTest:
    """What a load test measures and how: the ``target`` URL, the knee ``rule`` (the SLO), the
    step ``plan``; ``done`` holds steps measured before (a test resumed after a restart goes on
    from them: the plan is a pure function of the steps); ``name`` labels logs and reports."""

    target: str
    rule: KneeRule
    plan: StepPlan = field(default_factory=StepPlan)
    done: tuple[Step, ...] = ()
    name: str = ""


StepMeasured = Callable[[Step, NextStep], Awaitable[None]]
"""Awaited after each measured step with what the plan does next, before the next step."""


class PressureTester(Protocol):
    """Finds a target's maximum sustainable throughput by an open-model step search.

    pressure/ implements it with Locust in a process of its own. ``on_step`` is awaited after
    each measured step (the workflow records it, so a restarted center resumes after it).
    Cancelling the call stops the load generator. Raises
    :class:`~eventcenter.domain.errors.TargetUnreachable` when the target does not answer before
    the first step and :class:`~eventcenter.domain.errors.LoadTestFailed` when the generator
    fails or the plan's ``max_duration`` (plus a grace period) runs out."""

    async def measure(self, test: LoadTest, on_step: StepMeasured | None = None) -> Measurement: ...


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    """Where an agent of a service takes its frequency updates (``url``, http or https)."""

    name: str
    url: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    """What sending one agent its frequency came to. ``ok`` when the agent took the version
    (or already had it, or a newer one: a repeated dispatch is harmless); otherwise ``error``
    says why, after ``attempts`` tries (0: the agent's breaker refused the call)."""

    agent: str
    url: str
    version: int
    ok: bool
    attempts: int
    status: int | None = None
    error: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "url": self.url,
            "version": self.version,
            "ok": self.ok,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
            "detail": self.detail,
        }


class CallGuard(Protocol):
    """Runs an async call through a circuit breaker (healing/ implements it)."""

    async def acall(
        self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any
    ) -> Any: ...


class Dispatcher(Protocol):
    """Sends a service's published frequencies to its agents (pressure/ implements it over
    HTTP). Returns one outcome per agent of ``adjustment``, in its order; raises
    :class:`~eventcenter.domain.errors.DispatchRefused` only when nothing could be sent."""

    async def dispatch(
        self,
        adjustment: Adjustment,
        endpoints: Sequence[AgentEndpoint],
        *,
        correlation_id: str,
    ) -> list[DispatchOutcome]: ...


class FrequencyPort(Protocol):
    """Lowers the request frequency of the tuned services that drive a data source (the
    tuning side implements it; the ``reduce_frequency`` healing strategy calls it).

    ``reduce`` divides the current rate of each tuned service whose frequency a source's
    polling follows by ``factor`` (the service's strategy starts again from there and holds
    at or below it until the service has been quiet for its settle period), records and
    dispatches it like any adjustment with ``reason`` and ``correlation_id``, and says what it
    did. None when no tuned service drives ``tenant``/``source``: the caller then acts on the
    source itself."""

    async def reduce(
        self, tenant: str, source: str, *, factor: float, reason: str, correlation_id: str
    ) -> str | None: ...


class TuningStore(Protocol):
    """Keeps the aggregates of load-test tuning (storage/ implements it on the store writer;
    handlers/memory.py in memory).

    ``change`` applies ``apply`` to a working copy of the recorded aggregate ``aggregate_id``
    (or, when none was recorded, to the one ``create`` makes; None: then ``apply`` gets None)
    and saves its new events in one transaction; when ``apply`` raises, nothing is saved and
    the error reaches the caller. ``apply`` runs off the loop: it must only call the
    aggregate's commands. ``get`` reads a copy; ``open_runs`` lists the tuning runs not ended,
    oldest request first; ``tuned_services`` every service tuning recorded."""

    async def change(
        self,
        aggregate_id: UUID,
        create: Callable[[], Any] | None,
        apply: Callable[[Any], Any],
    ) -> Any: ...

    async def get(self, aggregate_id: UUID) -> Any | None: ...

    async def open_runs(self) -> list[Any]: ...

    async def tuned_services(self) -> list[Any]: ...


class Publisher(Protocol):
    """Publishes follow-up events from inside a handler."""

    async def __call__(
        self, type: str, payload: dict[str, Any] | None = None, **fields: Any
    ) -> str: ...


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery of an accepted event: which subscription, under which seq."""

    seq: int
    subscription: str
    failure: str | None = None  # set when it failed before any handler ran (a raising filter)


@dataclass(frozen=True, slots=True)
class AdmissionRecord:
    """An accepted event as the durable store keeps it until every delivery has ended."""

    event: Event
    envelope: str  # the envelope as JSON
    targets: tuple[Target, ...]
    ident: str | None = None  # idempotency identity (tenant, source, key), if a key was given
    replay_of: str | None = None


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    """A delivery read back from the store (after a restart, or a lagging subscription's)."""

    seq: int
    subscription: str
    priority: int
    envelope: str
    attempts: int
    failure: str | None
    replay_of: str | None
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class BacklogCount:
    subscription: str
    priority: int
    count: int
    first_seq: int
    tenant: str = ""


class DeliveryStore(Protocol):
    """The durable inbox and delivery queue (storage/ implements it on the event store).

    ``admit`` returns once the deliveries are committed (many callers share one commit); per
    record None, or the id of the event admitted earlier under the same idempotency identity
    (then nothing was stored). ``settle``, ``record_attempts`` and ``dead_letter`` are queued,
    not awaited: they are committed in order, retried while the store is unreachable, and a
    crash before their commit only means the delivery runs again (at-least-once). The
    ``decisions`` the attempt took are committed in the same transaction, once per cause.
    """

    @property
    def available(self) -> bool: ...

    @property
    def outages(self) -> int:
        """How many times the store became unreachable so far: a handler attempt during which
        this changed may have spent its time waiting on the store, not failing."""
        ...

    async def admit(
        self, records: Sequence[AdmissionRecord], progress: SourceProgress | None = None
    ) -> list[str | None]:
        """Commit ``records`` (and a source's ``progress``, in the same transaction)."""
        ...

    async def source_position(self, tenant: str, source: str, path: str) -> str | None:
        """The position last stored for a source's path (None: never stored)."""
        ...

    async def source_delivered(self, tenant: str, source: str) -> dict[str, Delivered]:
        """Per key of a source, the version and digest admitted last."""
        ...

    def settle(
        self, seq: int, replay_of: str | None, decisions: Sequence[Decision] = ()
    ) -> None: ...

    def record_attempts(
        self, seq: int, attempts: int, decisions: Sequence[Decision] = ()
    ) -> None: ...

    def dead_letter(
        self,
        seq: int,
        envelope: dict[str, Any],
        subscription: str,
        error: BaseException,
        attempts: int,
        replay_of: str | None,
        decisions: Sequence[Decision] = (),
    ) -> None: ...

    async def load(
        self, subscription: str, priority: int, after: int, limit: int, tenant: str | None = None
    ) -> list[StoredDelivery]:
        """The next ``limit`` stored deliveries of a subscription at one priority after seq
        ``after``, in seq order; of one tenant only when ``tenant`` is given."""
        ...

    async def summary(self) -> tuple[list[BacklogCount], int]:
        """Stored deliveries per (subscription, priority, tenant), and the highest seq."""
        ...

    async def flush(self) -> None:
        """Return once everything queued before this call is committed."""
        ...

    async def dead_letter_orphans(self, subscription: str, limit: int) -> int: ...


class SourceRecorder(Protocol):
    """Makes a data source's decisions durable (storage/ implements it on the event store).

    ``change`` runs ``apply`` on the source's log (None when the source was never registered)
    inside one write transaction and saves the log it returns (if any); it returns what
    ``apply`` returned second. ``apply`` runs in the store's thread: it must only use the log
    and plain values. ``outcomes`` queues rows of the source's path outcomes
    (:meth:`~eventcenter.domain.hysteresis.Outcome.row` plus the item count) for the what-if;
    they are committed in order with the next transaction, not awaited.
    """

    async def change(
        self,
        tenant: str,
        source: str,
        apply: Callable[[SourceLog | None], tuple[SourceLog | None, Any]],
    ) -> Any: ...

    def outcomes(self, tenant: str, source: str, rows: Sequence[tuple[Any, ...]]) -> None: ...


class BreakerRecorder(Protocol):
    """Makes a circuit breaker's moves durable (storage/ implements it on the event store).

    ``record`` queues the transition and returns at once: it never blocks and never awaits, so
    a breaker can call it from any thread or from a coroutine, under the breaker's own lock
    (which keeps the records in the order the moves were made). It must not call back into the
    breaker. A failure to queue raises; the breaker logs it and goes on deciding: the calls it
    protects do not wait on the store.
    """

    def record(self, transition: BreakerTransition) -> None: ...


class RecoveryRecorder(Protocol):
    """Makes a service's recovery durable (storage/ implements it on the event store): the
    incidents, their attempts and ends, with wall-clock times (:data:`~eventcenter.domain.
    health.RecoveryStep`), so a restarted center resumes an open incident and a running
    cool-down and keeps the statistics.

    ``record`` queues the step and returns at once (the recovery manager calls it on the
    loop, in the order the steps happened); recording the same step twice stores it once. A
    failure to queue raises; the manager logs it and goes on recovering.
    """

    def record(self, step: RecoveryStep) -> None: ...
