"""The processor state machine seen from asyncio: atomic triggers, durable transitions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from eventcenter.domain.decisions import Transition
from eventcenter.domain.fsm import LOAD_TESTING, ProcessorStateMachine
from eventcenter.domain.ports import DecisionLog


class StateGuard:
    """Fires triggers on the processor state machine and records each transition.

    The check and the switch happen in one synchronous step (no await in between), so when two
    tasks ask for the same exclusive trigger at once, exactly one gets the transition and the
    other gets :class:`~eventcenter.domain.errors.TransitionRefused` with the reason. The
    transition is then made durable; if that fails, the machine is rolled back and the error
    (RecordingFailed) reaches the caller.
    """

    def __init__(
        self, machine: ProcessorStateMachine, log: DecisionLog, clock: Callable[[], float]
    ) -> None:
        self._machine = machine
        self._log = log
        self._clock = clock

    @property
    def state(self) -> str:
        return self._machine.state

    @property
    def holder(self) -> str | None:
        """Correlation id of the work that moved the processor into its current state."""
        return self._machine.holder

    def allowed_triggers(self) -> list[str]:
        return self._machine.allowed_triggers()

    def restore(self, state: str) -> None:
        """Rebuild the machine in ``state`` (what the log last recorded), before any trigger."""
        self._machine = ProcessorStateMachine(state, self._machine.load_test_cooldown)

    async def recover_after_restart(self) -> Transition | None:
        """End a state held by work that cannot have survived a restart (a load test), with a
        recorded reason; returns that transition, or None when there was nothing to end."""
        if self._machine.state != LOAD_TESTING:
            return None
        return await self.fire("abort", reason="interrupted by restart", correlation_id="restart")

    async def fire(self, trigger: str, *, reason: str, correlation_id: str) -> Transition:
        """Run ``trigger`` now and return once its transition is recorded."""
        transition = self._machine.fire(
            trigger, now=self._clock(), reason=reason, correlation_id=correlation_id
        )
        try:
            await self._log.record_transition(transition)
        except BaseException:
            self._machine.rollback(transition)
            raise
        return transition

    @asynccontextmanager
    async def exclusive(
        self, begin: str, end: str, *, reason: str, correlation_id: str
    ) -> AsyncIterator[Transition]:
        """Hold the state entered by ``begin`` for the block; ``end`` on success, abort on error.

        ``async with ctx.state.exclusive("begin_load_test", "finish_load_test", ...)`` is how a
        handler runs work that must never run twice at once.
        """
        entered = await self.fire(begin, reason=reason, correlation_id=correlation_id)
        try:
            yield entered
        except BaseException as error:
            await self.fire(
                "abort", reason=f"{begin} failed: {error!r}", correlation_id=correlation_id
            )
            raise
        await self.fire(end, reason=f"{begin} done", correlation_id=correlation_id)
