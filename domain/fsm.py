"""The processor state machine: Stable, Adjusting, LoadTesting, declared as a table.

The machine is pure and synchronous: :meth:`ProcessorStateMachine.fire` checks the trigger's
source state and guards and switches state in one step, with no await in between, so two
asyncio tasks can never both start a load test. The caller records the returned
:class:`Transition` as an event and calls :meth:`rollback` if that recording fails; the caller
also makes sure no other trigger fires before the recording ends (handlers/state.py holds a lock
for that), so the transition to roll back is always the latest one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from transitions import Machine, MachineError

from eventcenter.domain.decisions import Transition
from eventcenter.domain.errors import TransitionRefused

STABLE = "stable"
ADJUSTING = "adjusting"
LOAD_TESTING = "load_testing"

STATES = [STABLE, ADJUSTING, LOAD_TESTING]

TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "begin_adjustment", "source": STABLE, "dest": ADJUSTING},
    {
        "trigger": "begin_load_test",
        "source": [STABLE, ADJUSTING],
        "dest": LOAD_TESTING,
        "conditions": "load_test_cooldown_elapsed",
    },
    {
        "trigger": "finish_load_test",
        "source": LOAD_TESTING,
        "dest": ADJUSTING,
        "after": "note_load_test_finished",
    },
    {"trigger": "settle", "source": ADJUSTING, "dest": STABLE},
    {
        "trigger": "abort",
        "source": [ADJUSTING, LOAD_TESTING],
        "dest": STABLE,
        "after": "note_load_test_finished",
    },
]

TRIGGERS = tuple(dict.fromkeys(t["trigger"] for t in TRANSITIONS))


class _Before(NamedTuple):
    """Everything :meth:`ProcessorStateMachine.fire` changes, as it was before ``transition``."""

    transition: Transition
    state: str
    holder: str | None
    last_load_test_end: float | None


class ProcessorStateMachine:
    """State of the processor with its transition table. ``fsm_state`` holds the state name.

    ``load_test_cooldown`` seconds must pass between the end of one load test and the start of
    the next; time is passed in (``now``), never read from a clock here.
    """

    fsm_state: str

    def __init__(self, initial: str = STABLE, load_test_cooldown: float = 0.0) -> None:
        if initial not in STATES:
            raise ValueError(f"unknown state {initial!r}; states are {', '.join(STATES)}")
        self.load_test_cooldown = load_test_cooldown
        self.last_load_test_end: float | None = None
        self.holder: str | None = None  # correlation id of the work that entered this state
        self._before_latest: _Before | None = None
        self._machine = Machine(
            model=self,
            states=STATES,
            transitions=TRANSITIONS,
            initial=initial,
            model_attribute="fsm_state",
            auto_transitions=False,
            send_event=True,
        )

    @property
    def state(self) -> str:
        return self.fsm_state

    def allowed_triggers(self) -> list[str]:
        """Triggers whose source matches the current state (guards not evaluated)."""
        return [str(t) for t in self._machine.get_triggers(self.fsm_state)]

    def fire(self, trigger: str, *, now: float, reason: str, correlation_id: str) -> Transition:
        """Run ``trigger`` or raise :class:`TransitionRefused` saying why it cannot run now."""
        source = self.fsm_state
        holder, last_end = self.holder, self.last_load_test_end
        if trigger not in TRIGGERS:
            raise TransitionRefused(
                trigger, source, f"unknown trigger; known: {', '.join(TRIGGERS)}"
            )
        try:
            moved = self._machine.events[trigger].trigger(self, now=now)
        except MachineError:
            raise TransitionRefused(trigger, source, self._why_not(trigger)) from None
        if not moved:
            ended = now if self.last_load_test_end is None else self.last_load_test_end
            remaining = self.load_test_cooldown - (now - ended)
            raise TransitionRefused(
                trigger, source, f"load-test cool-down: {remaining:.1f}s left before the next one"
            )
        dest = self.fsm_state
        self.holder = None if dest == STABLE else correlation_id
        transition = Transition(trigger, source, dest, reason, correlation_id)
        self._before_latest = _Before(transition, source, holder, last_end)
        return transition

    def rollback(self, transition: Transition) -> None:
        """Undo ``transition`` (its recording failed) exactly: state, holder and cool-down clock.

        Only the latest transition can be undone, once: undoing an older one would have to
        guess what the later ones changed. Anything else raises ValueError (a caller's bug).
        """
        before = self._before_latest
        if before is None or before.transition is not transition:
            raise ValueError(
                f"cannot roll back {transition.trigger!r} ({transition.source} ->"
                f" {transition.dest}): only the latest transition can be rolled back, once"
            )
        self._machine.set_state(before.state, model=self)
        self.holder = before.holder
        self.last_load_test_end = before.last_load_test_end
        self._before_latest = None

    def _why_not(self, trigger: str) -> str:
        if self.fsm_state == LOAD_TESTING and trigger == "begin_load_test":
            return f"a load test is already running (correlation id {self.holder})"
        allowed = ", ".join(self.allowed_triggers()) or "none"
        return f"not allowed from '{self.fsm_state}' (allowed here: {allowed})"

    # guards and callbacks named in TRANSITIONS -------------------------------------------------

    def load_test_cooldown_elapsed(self, event: Any) -> bool:
        if self.last_load_test_end is None:
            return True
        now = float(event.kwargs["now"])
        return now - self.last_load_test_end >= self.load_test_cooldown

    def note_load_test_finished(self, event: Any) -> None:
        if event.transition.source == LOAD_TESTING:
            self.last_load_test_end = float(event.kwargs["now"])
