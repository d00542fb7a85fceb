"""The RCA runner: failures in, cases analysed, healed (verified) or escalated, every step
recorded.

How it works:

- Failures are reported with :meth:`RcaRunner.report` (engines, the processor, health checks:
  a synchronous call that never blocks) into the bounded, fair :class:`FailureQueue`.
- One taker analyses them in queue order: it gathers the context through the
  :class:`~eventcenter.domain.rca.RcaContextPort`, runs the tenant's rules
  (:func:`~eventcenter.domain.rca.analyse`), and either attaches the failure to the open case
  of the same tenant, source and category, or opens a case (``Opened`` + ``Analysed``).
- Each open case has one worker task that heals it: the learning rule
  (:func:`~eventcenter.domain.healing_choice.choose`) picks a strategy among those of the
  tenant that apply to the category and are neither exhausted nor cooling down;
  ``HealingAttempted`` is recorded *before* the action runs, then ``apply``, then the re-check
  ``verify`` within ``verify_timeout``; the verdict (``HealingVerified`` and ``Closed``, or
  ``HealingFailed``) is recorded with the outcome counted in the healing stats, in one write.
  When nothing is left to try, the case escalates once through the
  :class:`~eventcenter.domain.rca.Escalator`; an escalated case nobody acknowledges is
  renotified as its ``RenotifyPolicy`` says (growing waits, a bounded count).
- On :meth:`start` the runner resumes every open case from the recorder: an attempt recorded
  without a verdict (a crash during the action) is re-checked, not run again; an escalated case
  is not escalated again, only renotified when due. A verified step is never re-run, because
  its case is closed in the same write.

Time: ``clock`` paces waits (cool-downs, verify timeouts, renotification; tests pass a fake
clock); ``wall`` stamps what is recorded (epoch seconds: it outlives the process).

Logs: while a failure is analysed, and in each case's worker task, :data:`current_case` holds
what log records should say about it (tenant, source, case id, category, correlation id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventcenter.domain.backoff import backoff_delay
from eventcenter.domain.errors import (
    ConfigurationError,
    EventCenterError,
    RcaCaseNotFound,
    RcaCaseRefused,
)
from eventcenter.domain.escalation import RenotifyPolicy
from eventcenter.domain.healing_choice import (
    EPSILON,
    Choice,
    Exhausted,
    Option,
    Wait,
    choose,
)
from eventcenter.domain.rca import (
    Analysis,
    CaseSummary,
    Escalator,
    Failure,
    HealingStrategy,
    PerTenant,
    RcaContext,
    RcaContextPort,
    RuleBook,
    analyse,
)
from eventcenter.domain.rca_case import (
    ACKNOWLEDGED,
    CLOSED,
    ESCALATED,
    HEALED,
    HEALING,
    CaseRecorder,
    RcaCase,
    StatsFor,
)
from eventcenter.domain.sources import Clock
from eventcenter.healing.failure_queue import FailureQueue, PutResult, QueuedFailure
from eventcenter.healing.timing import within

log = logging.getLogger("eventcenter.healing.rca")

Cause = tuple[str, str | None, str]

#: Refusals in a row after which the runner leaves a case to a person (a state it cannot
#: follow: it logs the error and stops working on the case; the case stays open).
MAX_REFUSALS = 3


#: Reminders of an unanswered escalated case: 30 min, doubling up to 4 h, five at most.
DEFAULT_RENOTIFY = RenotifyPolicy()

#: The failure or case the current task works on, for log records (see the module docstring).
current_case: ContextVar[Mapping[str, str] | None] = ContextVar(
    "eventcenter_rca_case", default=None
)

#: How a case ended up, as :attr:`RunnerStats.cases` counts it.
CASE_OUTCOMES = ("opened", "healed", "recovered", "escalated", "acknowledged", "resolved")


def _failure_fields(failure: Failure) -> dict[str, str]:
    fields = {"tenant": failure.tenant, "failure_kind": failure.kind}
    if failure.source:
        fields["source"] = failure.source
    if failure.correlation_id:
        fields["correlation_id"] = failure.correlation_id
    return fields


def _case_fields(case: RcaCase) -> dict[str, str]:
    fields = {"tenant": case.tenant, "case_id": str(case.id), "category": case.category}
    if case.source:
        fields["source"] = case.source
    if case.correlation_id:
        fields["correlation_id"] = case.correlation_id
    return fields


@dataclass(frozen=True, slots=True)
class RcaSettings:
    """The runner's knobs (seconds for times).

    ``epsilon``: share of choices that explore (see :mod:`~eventcenter.domain.healing_choice`);
    ``verify_timeout``: how long a re-check may take before it counts as failed;
    ``renotify``: when an escalated case nobody acknowledged reminds its people again (see
    :class:`~eventcenter.domain.escalation.RenotifyPolicy`; None: never);
    ``escalation_retry`` / ``escalation_retry_max``: back-off when no sink took a case or the
    store refused a step; ``max_healing``: cases healed at the same time.
    """

    epsilon: float = EPSILON
    verify_timeout: float = 30.0
    renotify: RenotifyPolicy | None = DEFAULT_RENOTIFY
    escalation_retry: float = 5.0
    escalation_retry_max: float = 300.0
    max_healing: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigurationError(f"epsilon must be in [0, 1], got {self.epsilon}")
        for name in ("verify_timeout", "escalation_retry", "escalation_retry_max"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if self.max_healing < 1:
            raise ConfigurationError("max_healing must be at least 1")


@dataclass(frozen=True, slots=True)
class CallableStrategy:
    """A healing strategy from two async functions, the way users register their own:
    ``apply(case) -> str`` (what it did) and ``verify(case) -> bool`` (the re-check)."""

    name: str
    categories: frozenset[str]
    apply_fn: Callable[[CaseSummary], Awaitable[str]]
    verify_fn: Callable[[CaseSummary], Awaitable[bool]]
    max_attempts: int = 3
    cooldown: float = 60.0

    async def apply(self, case: CaseSummary) -> str:
        return await self.apply_fn(case)

    async def verify(self, case: CaseSummary) -> bool:
        return await self.verify_fn(case)


@dataclass(slots=True)
class RunnerStats:
    """What the runner did since it started (for metrics and ``status``)."""

    analysed: int = 0
    opened: int = 0
    attached: int = 0
    attempts: int = 0
    verified: int = 0
    failed: int = 0
    escalated: int = 0
    renotified: int = 0
    unrecorded: int = 0  # failures not analysed or recorded (the store refused, a rule raised)
    by_category: dict[str, int] = field(default_factory=dict)
    #: Cases by (category, outcome), the outcomes of :data:`CASE_OUTCOMES`: opened, closed as
    #: healed (a verified strategy), recovered (by itself), escalated, acknowledged or resolved
    #: (by a person). Categories are the rules' own (a bounded set).
    cases: dict[tuple[str, str], int] = field(default_factory=dict)

    def case(self, category: str, outcome: str) -> None:
        key = (category, outcome)
        self.cases[key] = self.cases.get(key, 0) + 1


class RcaRunner:
    """See the module docstring. Build it, register strategies, then ``await start()``."""

    def __init__(
        self,
        recorder: CaseRecorder,
        context: RcaContextPort,
        escalator: Escalator,
        *,
        clock: Clock,
        rules: RuleBook | None = None,
        strategies: PerTenant[HealingStrategy] | Iterable[HealingStrategy] = (),
        queue: FailureQueue | None = None,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        settings: RcaSettings | None = None,
    ) -> None:
        self._recorder = recorder
        self._context = context
        self._escalator = escalator
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self.settings = settings or RcaSettings()
        self.rules = rules if rules is not None else RuleBook()
        if isinstance(strategies, PerTenant):
            self.strategies: PerTenant[HealingStrategy] = strategies
        else:
            self.strategies = PerTenant("healing strategy", strategies)
        self.queue = queue if queue is not None else FailureQueue()
        self.stats = RunnerStats()
        self._open: dict[Cause, UUID] = {}
        self._workers: dict[UUID, asyncio.Task[None]] = {}
        self._last_applied: dict[tuple[str, str | None, str], float] = {}
        self._healing = asyncio.Semaphore(self.settings.max_healing)
        self._taker: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._taker is not None

    async def start(self) -> None:
        """Resume the open cases the recorder holds, then start taking failures."""
        if self._taker is not None:
            return
        for case in await self._recorder.open_cases():
            self._remember(case)
            log.info("rca case %s (%s) resumed in status %s", case.id, case.name, case.status)
            self._spawn(case.id)
        self._taker = asyncio.get_running_loop().create_task(self._take_forever())

    async def stop(self) -> None:
        """Stop taking failures and working on cases. What was recorded stays; an action
        interrupted now is re-checked (not re-run) when a runner resumes the case."""
        tasks = [t for t in (self._taker, *self._workers.values()) if t is not None]
        self._taker = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    @property
    def busy(self) -> int:
        """How many cases are being worked on now (healing, waiting for a cool-down or for
        their next renotification)."""
        return sum(1 for task in self._workers.values() if not task.done())

    def report(self, failure: Failure) -> PutResult:
        """Queue a failure for analysis (never blocks; see :class:`FailureQueue`). Call it on
        the event loop's thread; from another thread (the store writer's) hand it over with
        ``loop.call_soon_threadsafe(runner.report, failure)``."""
        result = self.queue.put(failure)
        if result == "dropped":
            log.warning(
                "rca queue full: failure of %s/%s (%s) dropped",
                failure.tenant,
                failure.source,
                failure.kind,
            )
        return result

    def open_by_category(self) -> dict[str, int]:
        """How many cases this runner holds open now, by category."""
        counts: dict[str, int] = {}
        for _, _, category in self._open:
            counts[category] = counts.get(category, 0) + 1
        return counts

    def open_case(self, tenant: str, source: str | None, category: str) -> UUID | None:
        """The id of the open case of this cause, if any."""
        return self._open.get((tenant, source, category))

    # a person's answer -------------------------------------------------------------------------

    async def acknowledge(self, case_id: UUID, by: str, note: str = "") -> bool:
        """Record that ``by`` took the escalated case: it is not renotified any more."""
        at = self._wall()

        def ack(case: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, tuple[bool, str]]:
            found = _existing(case, case_id)
            return found, (found.acknowledge(by, at=at, note=note), found.category)

        done, category = await self._recorder.change(case_id, ack)
        self._cancel(case_id)
        if done:
            self.stats.case(category, "acknowledged")
        return bool(done)

    async def resolve(self, case_id: UUID, note: str, by: str = "") -> None:
        """Record that the cause is dealt with (``note``); the case closes and the runner
        stops working on it."""
        at = self._wall()

        def resolve(case: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, RcaCase]:
            found = _existing(case, case_id)
            found.resolve(note, at=at, by=by)
            return found, found

        case: RcaCase = await self._recorder.change(case_id, resolve)
        self._cancel(case_id)
        self._forget(case)
        self.stats.case(case.category, "resolved")

    # taking failures ---------------------------------------------------------------------------

    async def _take_forever(self) -> None:
        while True:
            entry = await self.queue.get()
            token = current_case.set(_failure_fields(entry.failure))
            try:
                await self._take(entry)
            except EventCenterError as error:  # the store refused: counted, and logged
                self.stats.unrecorded += entry.count
                log.error(
                    "rca: the failure of %s/%s (%s) could not be recorded: %s",
                    entry.failure.tenant,
                    entry.failure.source,
                    entry.failure.kind,
                    error,
                )
            except Exception:  # a user's rule raised: counted and logged; the taker goes on
                self.stats.unrecorded += entry.count
                log.exception(
                    "rca: analysing the failure of %s/%s (%s) failed",
                    entry.failure.tenant,
                    entry.failure.source,
                    entry.failure.kind,
                )
            finally:
                current_case.reset(token)

    async def _take(self, entry: QueuedFailure) -> None:
        failure = entry.failure
        context = await self._gather(failure)
        analysis = analyse(failure, context, self.rules.for_tenant(failure.tenant))
        self.stats.analysed += entry.count
        counted = self.stats.by_category
        counted[analysis.category] = counted.get(analysis.category, 0) + entry.count
        cause: Cause = (failure.tenant, failure.source, analysis.category)
        known = self._open.get(cause)
        if known is not None and await self._attach(known, entry):
            return
        await self._open_case(entry, analysis, context)

    async def _gather(self, failure: Failure) -> RcaContext:
        try:
            return await self._context.gather(failure)
        except Exception as error:  # the analysis goes on with less context, and says so
            log.warning(
                "rca: gathering the context of a failure of %s/%s failed: %r",
                failure.tenant,
                failure.source,
                error,
            )
            return RcaContext(at=self._wall())

    async def _attach(self, case_id: UUID, entry: QueuedFailure) -> bool:
        """Attach to the open case; False if it turned out closed (a person resolved it)."""
        at = self._wall()

        def attach(case: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, bool]:
            if case is None or not case.is_open:
                return None, False
            case.attach(entry.failure, at=at, repeats=entry.repeats)
            return case, True

        attached: bool = await self._recorder.change(case_id, attach)
        if attached:
            self.stats.attached += entry.count
            return True
        self._open = {cause: known for cause, known in self._open.items() if known != case_id}
        return False

    async def _open_case(
        self, entry: QueuedFailure, analysis: Analysis, context: RcaContext
    ) -> None:
        failure = entry.failure
        case_id = RcaCase.id_for(failure, analysis.category)
        at = self._wall()

        def open_case(case: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, RcaCase]:
            if case is not None:  # this very failure opened it before (reported again)
                return None, case
            opened = RcaCase.open(failure, analysis, context, at=at, repeats=entry.repeats)
            return opened, opened

        case: RcaCase = await self._recorder.change(case_id, open_case)
        if not case.is_open:
            return
        self.stats.opened += 1
        self.stats.case(case.category, "opened")
        self._remember(case)
        log.warning(
            "rca case %s opened for %s: %s (confidence %.2f; %s)",
            case_id,
            case.name,
            analysis.category,
            analysis.confidence,
            "; ".join(analysis.evidence),
        )
        self._spawn(case_id)

    def _remember(self, case: RcaCase) -> None:
        self._open[case.cause] = case.id
        for attempt in case.attempts:
            key = (case.tenant, case.source, str(attempt["strategy"]))
            self._last_applied[key] = max(self._last_applied.get(key, attempt["at"]), attempt["at"])

    def _forget(self, case: RcaCase) -> None:
        if self._open.get(case.cause) == case.id:
            del self._open[case.cause]

    def _spawn(self, case_id: UUID) -> None:
        if case_id in self._workers and not self._workers[case_id].done():
            return
        task = asyncio.get_running_loop().create_task(self._work(case_id))
        self._workers[case_id] = task
        task.add_done_callback(lambda done: self._finished(case_id, done))

    def _finished(self, case_id: UUID, task: asyncio.Task[None]) -> None:
        if self._workers.get(case_id) is task:
            del self._workers[case_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("rca case %s: its worker failed: %r", case_id, task.exception())

    def _cancel(self, case_id: UUID) -> None:
        task = self._workers.pop(case_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # working on one case -----------------------------------------------------------------------

    async def _work(self, case_id: UUID) -> None:
        refusals = 0
        failures = 0
        while True:
            case = await self._recorder.case(case_id)
            if case is not None:  # this task's own context: no reset needed
                current_case.set(_case_fields(case))
            if case is None or case.status == CLOSED:
                if case is not None:
                    self._forget(case)
                return
            if case.status == ACKNOWLEDGED:
                return  # a person has it; failures still attach to it
            try:
                if case.status == ESCALATED:
                    if not await self._renotify_when_due(case):
                        return
                else:
                    await self._step(case)
            except RcaCaseRefused as refused:
                refusals += 1
                log.warning("rca case %s: %s", case_id, refused)
                if refusals >= MAX_REFUSALS:
                    log.error("rca case %s: left to a person after %d refusals", case_id, refusals)
                    return
                continue
            except EventCenterError as error:  # the store refused a step: wait, retry
                failures += 1
                delay = backoff_delay(
                    failures,
                    self.settings.escalation_retry,
                    self.settings.escalation_retry_max,
                    0.5 + self._rng.random() / 2,
                )
                log.error("rca case %s: %s; retrying in %.1fs", case_id, error, delay)
                await self._clock.sleep(delay)
                continue
            refusals = failures = 0

    async def _step(self, case: RcaCase) -> None:
        """One step of an open case: judge a pending attempt, close a healed case, try the
        next strategy, wait for a cool-down, or escalate."""
        if case.status == HEALED:
            await self._close_healed(case)
            return
        if case.status == HEALING:
            pending = case.pending_attempt
            assert pending is not None
            await self._judge(case, pending, action="", resumed=True)
            return
        options = self._options(case)
        stats = await self._recorder.stats(case.category)
        recommended = (case.analysis or {}).get("strategies", ())
        now = self._wall()
        decision = choose(
            [option for option, _ in options],
            stats.tally() if stats is not None else {},
            now=now,
            rng=self._rng,
            recommended=recommended,
            epsilon=self.settings.epsilon,
        )
        if isinstance(decision, Choice):
            strategy = dict((o.name, s) for o, s in options)[decision.strategy]
            await self._attempt(case, strategy, decision)
        elif isinstance(decision, Wait):
            await self._wait_or_recover(case, dict((o.name, s) for o, s in options), decision)
        else:
            await self._escalate(case, decision)

    def _options(self, case: RcaCase) -> list[tuple[Option, HealingStrategy]]:
        found = []
        summary: CaseSummary | None = None
        for strategy in self.strategies.for_tenant(case.tenant):
            if case.category not in strategy.categories:
                continue
            applies = getattr(strategy, "applies_to", None)  # optional: see HealingStrategy
            if applies is not None:
                summary = summary or case.summary()
                if not applies(summary):
                    continue
            key = (case.tenant, case.source, strategy.name)
            times = (case.last_applied(strategy.name), self._last_applied.get(key))
            known = [t for t in times if t is not None]
            option = Option(
                strategy.name,
                strategy.max_attempts,
                strategy.cooldown,
                tried=case.tried(strategy.name),
                last_at=max(known) if known else None,
            )
            found.append((option, strategy))
        return found

    async def _attempt(self, case: RcaCase, strategy: HealingStrategy, choice: Choice) -> None:
        number = len(case.attempts) + 1
        at = self._wall()

        def attempt(found: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, RcaCase]:
            current = _existing(found, case.id)
            current.attempt(strategy.name, number, at=at, reason=choice.reason)
            return current, current

        recorded: RcaCase = await self._recorder.change(case.id, attempt)
        self._last_applied[(case.tenant, case.source, strategy.name)] = at
        self.stats.attempts += 1
        log.warning(
            "rca case %s: attempt #%d: %s (%s)", case.id, number, strategy.name, choice.reason
        )
        pending = recorded.pending_attempt
        assert pending is not None
        async with self._healing:
            try:
                action = await strategy.apply(recorded.summary())
            except Exception as error:  # the strategy's own failure is its verdict
                await self._verdict(
                    recorded, number, False, "", f"apply raised {type(error).__name__}: {error}"
                )
                return
            await self._judge(recorded, pending, action=action, resumed=False)

    async def _judge(
        self, case: RcaCase, attempt: dict[str, Any], *, action: str, resumed: bool
    ) -> None:
        """Re-check ``attempt`` and record the verdict."""
        name = str(attempt["strategy"])
        strategy = self.strategies.get(name)
        if strategy is None:
            await self._verdict(
                case, attempt["n"], False, action, f"strategy {name} is not registered any more"
            )
            return
        verified, detail = await self._verify(strategy, case.summary())
        if resumed:
            detail = f"re-checked after a restart: {detail}"
        await self._verdict(case, attempt["n"], verified, action, detail)

    async def _verify(self, strategy: HealingStrategy, summary: CaseSummary) -> tuple[bool, str]:
        timeout = self.settings.verify_timeout
        try:
            passed = await within(self._clock, timeout, strategy.verify(summary))
        except TimeoutError:
            return False, f"the re-check did not pass within {timeout:g}s"
        except Exception as error:  # a re-check that raises did not pass
            return False, f"the re-check raised {type(error).__name__}: {error}"
        if passed:
            return True, "the re-check passed"
        return False, "the re-check found the problem still there"

    async def _verdict(
        self, case: RcaCase, number: int, verified: bool, action: str, detail: str
    ) -> None:
        """Record the verdict and count it in the healing stats (and close a healed case), in
        one write: counted once, however often the step is recorded."""
        at = self._wall()
        strategy = str(case.attempts[number - 1]["strategy"])

        def judge(found: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, bool]:
            current = _existing(found, case.id)
            new = current.verdict(number, verified, at=at, action=action, detail=detail)
            if new:
                stats(current.category).count(strategy, verified, case_id=str(current.id), at=at)
            if verified:
                current.close(f"healed by {strategy}", at=at, outcome="healed")
            return current, new

        await self._recorder.change(case.id, judge)
        if verified:
            self.stats.verified += 1
            self.stats.case(case.category, "healed")
            self._forget(case)
            log.warning("rca case %s healed by %s: %s", case.id, strategy, detail)
        else:
            self.stats.failed += 1
            log.warning("rca case %s: %s did not heal it: %s", case.id, strategy, detail)

    async def _wait_or_recover(
        self, case: RcaCase, strategies: dict[str, HealingStrategy], wait: Wait
    ) -> None:
        """Every strategy left is cooling down: meanwhile the last one tried re-checks (in a
        case that tried none yet, the last one applied to its source: a second case of a cause
        opened during the first one's cool-downs), at most every ``verify_timeout``; if the
        problem went away on its own the case closes as ``recovered`` (no strategy is
        credited), else the cool-down ends and the next choice is made."""
        tried = case.attempts[-1]["strategy"] if case.attempts else self._last_on(case)
        strategy = strategies.get(tried) if tried is not None else None
        while True:
            left = wait.until - self._wall()
            if left <= 0:
                return
            if strategy is None:
                await self._clock.sleep(left)
                return
            started = self._wall()
            passed, _ = await self._verify(strategy, case.summary())
            if passed:
                await self._close_recovered(case, tried or "?")
                return
            spent = self._wall() - started
            pause = min(self.settings.verify_timeout, wait.until - self._wall()) - spent
            if pause > 0:
                await self._clock.sleep(pause)

    def _last_on(self, case: RcaCase) -> str | None:
        """The strategy this runner applied last to the case's tenant and source, if any."""
        applied = [
            (at, name)
            for (tenant, source, name), at in self._last_applied.items()
            if (tenant, source) == (case.tenant, case.source)
        ]
        return max(applied)[1] if applied else None

    async def _close_recovered(self, case: RcaCase, strategy: str) -> None:
        at = self._wall()
        reason = f"recovered while strategies cooled down (the re-check of {strategy} passed)"

        def close(found: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, None]:
            current = _existing(found, case.id)
            current.close(reason, at=at, outcome="recovered")
            return current, None

        await self._recorder.change(case.id, close)
        self._forget(case)
        self.stats.case(case.category, "recovered")
        log.warning("rca case %s (%s) closed: %s", case.id, case.name, reason)

    async def _close_healed(self, case: RcaCase) -> None:
        at = self._wall()
        last = case.attempts[-1]["strategy"] if case.attempts else "?"

        def close(found: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, None]:
            current = _existing(found, case.id)
            current.close(f"healed by {last}", at=at, outcome="healed")
            return current, None

        await self._recorder.change(case.id, close)
        self._forget(case)
        self.stats.case(case.category, "healed")

    async def _escalate(self, case: RcaCase, exhausted: Exhausted) -> None:
        reason = exhausted.reason
        if case.category == "unknown":
            reason = f"no rule recognised the failure; {reason}"
        sink = await self._notify(case.summary(reason=reason, notification=1))
        at = self._wall()

        def escalate(found: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, bool]:
            current = _existing(found, case.id)
            return current, current.escalate(sink, at=at, reason=reason)

        if await self._recorder.change(case.id, escalate):
            self.stats.escalated += 1
            self.stats.case(case.category, "escalated")
            log.error("rca case %s (%s) escalated to %s: %s", case.id, case.name, sink, reason)

    async def _notify(self, summary: CaseSummary) -> str:
        """Hand the case to the escalator until a sink takes it (back-off between tries: a
        sink that is down must not lose the case, nor be hammered)."""
        failures = 0
        while True:
            try:
                return await self._escalator.escalate(summary)
            except Exception as error:  # no sink took it: the case waits and tries again
                failures += 1
                delay = backoff_delay(
                    failures,
                    self.settings.escalation_retry,
                    self.settings.escalation_retry_max,
                    0.5 + self._rng.random() / 2,
                )
                log.error(
                    "rca case %s: no sink took notification #%d (%r); retrying in %.1fs",
                    summary.case_id,
                    summary.notification,
                    error,
                    delay,
                )
                await self._clock.sleep(delay)

    async def _renotify_when_due(self, case: RcaCase) -> bool:
        """Wait until the escalated case is due for renotification and renotify it (if still
        unanswered then). False when it never is again (no policy, or its reminders spent)."""
        policy = self.settings.renotify
        sent = len(case.notifications)
        due = None if policy is None else policy.due_at(sent, case.notified_at or self._wall())
        if policy is None or due is None:
            return False
        after = policy.wait_before(sent)
        wait = due - self._wall()
        if wait > 0:
            await self._clock.sleep(wait)
            return True  # look at the case again: a person may have answered meanwhile
        number = sent + 1
        reason = f"not acknowledged {after:g}s after notification #{sent}"
        sink = await self._notify(case.summary(reason=reason, notification=number))
        at = self._wall()

        def renotify(found: RcaCase | None, stats: StatsFor) -> tuple[RcaCase | None, bool]:
            current = _existing(found, case.id)
            return current, current.renotify(sink, number, at=at)

        if await self._recorder.change(case.id, renotify):
            self.stats.renotified += 1
            log.error("rca case %s renotified (#%d) through %s", case.id, number, sink)
        return True


def _existing(case: RcaCase | None, case_id: UUID) -> RcaCase:
    if case is None:
        raise RcaCaseNotFound(f"no rca case {case_id}")
    return case
