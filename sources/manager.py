"""The hysteresis manager: runs every registered data source and switches each one's mode.

One :class:`SourceRunner` per source holds everything about it (spec, policy, mode machine,
engines, health); sources share nothing mutable, so one tenant's failing or flooding source
cannot hold up another's decisions.

How a source runs:

- its push path's event engine runs whenever it has one, in every mode: in ``hybrid`` it is
  the path being watched, in ``polling_only`` it is the probe whose own successes can bring
  the source back (polling successes never count for push);
- the polling engine runs in ``hybrid`` and ``polling_only``; entering either starts it and
  polls at once, so the gap after a push outage is short;
- the reconciler runs every ``reconciliation_interval`` when a listing is given, and at once
  when the push path's position was lost (a re-list fills the gap).

Each engine outcome goes, in order, through one decider task per source: it updates the
health figures, records the outcome for the what-if (``sources simulate``) and feeds the
hysteresis policy (:mod:`eventcenter.domain.hysteresis`). Decisions are recorded in the source's
log (``ModeSwitched`` before the new mode is started); entering a mode goes through
``transition``; a mode that cannot start (its first poll fails) is rolled back to the previous
one and ``SwitchRolledBack`` says why. Admission failures (the center's store) are never held
against a path.

An operator may pause a source (:meth:`SourceManager.pause`): ``Paused`` is recorded in its log
first, then its engines stop (the push path is closed, polling and reconciliation end), so
nothing is admitted after the call returns; outcomes already queued are still decided (a switch
they make is recorded, and entered on resume). Positions need no care: they are committed with
each admission and messages are acknowledged only after it, so what was read and not admitted
comes again, and admission drops repeats. :meth:`SourceManager.resume` records ``Resumed`` and
starts the engines again in the recorded mode from the stored positions. A paused source is
``stop`` then ``start`` in the recorded outcomes (a replay charges no silence for the pause),
refuses the healing controls, and stays paused when its center starts again.

Time: ``clock`` paces the engines (tests pass a fake one); ``wall`` stamps decisions and
outcomes, which outlive the process (epoch seconds by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eventcenter.domain.errors import EventCenterError, SourceModeRefused
from eventcenter.domain.hysteresis import (
    Decisions,
    Hysteresis,
    HysteresisDecision,
    Outcome,
    Switch,
)
from eventcenter.domain.ports import SourceRecorder
from eventcenter.domain.reconcile import ReconcileReport
from eventcenter.domain.source_control import SourceControl
from eventcenter.domain.source_health import HealthTally, SourceHealth
from eventcenter.domain.source_log import SourceLog
from eventcenter.domain.source_modes import (
    EVENT_ONLY,
    HYBRID,
    POLLING_ONLY,
    SourceModeMachine,
)
from eventcenter.domain.source_pause import PauseRequest, PauseResult, PauseState
from eventcenter.domain.sources import Clock, Delivered, ItemSink, Received, SourceFailure
from eventcenter.sources.clock import SystemClock
from eventcenter.sources.event_engine import EventEngine
from eventcenter.sources.lifecycle import source_context
from eventcenter.sources.outcomes import PathOutcome
from eventcenter.sources.polling_engine import PollingEngine
from eventcenter.sources.reconciler import Reconciler
from eventcenter.sources.source import DataSource

log = logging.getLogger("eventcenter.sources")

POLLING_MODES = (HYBRID, POLLING_ONLY)
RECENT_SHOWN = 20


class SourceAlreadyRegistered(EventCenterError, ValueError):
    """Raised when a source of that tenant and name is registered already."""


class SourceNotFound(EventCenterError, LookupError):
    """Raised when no source of that tenant and name is registered."""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """What ``sources list|show`` prints about one running source."""

    tenant: str
    name: str
    mode: str
    failure_threshold: int
    success_threshold: int
    health: SourceHealth
    recent: tuple[dict[str, Any], ...]
    paths: tuple[str, ...]
    polling_interval: float | None
    last_reconcile: ReconcileReport | None
    paused: PauseState | None = None  # the pause in effect; ``mode`` is the one it resumes in

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.name}"


class _MeasuredSink:
    """The center's sink for one source: notes the lag of each newly admitted item."""

    def __init__(self, sink: ItemSink, runner: SourceRunner) -> None:
        self._sink = sink
        self._runner = runner

    async def admit(
        self,
        tenant: str,
        source: str,
        path: str,
        received: Sequence[Received],
        position: str | None,
        *,
        correction: str | None = None,
    ) -> list[str | None]:
        ids = await self._sink.admit(
            tenant, source, path, received, position, correction=correction
        )
        now = self._runner.wall()
        for message, event_id in zip(received, ids, strict=True):
            item = message.item
            if event_id is not None and item is not None and item.occurred_at is not None:
                self._runner.lags.setdefault(path, []).append(max(0.0, now - item.occurred_at))
        return ids

    async def position(self, tenant: str, source: str, path: str) -> str | None:
        return await self._sink.position(tenant, source, path)

    async def delivered(self, tenant: str, source: str) -> dict[str, Delivered]:
        return await self._sink.delivered(tenant, source)


class SourceRunner:
    """One source at run time: see the module docstring."""

    def __init__(
        self,
        spec: DataSource,
        sink: ItemSink,
        recorder: SourceRecorder,
        clock: Clock,
        wall: Callable[[], float],
        rng: random.Random,
        on_failure: Callable[[SourceFailure], None] | None = None,
    ) -> None:
        self.spec = spec
        self.wall = wall
        self._on_failure = on_failure
        self._recorder = recorder
        self._clock = clock
        self._rng = rng
        self._sink = _MeasuredSink(sink, self)
        self.lags: dict[str, list[float]] = {}
        self.tally = HealthTally(wall())
        self.recent: list[dict[str, Any]] = []
        self.last_reconcile: ReconcileReport | None = None
        self.policy: Hysteresis | None = None
        self.machine: SourceModeMachine | None = None
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._first_poll: asyncio.Future[PathOutcome] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._outcomes: list[tuple[Any, ...]] = []
        self._lock = asyncio.Lock()  # start, stop, pause and resume, one at a time
        self._active = False  # between start and stop (paused or not)
        self._pause: PauseState | None = None
        self.push = self._event_engine() if spec.events is not None else None
        self.polling = self._polling_engine() if spec.poll is not None else None
        self.reconciler = self._reconciler() if spec.reconcile is not None else None

    # building the engines ----------------------------------------------------------------------

    def _event_engine(self) -> EventEngine:
        spec = self.spec
        assert spec.events is not None
        return EventEngine(
            spec.tenant,
            spec.name,
            spec.events,
            self._sink,
            self._clock,
            self._on_outcome,
            on_position_lost=self._on_position_lost,
            batch=spec.batch,
            receive_timeout=min(5.0, spec.hysteresis.event_timeout),
            rng=self._rng,
        )

    def _polling_engine(self) -> PollingEngine:
        spec = self.spec
        assert spec.poll is not None
        return PollingEngine(
            spec.tenant,
            spec.name,
            spec.poll,
            self._sink,
            self._clock,
            self._on_poll_outcome,
            interval=spec.poll_every,
            min_interval=spec.poll_min,
            max_interval=spec.poll_max,
            rng=self._rng,
        )

    def _reconciler(self) -> Reconciler:
        spec = self.spec
        assert spec.reconcile is not None
        return Reconciler(
            spec.tenant,
            spec.name,
            spec.reconcile,
            self._sink,
            self._clock,
            self._inbox.put_nowait,
            on_outcome=self._inbox.put_nowait,
            rng=self._rng,
        )

    # lifecycle ---------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.machine.mode if self.machine is not None else "stopped"

    @property
    def paths(self) -> tuple[str, ...]:
        """``push``, ``poll``, ``reconcile``: the paths the source was declared with."""
        spec = self.spec
        declared = (
            ("push", spec.events is not None),
            ("poll", spec.poll is not None),
            ("reconcile", spec.reconcile is not None),
        )
        return tuple(name for name, present in declared if present)

    @property
    def paused(self) -> PauseState | None:
        """The pause in effect, as the source's log holds it (None: not paused)."""
        return self._pause

    async def start(self) -> None:
        """Resume from the source's log (or register it) and start the engines of its mode;
        a paused source only loads its state: its engines start when it is resumed."""
        async with self._lock:
            self._active = True
            await self._load_and_run()

    async def _load_and_run(self) -> None:
        spec = self.spec
        now = self.wall()

        def resume(current: SourceLog | None) -> tuple[SourceLog, Any]:
            current = self._registered(current, now)
            current.reconfigure(
                at=now,
                has_push=spec.events is not None,
                has_poll=spec.poll is not None,
                config=spec.hysteresis,
            )
            return current, (
                current.hysteresis_state(now),
                list(current.recent),
                current.pause_state,
            )

        state, recent, self._pause = await self._recorder.change(spec.tenant, spec.name, resume)
        self.recent = recent
        self.policy = Hysteresis(spec.hysteresis, state)
        self.machine = self._machine(state.mode)
        if self._pause is not None:
            held = self._pause
            log.warning(
                "source %s is paused (by %s: %s); its engines start when it is resumed",
                spec.key,
                held.by,
                held.reason,
            )
            return
        decisions = self.policy.restarted(now)
        self._record(Outcome(now, "start", mode=state.mode), 0)
        loop = asyncio.get_running_loop()
        context = source_context({"tenant": spec.tenant, "source": spec.name})
        for work, name in ((self._decide_forever, "decide"), (self._tick_forever, "silence")):
            task = loop.create_task(work(), name=f"{name} {spec.key}", context=context.copy())
            self._tasks.append(task)
        if self.push is not None:
            self.push.start()
        await self._apply(decisions)
        if self.machine.mode in POLLING_MODES and self.polling is not None:
            self._resume_polling()
        if self.reconciler is not None:
            self.reconciler.start(spec.reconcile_every)
        log.info("source %s started in %s", spec.key, self.machine.mode)

    def _registered(self, current: SourceLog | None, now: float) -> SourceLog:
        """The source's log; registered now if it has none yet."""
        if current is not None:
            return current
        spec = self.spec
        return SourceLog.register(
            spec.tenant,
            spec.name,
            at=now,
            has_push=spec.events is not None,
            has_poll=spec.poll is not None,
            config=spec.hysteresis,
        )

    def _machine(self, mode: str) -> SourceModeMachine:
        spec = self.spec
        return SourceModeMachine(
            has_push=spec.events is not None,
            has_poll=spec.poll is not None,
            initial=mode,
            name=spec.key,
        )

    def _resume_polling(self) -> None:
        """After a restart in a polling mode: the log's mode stands; polling starts and retries
        with back-off until the poll path answers (there is no earlier mode to go back to)."""
        assert self.polling is not None
        if not self.polling.running:
            self.polling.start()
            self.polling.poll_now()

    async def stop(self) -> None:
        """Stop the engines, then the decider (the outcomes queued so far are applied)."""
        async with self._lock:
            self._active = False
            running = bool(self._tasks)  # not when paused (halted then) or never started
            await self._stop_engines()
            if running and self.policy is not None:
                await self._record_stop(self.wall())
            self._flush_outcomes()

    async def _stop_engines(self) -> None:
        engines = [self.push, self.polling, self.reconciler]
        for engine in engines:
            if engine is not None:
                await engine.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _record_stop(self, now: float) -> None:
        """Silence due by now is charged before the stop, as a replay of the outcomes charges
        it, so the record and the replay stay equal. A switch it makes is recorded, not
        entered: the engines are stopped; the next start resumes in the recorded mode."""
        policy = self.policy
        assert policy is not None
        try:
            for decision in policy.silence_check(now):
                await self._log(decision)
        except EventCenterError as error:
            log.error("source %s: recording a decision failed: %s", self.spec.key, error)
        self._record(Outcome(now, "stop", mode=policy.mode), 0)

    # pause and resume ----------------------------------------------------------------------------

    async def pause(self, request: PauseRequest) -> PauseResult:
        """Record ``Paused`` in the source's log, then stop its engines (see
        :mod:`eventcenter.domain.source_pause`). Nothing is admitted after this returns; the
        positions stay where the last admission left them. A paused source: nothing recorded,
        ``changed`` False. Works before the manager starts too (the source then never starts
        its engines)."""
        spec = self.spec
        async with self._lock:
            now = self.wall()

            def pause(current: SourceLog | None) -> tuple[SourceLog, Any]:
                current = self._registered(current, now)
                changed = current.pause(at=now, reason=request.reason, by=request.by)
                return current, (changed, current.pause_state, current.mode)

            changed, self._pause, mode = await self._recorder.change(spec.tenant, spec.name, pause)
            if self._pause is not None and self._tasks:
                await self._halt()
            if changed:
                log.warning("source %s paused by %s: %s", spec.key, request.by, request.reason)
            return PauseResult(spec.tenant, spec.name, request.action, changed, self._pause, mode)

    async def _halt(self) -> None:
        """Stop the engines of a source just paused. Outcomes queued before they stopped are
        still decided (a switch is recorded, not entered: :meth:`_enter` sees the pause);
        forced moves waiting are refused."""
        await self._stop_engines()
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, _Request):
                item.done.set_exception(self._refused(item.what, "the source is paused"))
                continue
            try:
                await self._apply(self._feed(item))
            except EventCenterError as error:
                log.error("source %s: recording a decision failed: %s", self.spec.key, error)
        policy = self.policy
        if policy is not None:
            await self._record_stop(self.wall())
            self.machine = self._machine(policy.mode)  # a switch cut short left it in transition
        self._flush_outcomes()

    async def resume(self, request: PauseRequest) -> PauseResult:
        """Record ``Resumed`` and, if the manager runs, start the engines again in the recorded
        mode from their stored positions. A source that is not paused: nothing recorded,
        ``changed`` False."""
        spec = self.spec
        async with self._lock:
            now = self.wall()

            def resume(current: SourceLog | None) -> tuple[SourceLog | None, Any]:
                if current is None:  # never registered: not paused
                    return None, (False, None, self.mode)
                changed = current.resume(at=now, reason=request.reason, by=request.by)
                return current, (changed, current.pause_state, current.mode)

            changed, self._pause, mode = await self._recorder.change(spec.tenant, spec.name, resume)
            if changed:
                log.warning("source %s resumed by %s: %s", spec.key, request.by, request.reason)
                if self._active:
                    await self._load_and_run()
            return PauseResult(spec.tenant, spec.name, request.action, changed, self._pause, mode)

    # outcomes ----------------------------------------------------------------------------------

    def _on_outcome(self, outcome: PathOutcome) -> None:
        self._inbox.put_nowait(outcome)

    def _on_poll_outcome(self, outcome: PathOutcome) -> None:
        first = self._first_poll
        if first is not None and not first.done():
            first.set_result(outcome)
        self._inbox.put_nowait(outcome)

    def _on_position_lost(self) -> None:
        """The push path's position is gone: re-list and reconcile now (if there is a listing),
        and poll at once (if polling runs), so the gap is filled."""
        log.warning("source %s: push position lost; re-listing", self.spec.key)
        if self.reconciler is not None:
            task = asyncio.get_running_loop().create_task(self._reconcile_now())
            self._tasks.append(task)
        if self.polling is not None and self.polling.running:
            self.polling.poll_now()

    async def _reconcile_now(self) -> None:
        assert self.reconciler is not None
        try:
            await self.reconciler.reconcile_once()
        except EventCenterError as error:
            log.error("source %s: reconciliation failed: %s", self.spec.key, error)

    async def _tick_forever(self) -> None:
        tick = min(max(self.spec.hysteresis.event_timeout / 2, 0.05), 5.0)
        while True:
            await self._clock.sleep(tick)
            self._inbox.put_nowait("tick")

    async def _decide_forever(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                await self._apply(self._feed(item))
                if isinstance(item, _Extend):
                    await self._log_extension(item.reason)
            except EventCenterError as error:  # the store refused: the next outcome retries
                log.error("source %s: recording a decision failed: %s", self.spec.key, error)
                if isinstance(item, _Request) and not item.done.done():
                    item.done.set_exception(error)
            except ValueError as error:  # a request the source's paths do not allow
                if not isinstance(item, _Request):
                    raise
                refused = SourceModeRefused(self.spec.key, item.what, self.mode, str(error))
                item.done.set_exception(refused)
            except asyncio.CancelledError:  # stopped or paused under way: its caller is told
                if isinstance(item, _Request) and not item.done.done():
                    item.done.set_exception(
                        self._refused(item.what, "the source stopped meanwhile")
                    )
                raise
            if isinstance(item, _Forced) and not item.done.done():
                item.done.set_result(self.mode)
            elif isinstance(item, _Extend) and not item.done.done():
                item.done.set_result(self.policy.event_timeout if self.policy else 0.0)
            if self._inbox.empty():
                self._flush_outcomes()

    def _feed(self, item: _Item) -> Decisions:
        policy = self.policy
        assert policy is not None
        now = self.wall()
        if isinstance(item, str):  # a tick: silence is charged by the policy
            silences = policy.state.silences
            decisions = policy.silence_check(now)
            push = self.push
            # A path that is not connected (backing off, or failing to open) reports its own
            # errors: its silence is their consequence, not a second cause for the RCA.
            if policy.state.silences > silences and push is not None and push.connected:
                quiet = policy.state.silences * policy.event_timeout
                self._failed("push", "silence", f"no push outcome for {quiet:g}s", now)
            return decisions
        if isinstance(item, _Forced):
            decisions = policy.forced(now, item.to, item.reason)
            self._record(Outcome(now, "force", True, item.reason, item.to), 0)
            return decisions
        if isinstance(item, _Extend):
            decisions = policy.extended(now, item.reason)
            self._record(Outcome(now, "extend", True, item.reason), 0)
            return decisions
        if isinstance(item, ReconcileReport):
            self.last_reconcile = item
            self._reconciled(item)
            return policy.silence_check(now)
        if item.path == "reconcile":  # no evidence about push; a failure goes to the watcher
            if not item.ok:
                self._failed("reconcile", str(item.kind or "storage"), item.detail, now)
            return policy.silence_check(now)
        if item.ok:
            lags = tuple(self.lags.pop(item.path, ()))
            self.tally.succeeded(item.path, now, item.items, lags)
            if item.dead_lettered:  # the path worked; what it brought was not all items
                detail = (
                    f"{item.dead_lettered} of {item.items} message(s) were no items:"
                    " dead-lettered with their reasons"
                )
                self._failed(item.path, "bad_data", detail, now)
        elif item.kind is None:  # the center's store failed: not the path's fault
            self._failed(item.path, "storage", item.detail, now)
            return policy.silence_check(now)
        else:
            self.tally.failed(item.path, now)
            self._failed(item.path, str(item.kind), item.detail, now)
        reason = "" if item.ok else item.detail  # a SourceError's text starts with its kind
        self._record(Outcome(now, item.path, item.ok, reason), item.items)
        if item.path == "poll":
            return policy.observe(Outcome(now, "poll", item.ok, reason))
        return policy.push_succeeded(now) if item.ok else policy.push_failed(now, reason)

    def _record(self, outcome: Outcome, items: int) -> None:
        self._outcomes.append((*outcome.row(), items))
        if len(self._outcomes) >= 100:
            self._flush_outcomes()

    def _flush_outcomes(self) -> None:
        rows, self._outcomes = self._outcomes, []
        self._recorder.outcomes(self.spec.tenant, self.spec.name, rows)

    # decisions ---------------------------------------------------------------------------------

    async def _apply(self, decisions: Decisions) -> None:
        """Record the decisions in order; enter each switch's mode right after recording it
        (one rung at a time, as the mode machine requires). A switch rolled back voids the
        later switches of this batch (the policy was told where the source landed); the
        threshold changes that came with them are still recorded."""
        rolled_back = False
        for decision in decisions:
            if isinstance(decision, Switch):
                if rolled_back:
                    continue
                await self._log(decision)
                rolled_back = not await self._enter(decision)
            else:
                await self._log(decision)

    async def _on_log(self, command: Callable[[SourceLog], None]) -> None:
        """Run ``command`` on the source's log (registered at start) and save it."""

        def apply(current: SourceLog | None) -> tuple[SourceLog, None]:
            assert current is not None, "the source is registered when it starts"
            command(current)
            return current, None

        await self._recorder.change(self.spec.tenant, self.spec.name, apply)

    async def _log_extension(self, reason: str) -> None:
        """Record the extension the policy now holds, so that a restart resumes with it."""
        assert self.policy is not None
        state = self.policy.state
        at, factor, until = state.clock, state.timeout_factor, state.extended_until
        if until is None:
            return
        await self._on_log(
            lambda source_log: source_log.extend_timeout(
                at=at, factor=factor, until=until, reason=reason
            )
        )

    async def _log(self, decision: HysteresisDecision) -> None:
        spec = self.spec
        await self._on_log(lambda source_log: source_log.record(decision))
        if isinstance(decision, Switch):
            entry = {
                "at": decision.at,
                "previous": decision.previous,
                "to": decision.to,
                "reason": decision.reason,
            }
            self.recent = [*self.recent[-(RECENT_SHOWN - 1) :], entry]
            log.warning(
                "source %s: %s -> %s (%s)",
                spec.key,
                decision.previous,
                decision.to,
                decision.reason,
            )

    async def _enter(self, switch: Switch) -> bool:
        """Start the engines of ``switch.to`` through ``transition``; roll back if it fails.
        True if the source is now in ``switch.to``."""
        machine = self.machine
        assert machine is not None
        if machine.mode == switch.to:
            return True
        if self._pause is not None:  # decided while pausing: recorded; the engines start on resume
            return True
        machine.begin(switch.to)
        problem = None
        if switch.to in POLLING_MODES:
            problem = await self._start_polling()
        elif self.polling is not None:
            await self.polling.stop()
        if problem is None:
            machine.complete()
            return True
        landed = machine.roll_back(previous_works=True)
        if landed not in POLLING_MODES and self.polling is not None:
            await self.polling.stop()
        await self._rolled_back(self.wall(), switch.to, landed, problem)
        return False

    async def _start_polling(self) -> str | None:
        """Start polling and wait for its first poll; None if it worked, else why not."""
        polling = self.polling
        if polling is None:
            return "the source has no poll path"
        if polling.running:
            return None
        loop = asyncio.get_running_loop()
        self._first_poll = first = loop.create_future()
        polling.start()
        polling.poll_now()
        deadline = loop.create_task(self._clock.sleep(self.spec.hysteresis.event_timeout))
        try:
            await asyncio.wait({first, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            deadline.cancel()
            self._first_poll = None
        if not first.done():
            first.cancel()
            await polling.stop()
            return "the first poll did not answer within event_timeout"
        outcome = first.result()
        if outcome.ok or outcome.kind is None:  # a store failure is not the poll path's
            return None
        await polling.stop()
        return f"the first poll failed: {outcome.kind}: {outcome.detail}"

    async def _rolled_back(self, now: float, attempted: str, landed: str, reason: str) -> None:
        policy = self.policy
        assert policy is not None
        decisions = policy.rolled_back(now, landed, reason)
        self._record(Outcome(now, "rollback", False, reason, landed), 0)
        self._failed(attempted, "rollback", f"could not enter {attempted}: {reason}", now)
        spec = self.spec
        await self._on_log(
            lambda source_log: source_log.roll_back(
                at=now, attempted=attempted, landed=landed, reason=reason
            )
        )
        log.error(
            "source %s: could not enter %s (%s); back in %s", spec.key, attempted, reason, landed
        )
        for decision in decisions:
            await self._log(decision)

    def _reconciled(self, report: ReconcileReport) -> None:
        at = self.wall()
        task = asyncio.get_running_loop().create_task(
            self._on_log(
                lambda source_log: source_log.reconciled(
                    at=at, missing=report.missing, changed=report.changed, deleted=report.deleted
                )
            )
        )
        task.add_done_callback(_log_failure)

    # failures and controls (for the RCA runner and healing strategies) -------------------------

    def _failed(self, path: str, kind: str, detail: str, now: float) -> None:
        if self._on_failure is None:
            return
        spec = self.spec
        failure = SourceFailure(spec.tenant, spec.name, path, kind, detail, now, self.mode)
        try:
            self._on_failure(failure)
        except Exception:  # a watcher's bug must not stop the source's decisions
            log.exception("source %s: the failure watcher raised", spec.key)

    async def force_mode(self, to: str, reason: str) -> str:
        """Move the source down to ``to`` (``hybrid`` or ``polling_only``), recorded as switches
        with ``reason``, in turn with the other decisions; returns the mode it is in after.
        Push successes bring it back as after any failure. Raises :class:`SourceModeRefused`
        when the source's paths do not allow ``to``."""
        self._require_started()
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Forced(to, reason, done))
        return await done

    async def restart_push(self, reason: str, *, longer_timeout: bool = False) -> float:
        """Close the push path and open it again from the stored position (the back-off of
        its previous failures starts over); with ``longer_timeout``, silence is then measured
        with a longer event timeout (:meth:`Hysteresis.extended`), recorded in turn with the
        other decisions. Returns the event timeout in effect."""
        self._require_started()
        push = self.push
        if push is None:
            raise self._refused("restart push", "the source has no push path")
        if longer_timeout:
            done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self._inbox.put_nowait(_Extend(reason, done))
            await done
        log.warning("source %s: restarting the push path (%s)", self.spec.key, reason)
        await push.stop()
        if self._pause is None:  # paused meanwhile: it stays stopped
            push.start()
        policy = self.policy
        return policy.event_timeout if policy is not None else self.spec.hysteresis.event_timeout

    async def reconcile_now(self) -> ReconcileReport:
        """Run one reconciliation now (the listing against what was delivered) and return its
        report. Raises the listing's :class:`SourceError` or :class:`AdmissionFailed`."""
        self._require_started()
        if self.reconciler is None:
            raise self._refused("reconcile", "the source has no listing to reconcile with")
        return await self.reconciler.reconcile_once()

    def set_load_factor(self, factor: float) -> None:
        """Scale the polling interval (the tuning knob): 2.0 polls half as often."""
        if self.polling is None:
            raise self._refused("set load factor", "the source has no poll path")
        self.polling.set_load_factor(factor)

    @property
    def load_factor(self) -> float:
        return self.polling.load_factor if self.polling is not None else 1.0

    def slow_down(self, by: float, cap: float, relax_after: float) -> float:
        """Poll ``by`` times slower until it wears off (see
        :meth:`~eventcenter.sources.polling_engine.PollingEngine.slow_down`); the load factor
        now."""
        if self.polling is None:
            raise self._refused("slow down polling", "the source has no poll path")
        return self.polling.slow_down(by, cap, relax_after)

    def poll_now(self) -> None:
        """Poll at once if polling runs (nothing otherwise)."""
        if self.polling is not None and self.polling.running:
            self.polling.poll_now()

    def push_delivered_since(self, since: float) -> bool:
        """Whether the push path delivered (a batch admitted) at or after ``since`` (epoch
        seconds) and has not failed since: the re-check after healing a push path."""
        return self.path_succeeded_since("push", since)

    def path_succeeded_since(self, path: str, since: float) -> bool:
        """Whether ``path`` (``push`` or ``poll``) worked at or after ``since`` (epoch seconds)
        and has not failed since (a poll that answered counts, even with nothing new)."""
        last = self.tally.last_success.get(path)
        return last is not None and last >= since and self.tally.consecutive.get(path, 0) == 0

    def _require_started(self) -> None:
        if self._pause is not None:
            raise self._refused("control", "the source is paused; resume it first")
        if self.machine is None or not self._tasks:
            raise self._refused("control", "the source is not running")

    def _refused(self, trigger: str, reason: str) -> SourceModeRefused:
        return SourceModeRefused(self.spec.key, trigger, self.mode, reason)

    # reading -----------------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        spec = self.spec
        policy = self.policy
        mode = self.mode
        failure, success = (
            (policy.failure_threshold, policy.success_threshold)
            if policy is not None
            else (spec.failure_threshold, spec.success_threshold)
        )
        polling = self.polling
        paused = self._pause
        health = self.tally.health(
            now=self.wall() if paused is None else paused.at,  # a paused source's, at its pause
            mode=mode if mode in (EVENT_ONLY, HYBRID, POLLING_ONLY) else HYBRID,
            has_push=spec.events is not None,
            failure_threshold=failure,
            event_timeout=spec.hysteresis.event_timeout,
            polling_interval=polling.current_interval if polling is not None else spec.poll_every,
        )
        return SourceStatus(
            tenant=spec.tenant,
            name=spec.name,
            mode=mode,
            failure_threshold=failure,
            success_threshold=success,
            health=health,
            recent=tuple(self.recent),
            paths=self.paths,
            polling_interval=polling.current_interval if polling is not None else None,
            last_reconcile=self.last_reconcile,
            paused=paused,
        )


@dataclass(frozen=True, slots=True)
class _Forced:
    """A forced move waiting in a runner's inbox; ``done`` gets the mode after it."""

    to: str
    reason: str
    done: asyncio.Future[str]

    @property
    def what(self) -> str:
        return f"force {self.to}"


@dataclass(frozen=True, slots=True)
class _Extend:
    """A longer event timeout waiting in a runner's inbox; ``done`` gets the timeout after it."""

    reason: str
    done: asyncio.Future[float]
    what = "extend the event timeout"


_Request = _Forced | _Extend
_Item = PathOutcome | ReconcileReport | str | _Request


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error("recording a source decision failed: %s", error)


class SourceManager:
    """Every data source of the center: ``register`` them, ``start``/``stop`` them together."""

    def __init__(
        self,
        sink: ItemSink,
        recorder: SourceRecorder,
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_failure: Callable[[SourceFailure], None] | None = None,
    ) -> None:
        self._sink = sink
        self.on_failure = on_failure
        self._recorder = recorder
        self._clock: Clock = clock or SystemClock()
        self._wall = wall
        self._rng = rng or random.Random()
        self._runners: dict[tuple[str, str], SourceRunner] = {}
        self._running = False

    def register(self, spec: DataSource) -> SourceRunner:
        """Add a source; it starts with :meth:`start` (or at once via :meth:`add` when running)."""
        key = (spec.tenant, spec.name)
        if key in self._runners:
            raise SourceAlreadyRegistered(
                f"source '{spec.name}' of tenant '{spec.tenant}' is already registered"
            )
        runner = SourceRunner(
            spec,
            self._sink,
            self._recorder,
            self._clock,
            self._wall,
            self._rng,
            self._report_failure,
        )
        self._runners[key] = runner
        return runner

    async def add(self, spec: DataSource) -> SourceRunner:
        """Register a source and, if the manager runs, start it now."""
        runner = self.register(spec)
        if self._running:
            await runner.start()
        return runner

    async def start(self) -> None:
        """Start every registered source (a no-op while running)."""
        if self._running:
            return
        self._running = True
        for runner in list(self._runners.values()):
            await runner.start()

    async def stop(self) -> None:
        """Stop every source: engines first, then their deciders (a no-op when stopped)."""
        if not self._running:
            return
        self._running = False
        for runner in list(self._runners.values()):
            await runner.stop()

    def _report_failure(self, failure: SourceFailure) -> None:
        if self.on_failure is not None:  # set after construction by whoever wires the RCA
            self.on_failure(failure)

    def runners(self) -> list[SourceRunner]:
        return list(self._runners.values())

    @property
    def running(self) -> bool:
        return self._running

    def __len__(self) -> int:
        return len(self._runners)

    def runner(self, tenant: str, name: str) -> SourceRunner:
        try:
            return self._runners[(tenant, name)]
        except KeyError:
            raise SourceNotFound(f"no source '{name}' of tenant '{tenant}' is registered") from None

    async def pause(self, tenant: str, name: str, *, reason: str, by: str) -> PauseResult:
        """Pause one source: ``Paused`` is recorded in its log, then its engines stop (push,
        polling, reconciliation); its positions stay durable, so :meth:`resume` reads on from
        them. Pausing a paused source records nothing (``changed`` False). Raises
        :class:`SourceNotFound`, or ``InvalidPauseRequest`` (no reason, no ``by``)."""
        request = PauseRequest.pause(by, reason)
        return await self.runner(tenant, name).pause(request)

    async def resume(self, tenant: str, name: str, *, reason: str = "", by: str) -> PauseResult:
        """Resume a paused source: ``Resumed`` is recorded and, while the manager runs, its
        engines start again in the recorded mode from their stored positions. Resuming a
        source that is not paused records nothing (``changed`` False)."""
        request = PauseRequest.resume(by, reason)
        return await self.runner(tenant, name).resume(request)

    def control(self, tenant: str, source: str) -> SourceControl:
        """The healing controls of one source (see :class:`SourceControl`)."""
        return self.runner(tenant, source)

    def statuses(self) -> list[SourceStatus]:
        return [runner.status() for runner in self._runners.values()]
