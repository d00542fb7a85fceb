"""The source mode state machine: which paths of a data source run, declared as a table.

Modes (lowercase strings, like the processor FSM's states):

- ``event_only``: only the push path runs; the normal mode of a source that has one.
- ``hybrid``: the push path stays subscribed and polling runs beside it. Entered when push
  starts failing, so nothing waits on a broken push; left towards push only after push proved
  itself, or towards polling only when push keeps failing.
- ``polling_only``: polling delivers; the push path is only probed (its successes are what can
  bring the source back). A source without a push path is here from the start, for good.
- ``transition``: between two modes, while the engines of the target are started. Every move
  goes through it, so a crash or a failed start is visible as a mode, never a half-switch.

The ladder (the moves the hysteresis policy makes, one rung at a time)::

    event_only --enter_hybrid--> hybrid --enter_polling_only--> polling_only
    event_only <--enter_event_only-- hybrid <--enter_hybrid-- polling_only

From ``transition``, ``complete`` lands in the target; ``roll_back`` (the target could not
start) returns to the previous mode, or, when the caller says that one does not work either,
to the safest other working mode (``polling_only`` first: it needs the fewest moving parts).

A source with one path never moves: without a push path it stays ``polling_only``; without a
poll path it stays ``event_only`` even when push fails: it keeps retrying with back-off and its
health says it is unhealthy, since there is nothing to fall back to.

The machine lives in a small inner model (never bound to an aggregate: it would not survive
snapshotting); :class:`SourceModeMachine` wraps it so its method names (``complete``,
``roll_back``) cannot shadow the triggers of the same names.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine, MachineError

from eventcenter.domain.errors import SourceModeRefused

EVENT_ONLY = "event_only"
HYBRID = "hybrid"
POLLING_ONLY = "polling_only"
TRANSITION = "transition"

#: The modes a source can run in (every state but ``transition``).
WORKING_MODES = (EVENT_ONLY, HYBRID, POLLING_ONLY)
STATES = [*WORKING_MODES, TRANSITION]

#: Where a roll back goes when the previous mode does not work either: safest first.
SAFETY_ORDER = (POLLING_ONLY, HYBRID, EVENT_ONLY)

TRANSITIONS: list[dict[str, Any]] = [
    # leave push step by step: polling joins the push path, then replaces it
    {
        "trigger": "enter_hybrid",
        "source": [EVENT_ONLY, POLLING_ONLY],
        "dest": TRANSITION,
        "conditions": "has_both_paths",
        "after": "aim",
    },
    {
        "trigger": "enter_polling_only",
        "source": HYBRID,
        "dest": TRANSITION,
        "conditions": "has_poll_path",
        "after": "aim",
    },
    {
        "trigger": "enter_event_only",
        "source": HYBRID,
        "dest": TRANSITION,
        "conditions": "has_push_path",
        "after": "aim",
    },
    # the target started: land in it
    {"trigger": "complete", "source": TRANSITION, "dest": EVENT_ONLY, "conditions": "aims_at_eo"},
    {"trigger": "complete", "source": TRANSITION, "dest": HYBRID, "conditions": "aims_at_hy"},
    {"trigger": "complete", "source": TRANSITION, "dest": POLLING_ONLY, "conditions": "aims_at_po"},
    # the target could not start: back to the previous (or the safest working) mode
    {"trigger": "roll_back", "source": TRANSITION, "dest": EVENT_ONLY, "conditions": "falls_to_eo"},
    {"trigger": "roll_back", "source": TRANSITION, "dest": HYBRID, "conditions": "falls_to_hy"},
    {
        "trigger": "roll_back",
        "source": TRANSITION,
        "dest": POLLING_ONLY,
        "conditions": "falls_to_po",
    },
]

TRIGGERS = tuple(dict.fromkeys(t["trigger"] for t in TRANSITIONS))


def supported_modes(has_push: bool, has_poll: bool) -> tuple[str, ...]:
    """The working modes a source with these paths can run in."""
    modes = []
    if has_push:
        modes.append(EVENT_ONLY)
    if has_push and has_poll:
        modes.append(HYBRID)
    if has_poll:
        modes.append(POLLING_ONLY)
    return tuple(modes)


def initial_mode(has_push: bool, has_poll: bool) -> str:
    """Push first when there is a push path; otherwise polling."""
    if not (has_push or has_poll):
        raise ValueError("a source needs a push path, a poll path, or both")
    return EVENT_ONLY if has_push else POLLING_ONLY


class _Model:
    """What the machine needs to know: the source's paths, the target and the way back."""

    fsm_state: str

    def __init__(self, has_push: bool, has_poll: bool) -> None:
        self.has_push = has_push
        self.has_poll = has_poll
        self.target = ""  # the mode being entered (while in transition)
        self.previous = ""  # the mode left to enter it
        self.fallback = ""  # where roll_back lands, set just before firing it

    # conditions named in TRANSITIONS -----------------------------------------------------------

    def has_both_paths(self, _: Any) -> bool:
        return self.has_push and self.has_poll

    def has_poll_path(self, _: Any) -> bool:
        return self.has_poll

    def has_push_path(self, _: Any) -> bool:
        return self.has_push

    def aims_at_eo(self, _: Any) -> bool:
        return self.target == EVENT_ONLY

    def aims_at_hy(self, _: Any) -> bool:
        return self.target == HYBRID

    def aims_at_po(self, _: Any) -> bool:
        return self.target == POLLING_ONLY

    def falls_to_eo(self, _: Any) -> bool:
        return self.fallback == EVENT_ONLY

    def falls_to_hy(self, _: Any) -> bool:
        return self.fallback == HYBRID

    def falls_to_po(self, _: Any) -> bool:
        return self.fallback == POLLING_ONLY

    def aim(self, event: Any) -> None:
        self.previous = str(event.transition.source)
        self.target = str(event.event.name).removeprefix("enter_")


class SourceModeMachine:
    """The mode of one source. ``begin(to)``, then ``complete()`` or ``roll_back()``.

    ``name`` (``tenant/source``) only makes refusals say which source they are about.
    ``initial`` is the mode to resume in (from the source's log); None starts push first.
    """

    def __init__(
        self, *, has_push: bool, has_poll: bool, initial: str | None = None, name: str = ""
    ) -> None:
        self.name = name
        start = initial_mode(has_push, has_poll) if initial is None else initial
        if start not in supported_modes(has_push, has_poll):
            raise SourceModeRefused(
                name,
                "start",
                start,
                f"{_paths(has_push, has_poll)}: it can run in"
                f" {', '.join(supported_modes(has_push, has_poll))} only",
            )
        self._model = _Model(has_push, has_poll)
        self._machine = Machine(
            model=self._model,
            states=STATES,
            transitions=TRANSITIONS,
            initial=start,
            model_attribute="fsm_state",
            auto_transitions=False,
            send_event=True,
        )

    @property
    def mode(self) -> str:
        return self._model.fsm_state

    @property
    def target(self) -> str | None:
        """The mode being entered, while in ``transition``."""
        return self._model.target if self.mode == TRANSITION else None

    @property
    def previous(self) -> str | None:
        """The mode left to enter :attr:`target`, while in ``transition``."""
        return self._model.previous if self.mode == TRANSITION else None

    def begin(self, to: str) -> None:
        """Leave the current mode for ``transition`` towards ``to`` (one rung of the ladder)."""
        if to not in WORKING_MODES:
            raise SourceModeRefused(
                self.name,
                f"enter_{to}",
                self.mode,
                f"unknown mode; modes are {', '.join(WORKING_MODES)}",
            )
        self._fire(f"enter_{to}")

    def complete(self) -> str:
        """The target started: land in it. Returns the mode now current."""
        self._fire("complete")
        return self.mode

    def roll_back(self, *, previous_works: bool = True) -> str:
        """The target could not start: go back. Returns the mode landed in.

        Back to the previous mode, unless ``previous_works`` is False (its engines could not be
        restarted either): then the safest other working mode (see :data:`SAFETY_ORDER`).
        """
        model = self._model
        model.fallback = model.previous
        if self.mode == TRANSITION and not previous_works:
            others = [
                mode
                for mode in SAFETY_ORDER
                if mode in supported_modes(model.has_push, model.has_poll)
                and mode not in (model.target, model.previous)
            ]
            model.fallback = others[0] if others else model.previous
        self._fire("roll_back")
        return self.mode

    def _fire(self, trigger: str) -> None:
        model, mode = self._model, self.mode
        if trigger not in TRIGGERS:
            raise SourceModeRefused(
                self.name, trigger, mode, f"unknown trigger; known: {', '.join(TRIGGERS)}"
            )
        try:
            moved = self._machine.events[trigger].trigger(model)
        except MachineError:
            raise SourceModeRefused(self.name, trigger, mode, self._why_not()) from None
        if not moved:  # a condition refused: the source lacks the path the target needs
            raise SourceModeRefused(
                self.name,
                trigger,
                mode,
                f"{_paths(model.has_push, model.has_poll)}: it cannot run in"
                f" {trigger.removeprefix('enter_')}",
            )

    def _why_not(self) -> str:
        if self.mode == TRANSITION:
            return f"entering {self._model.target}: complete or roll_back first"
        allowed = [str(t) for t in self._machine.get_triggers(self.mode)]
        return f"not a move from {self.mode} (allowed here: {', '.join(allowed) or 'none'})"


def _paths(has_push: bool, has_poll: bool) -> str:
    if has_push and has_poll:
        return "the source has a push and a poll path"
    return "the source has no poll path" if has_push else "the source has no push path"
