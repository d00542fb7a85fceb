"""The processor state machine seen from asyncio: atomic triggers, durable transitions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from eventcenter.domain.decisions import Transition
from eventcenter.domain.errors import RecordingFailed
from eventcenter.domain.fsm import LOAD_TESTING, ProcessorStateMachine
from eventcenter.domain.ports import DecisionLog

#: States that only a running task can hold, so a restart always interrupts them. ADJUSTING is
#: not one: the latency handler enters it and returns, and a later ``system.idle`` settles it,
#: so a center restarted while adjusting is still adjusting.
HELD_BY_RUNNING_WORK = frozenset({LOAD_TESTING})


class StateGuard:
    """Fires triggers on the processor state machine and records each transition.

    Firing a trigger and recording its transition is one atomic step per machine: a lock is
    held from the switch until the recording has ended, so no other trigger sees a state that
    may still be rolled back, and the machine always equals the recorded log once the step is
    over. When two tasks ask for the same exclusive trigger at once, exactly one gets the
    transition; the other waits only for that recording (never for the work that follows) and
    then gets :class:`~eventcenter.domain.errors.TransitionRefused` naming the holder, or the
    transition itself if the first recording failed. A recording that fails rolls the machine
    back exactly (state, holder, cool-down clock) and its error reaches the caller.

    Cancelling a caller does not cancel its recording: the store may save it regardless, so
    the guard waits for the outcome, keeps or rolls back the transition accordingly and then
    lets the cancellation through.
    """

    def __init__(
        self, machine: ProcessorStateMachine, log: DecisionLog, clock: Callable[[], float]
    ) -> None:
        self._machine = machine
        self._log = log
        self._clock = clock
        self._lock = asyncio.Lock()

    def restore(self, state: str) -> None:
        """Rebuild the machine in ``state`` (what the log last recorded), before any trigger."""
        self._machine = ProcessorStateMachine(state, self._machine.load_test_cooldown)

    @property
    def state(self) -> str:
        """The current state, including a transition whose recording is still in progress."""
        return self._machine.state

    @property
    def holder(self) -> str | None:
        """Correlation id of the work that moved the processor into its current state."""
        return self._machine.holder

    def allowed_triggers(self) -> list[str]:
        return self._machine.allowed_triggers()

    async def fire(self, trigger: str, *, reason: str, correlation_id: str) -> Transition:
        """Run ``trigger`` now and return once its transition is recorded."""
        transition, cancelled = await self._fire_and_record(trigger, reason, correlation_id)
        if cancelled is not None:
            raise cancelled
        return transition

    async def recover(
        self, *, correlation_id: str, reason: str = "interrupted by restart"
    ) -> Transition | None:
        """Abort a state held by work that did not survive a restart; None if there is none.

        Call it once when the processor starts, before any handler runs. A machine rebuilt in
        LOAD_TESTING names a load test that no process is running any more: it is aborted
        (recorded with ``reason``, which also starts the load-test cool-down). STABLE and
        ADJUSTING are resting states and stay as they are.
        """
        if self.state not in HELD_BY_RUNNING_WORK:
            return None
        return await self.fire("abort", reason=reason, correlation_id=correlation_id)

    @asynccontextmanager
    async def exclusive(
        self, begin: str, end: str, *, reason: str, correlation_id: str
    ) -> AsyncIterator[Transition]:
        """Hold the state entered by ``begin`` for the block; ``end`` on success, abort on error.

        ``async with ctx.state.exclusive("begin_load_test", "finish_load_test", ...)`` is how a
        handler runs work that must never run twice at once. The lock of :meth:`fire` is held
        only while ``begin``, ``end`` or ``abort`` is fired and recorded, not for the block: the
        state itself keeps other callers out. If ``end`` cannot be recorded, ``abort`` is tried
        so the state is not left held by work that is over; the error is raised either way.
        """
        entered, cancelled = await self._fire_and_record(begin, reason, correlation_id)
        try:
            if cancelled is not None:  # entered and recorded, but the caller is going away
                raise cancelled
            yield entered
        except BaseException as error:
            await self.fire(
                "abort", reason=f"{begin} failed: {error!r}", correlation_id=correlation_id
            )
            raise
        try:
            await self.fire(end, reason=f"{begin} done", correlation_id=correlation_id)
        except BaseException as error:
            if (self.state, self.holder) == (entered.dest, correlation_id):  # ``end`` not kept
                await self.fire(
                    "abort", reason=f"{end} failed: {error!r}", correlation_id=correlation_id
                )
            raise

    async def _fire_and_record(
        self, trigger: str, reason: str, correlation_id: str
    ) -> tuple[Transition, asyncio.CancelledError | None]:
        """Fire and record under the lock; return the transition and the caller's cancellation.

        Raises TransitionRefused (nothing changed) or the recording's error (rolled back). A
        cancellation that arrives while the recording runs is returned rather than raised when
        the recording succeeded, so that the caller can act on the kept transition first.
        """
        async with self._lock:
            transition = self._machine.fire(
                trigger, now=self._clock(), reason=reason, correlation_id=correlation_id
            )
            try:
                recording = asyncio.ensure_future(self._log.record_transition(transition))
            except BaseException:
                self._machine.rollback(transition)
                raise
            cancelled: asyncio.CancelledError | None = None
            while not recording.done():
                try:
                    await asyncio.wait((recording,))  # unlike await, leaves ``recording`` alone
                except asyncio.CancelledError as error:
                    cancelled = error
            if recording.cancelled() or recording.exception() is not None:
                self._machine.rollback(transition)
                if cancelled is not None:
                    raise cancelled
                if recording.cancelled():
                    raise RecordingFailed(
                        f"recording of '{trigger}' ({transition.source} -> {transition.dest})"
                        " was cancelled by the decision log; the transition was rolled back"
                    )
                recording.result()  # raises the recording's error
            return transition, cancelled
