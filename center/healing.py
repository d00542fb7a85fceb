"""The center's self-healing, wired: failures in, RCA cases, healing, escalation, answers.

What :class:`CenterHealing` connects (the parts live in ``eventcenter.healing``):

- **Failures in.** A data source's failures (each path error, each ``event_timeout`` of
  silence, an admission the store refused, a mode that could not start), a handler's delivery
  given up (dead-lettered: a retry that worked is not a failure to analyse) and a health check
  turning unhealthy become :class:`~eventcenter.domain.rca.Failure` records on the RCA
  runner's bounded, fair queue.
- **Context.** The runner's rules see the source's mode and recent switches, its recent error
  rate, every breaker's state and the last ``deployment.changed`` event the center handled.
- **Healing.** The built-in source strategies act through the sources' controls,
  :class:`~eventcenter.healing.strategies.RecoverService` through the health monitor and the
  recovery manager; users add theirs (``healing.strategies``) and rules
  (``healing.runner.rules``), per tenant if they like.
- **Escalation.** What cannot be healed goes to the sinks of ``[healing.escalation]`` (a log
  sink always exists) and sinks registered in code; unanswered cases are reminded.
- **Answers.** ``eventcenter rca ack|resolve`` leave answers in the store
  (:mod:`eventcenter.storage.rca_answers`); the center applies them every
  ``answers_every`` seconds.
- **Breakers.** ``center.healing.breakers`` names circuit breakers whose states are recorded
  and restored at start, with the rest of their wait in open.
- **Recovery.** The recovery manager's incidents are recorded per service
  (:mod:`eventcenter.storage.recovery_state`); at start each registered service gets back its
  open incident, the rest of its cool-down and its statistics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from eventcenter.domain.errors import EventCenterError, InvalidFailure
from eventcenter.domain.escalation import Answer, Attempt, EscalationNotice
from eventcenter.domain.event import Event
from eventcenter.domain.failures import HandlerFailure
from eventcenter.domain.health import (
    CheckSettings,
    HealthStatus,
    HealthUpdate,
    RecoveryRule,
    Seconds,
)
from eventcenter.domain.ports import FrequencyPort
from eventcenter.domain.rca import (
    RECOVER_SERVICE,
    REDUCE_FREQUENCY,
    SOURCE_SEVERITY,
    CaseSummary,
    Component,
    Deployment,
    Failure,
    HealingStrategy,
    ModeChange,
    RcaContext,
    Severity,
)
from eventcenter.domain.sources import SourceErrorKind, SourceFailure
from eventcenter.handlers.processor import EventProcessor
from eventcenter.handlers.tuning import DispatchFailure
from eventcenter.healing.breaker import BreakerRegistry
from eventcenter.healing.checkers import HttpCheck, NatsCheck, PostgresCheck, RedisCheck
from eventcenter.healing.escalation import EscalationSink, Escalator
from eventcenter.healing.escalation_config import EscalationSettings
from eventcenter.healing.health import HealthMonitor
from eventcenter.healing.rca import RcaRunner, RcaSettings
from eventcenter.healing.recovery import RecoveryManager
from eventcenter.healing.strategies import (
    RecoverService,
    ReduceFrequency,
    builtin_limits,
    builtin_strategies,
    with_limits,
)
from eventcenter.sources.clock import SystemClock
from eventcenter.sources.manager import SourceManager, SourceNotFound
from eventcenter.storage.breaker_state import DurableBreakerRecorder
from eventcenter.storage.rca_recorder import DurableCaseRecorder
from eventcenter.storage.recovery_state import DurableRecoveryRecorder
from eventcenter.storage.writer import StoreWriter

log = logging.getLogger("eventcenter.healing")

#: The subscription that keeps the last deployment for the RCA context.
DEPLOYMENTS = "rca.deployments"

_PATHS = {"push": Component.SOURCE_PUSH, "poll": Component.SOURCE_POLL}


# configuration ---------------------------------------------------------------------------------


class HealthCheckSettings(BaseModel):
    """One ``[[healing.health.checks]]`` table: a server the center checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["http", "postgres", "redis", "nats"]
    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1)
    tenant: str = Field("default", description="whose RCA cases its failures open")
    expected_status: int = 200
    jetstream: bool = False
    settings: CheckSettings | None = None

    def checker(self) -> Any:
        timeout = (self.settings or CheckSettings()).schedule.timeout
        if self.kind == "http":
            return HttpCheck(
                self.name, self.url, expected_status=self.expected_status, timeout=timeout
            )
        if self.kind == "postgres":
            return PostgresCheck(self.name, self.url, timeout=timeout)
        if self.kind == "redis":
            return RedisCheck(self.name, self.url, timeout=timeout)
        return NatsCheck(self.name, self.url, timeout=timeout, jetstream=self.jetstream)


class HealthSettings(BaseModel):
    """``[healing.health]``: defaults for every check, the recovery rule, the checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    defaults: CheckSettings = Field(default_factory=CheckSettings)
    recovery: RecoveryRule = Field(default_factory=RecoveryRule)
    checks: list[HealthCheckSettings] = Field(default_factory=list)


class StrategyLimits(BaseModel):
    """One built-in strategy's limits in ``[healing.strategies]``; what is left out keeps the
    strategy's default (see :data:`STRATEGY_DEFAULTS`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int | None = Field(
        None, ge=1, le=100, description="times it may be tried in one case"
    )
    cooldown: Annotated[Seconds, Field(ge=0)] | None = Field(
        None, description="seconds before it may act on the same tenant and source again"
    )

    def overrides(self) -> dict[str, float]:
        return self.model_dump(exclude_none=True)


#: The built-in strategies' limits when ``[healing.strategies]`` leaves them out:
#: (max_attempts, cooldown seconds).
STRATEGY_DEFAULTS = builtin_limits()


class HealingSettings(BaseModel):
    """``[healing]``: the RCA runner's knobs, escalation and health checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="analyse failures and heal (off: nothing runs)")
    epsilon: float = Field(
        0.1, ge=0.0, le=1.0, description="share of strategy choices that explore"
    )
    verify_timeout: Annotated[Seconds, Field(gt=0)] = 30.0
    max_healing: int = Field(10, ge=1, description="cases healed at the same time")
    answers_every: Annotated[Seconds, Field(gt=0)] = 2.0
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    strategies: dict[str, StrategyLimits] = Field(
        default_factory=dict,
        description="per built-in strategy, its attempts per case and cool-down per source",
    )

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: dict[str, StrategyLimits]) -> dict[str, StrategyLimits]:
        unknown = sorted(set(value) - set(STRATEGY_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown strategy {', '.join(unknown)}: the built-in ones are"
                f" {', '.join(sorted(STRATEGY_DEFAULTS))} (set a strategy of your own's"
                " limits where you build it)"
            )
        return value


# the wiring ------------------------------------------------------------------------------------


class CenterHealing:
    """Builds and runs the center's self-healing (see the module docstring).

    Register strategies (``strategies``), escalation sinks (``sinks``), health checks
    (``monitor.add``) and recovery actions (``recovery.register``) before the center starts.
    """

    def __init__(
        self,
        settings: HealingSettings,
        *,
        writer: StoreWriter,
        sources: SourceManager,
        processor: EventProcessor,
        clock: Any = None,
        wall: Callable[[], float] = time.time,
        sinks: Iterable[EscalationSink] = (),
        strategies: Iterable[HealingStrategy] = (),
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self._wall = wall
        self._sources = sources
        self._loop_task: asyncio.Task[None] | None = None
        self.last_deployment: Deployment | None = None
        self.cases = DurableCaseRecorder(writer)
        self._breaker_store = DurableBreakerRecorder(writer)
        self.breakers = BreakerRegistry(clock=self._clock, wall=wall, recorder=self._breaker_store)
        self.monitor = HealthMonitor(self._clock, settings=settings.health.defaults)
        self._check_tenants: dict[str, str] = {}
        for check in settings.health.checks:
            self.monitor.add(check.checker(), check.settings)
            self._check_tenants[check.name] = check.tenant
        self._recovery_store = DurableRecoveryRecorder(writer)
        self.recovery = RecoveryManager(
            self.monitor,
            self._clock,
            rule=settings.health.recovery,
            recorder=self._recovery_store,
            wall=wall,
        )
        self.escalator = Escalator.from_settings(settings.escalation, sinks=sinks)
        limits = {name: given.overrides() for name, given in settings.strategies.items()}
        self.runner = RcaRunner(
            self.cases,
            self,
            _Escalation(self.escalator, wall),
            clock=self._clock,
            strategies=[
                *builtin_strategies(sources, self._clock, wall, limits=limits),
                with_limits(
                    RecoverService(self.monitor, self.recovery, self._clock),
                    limits.get(RECOVER_SERVICE),
                ),
                *strategies,
            ],
            wall=wall,
            settings=RcaSettings(
                epsilon=settings.epsilon,
                verify_timeout=settings.verify_timeout,
                max_healing=settings.max_healing,
                renotify=settings.escalation.renotify.policy(),
            ),
        )
        if settings.enabled:
            sources.on_failure = self.source_failed
            processor.on_failure = self.handler_failed
            self.monitor.listen(self._health_changed)
            processor.subscribe("deployment.changed", self._deployed, name=DEPLOYMENTS)

    def connect_tuning(self, frequency: FrequencyPort) -> None:
        """Let ``reduce_frequency`` slow a source through the tuned services it follows (the
        tuning side is built after healing: its dispatcher uses healing's breakers)."""
        strategy = self.runner.strategies.get(REDUCE_FREQUENCY)
        if isinstance(strategy, ReduceFrequency):
            strategy.frequency = frequency

    @property
    def strategies(self) -> Any:
        """The runner's strategies, per tenant (``register``, ``choose``)."""
        return self.runner.strategies

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the breakers and the recovery, resume the open cases, start the checks and
        the answers."""
        self.breakers.restore(await self._breaker_store.load())
        self.recovery.restore(await self._recovery_store.load(self.recovery.services()))
        if not self.settings.enabled:
            return
        await self.runner.start()
        await self.monitor.start()
        self._loop_task = asyncio.get_running_loop().create_task(self._answers_forever())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        await self.recovery.aclose()
        await self.monitor.aclose()
        await self.runner.stop()
        await self.escalator.aclose()

    # failures in -------------------------------------------------------------------------------

    def source_failed(self, failure: SourceFailure) -> None:
        """A data source's failure, as the RCA runner takes it."""
        kind, component = failure.kind, _PATHS.get(failure.path, Component.SOURCE_POLL)
        severity: Severity | None = None
        if kind == "silence":
            kind = "timeout"
        elif kind == "storage":
            component, kind, severity = Component.STORAGE, "unavailable", Severity.HIGH
        elif kind == "rollback":
            component, kind = Component.SOURCE_POLL, "unavailable"
        if failure.path == "reconcile" and component is not Component.STORAGE:
            component = Component.RECONCILE
        if severity is None and kind in SourceErrorKind.__members__.values():
            severity = SOURCE_SEVERITY[SourceErrorKind(kind)]
        self._report(
            tenant=failure.tenant,
            source=failure.source,
            component=component,
            kind=kind,
            message=failure.detail,
            at=failure.at,
            severity=severity or Severity.MEDIUM,
            details={"path": failure.path, "mode": failure.mode},
        )

    def handler_failed(self, failure: HandlerFailure) -> None:
        """A handler's delivery given up (the retries that worked are no failure to analyse)."""
        if not failure.final:
            return
        self._report(
            tenant=failure.tenant,
            source=failure.subscription,
            component=Component.HANDLER,
            kind="exception",
            message=f"{failure.error_type}: {failure.error}",
            at=failure.at,
            severity=Severity.MEDIUM,
            correlation_id=failure.correlation_id,
            details={
                "subscription": failure.subscription,
                "event_type": failure.event_type,
                "event_id": failure.event_id,
                "attempts": failure.attempt,
                "permanent": failure.permanent,
            },
        )

    def dispatch_failed(self, failure: DispatchFailure) -> None:
        """An agent did not take its frequency (after the dispatcher's retries, or its breaker
        refused the call)."""
        outcome = failure.outcome
        refused = outcome.attempts == 0
        self._report(
            tenant=failure.tenant,
            source=f"{failure.service}:{outcome.agent}",  # a notice's source takes no "/"
            component=Component.DISPATCH,
            kind="unavailable" if refused else _dispatch_kind(outcome.status, outcome.error),
            message=f"dispatch of version {outcome.version} to {outcome.url}: {outcome.error}",
            at=failure.at,
            severity=Severity.MEDIUM,
            correlation_id=failure.correlation_id,
            details={
                "service": failure.service,
                "agent": outcome.agent,
                "url": outcome.url,
                "version": outcome.version,
                "attempts": outcome.attempts,
                "status": outcome.status,
            },
        )

    async def _health_changed(self, update: HealthUpdate) -> None:
        record = update.record
        if not update.changed or record.status is not HealthStatus.UNHEALTHY:
            return
        error = record.last_error or "unhealthy"
        self._report(
            tenant=self._check_tenants.get(record.service, "default"),
            source=record.service,
            component=Component.HEALTH_CHECK,
            kind="timeout" if "timed out" in error or "timeout" in error else "unavailable",
            message=error,
            at=self._wall(),
            severity=Severity.HIGH,
            details={"consecutive_failures": record.consecutive_failures},
        )

    def _report(self, *, source: str | None, **values: Any) -> None:
        if not self.settings.enabled:
            return
        try:
            failure = Failure(source=source, **values)
        except InvalidFailure:  # a name the RCA cannot use as a source (a subscription's)
            failure = Failure(source=None, **values)
        self.runner.report(failure)

    # the context port --------------------------------------------------------------------------

    async def gather(self, failure: Failure) -> RcaContext:
        mode: str | None = None
        switches: tuple[ModeChange, ...] = ()
        error_rate: float | None = None
        if failure.source is not None and failure.component in (
            Component.SOURCE_PUSH,
            Component.SOURCE_POLL,
            Component.RECONCILE,
        ):
            try:
                runner = self._sources.runner(failure.tenant, failure.source)
            except SourceNotFound:
                runner = None
            if runner is not None:
                mode = runner.mode
                error_rate = min(1.0, max(0.0, runner.tally.error_rate))
                switches = tuple(
                    ModeChange(e["at"], e["previous"], e["to"], e.get("reason", ""))
                    for e in runner.recent
                )
        return RcaContext(
            at=failure.at,
            source_mode=mode,
            recent_switches=switches,
            breakers={status.name: status.state for status in self.breakers.states()},
            error_rate=error_rate,
            last_deployment=self.last_deployment,
        )

    async def _deployed(self, event: Event, ctx: Any) -> None:
        self.last_deployment = Deployment(event.correlation_id, event.timestamp.timestamp())

    # people's answers --------------------------------------------------------------------------

    async def _answers_forever(self) -> None:
        while True:
            try:
                await self.apply_answers()
            except EventCenterError as error:  # the store: the answers wait for the next pass
                log.warning("applying answers to RCA cases failed: %s", error)
            await self._clock.sleep(self.settings.answers_every)

    async def apply_answers(self) -> int:
        """Apply the answers people left since the last pass; how many were applied."""
        pending = await self.cases.pending_answers()
        for answer in pending:
            outcome = await self._apply(answer.case_id, answer.action, answer.by, answer.note)
            await self.cases.answered(answer.id, self._wall(), outcome)
            log.warning(
                "rca case %s: %s by %s: %s", answer.case_id, answer.action, answer.by, outcome
            )
        return len(pending)

    async def answer(self, case_id: str, answer: Answer) -> str:
        """Apply a person's answer now (the HTTP API's ack and resolve, while the center runs);
        what came of it, worded as for the answers left by the CLI (``refused: ...`` when the
        case refused it)."""
        return await self._apply(case_id, answer.action.value, answer.by, answer.note or "")

    async def _apply(self, case_id: str, action: str, by: str, note: str) -> str:
        try:
            key = UUID(case_id)
            if action == "resolve":
                await self.runner.resolve(key, note, by=by)
                return "resolved"
            done = await self.runner.acknowledge(key, by, note=note)
            return "acknowledged" if done else "acknowledged already"
        except (EventCenterError, ValueError) as refused:
            return f"refused: {refused}"


class _Escalation:
    """The RCA runner's escalator port over the escalation sinks: a case becomes a notice;
    the names of the sinks that took it are returned; none took it, the runner retries."""

    def __init__(self, escalator: Escalator, wall: Callable[[], float]) -> None:
        self._escalator = escalator
        self._wall = wall

    async def escalate(self, case: CaseSummary) -> str:
        now = self._wall()
        escalated_at = now  # a reminder keeps the time the case first escalated
        if case.notification > 1 and case.escalated_at is not None:
            escalated_at = case.escalated_at
        last = case.last_failure
        notice = EscalationNotice(
            case_id=case.case_id,
            tenant=case.tenant,
            source=case.source,
            category=case.category,
            severity=str(last.get("severity", "medium")),
            summary=case.reason or f"{case.category}: {last.get('message', '')}",
            evidence=tuple(case.evidence),
            attempts=tuple(
                Attempt(str(a["strategy"]), str(a.get("verdict") or "interrupted"))
                for a in case.attempts
            ),
            opened_at=min(case.opened_at, escalated_at),
            escalated_at=escalated_at,
            correlation_id=case.correlation_id,
            notification=max(1, case.notification),
            notified_at=now,
        )
        report = await self._escalator.escalate(notice)
        if not report.delivered:
            reasons = "; ".join(f"{d.sink}: {d.reason}" for d in report.failed) or "no sink"
            raise EventCenterError(f"no escalation sink took case {case.case_id}: {reasons}")
        return ", ".join(report.delivered)


def _dispatch_kind(status: int | None, error: str) -> str:
    """The failure kind of a dispatch the agent did not take, for the RCA rules."""
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status is not None and status >= 500:
        return "unavailable"
    text = error.lower()
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if status is None:
        return "connection"
    return "exception"
